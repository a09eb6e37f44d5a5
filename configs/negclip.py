"""NegCLIP (Yuksekgonul et al., ICLR 2023) as published: hard-negative
captions AND hard-negative images, on NegCLIP's COCO TSVs.

  python -m hardpos_jax.train --config=configs/negclip.py \
      --config.init=ViT-B-32.pt --workdir=gs://bucket/negclip

NegCLIP's README trains `--model=ViT-B-32 --pretrained=openai
--batch-size=256 --epochs=5 --lr=1e-6 --warmup 50` with open_clip's AdamW
defaults (0.9, 0.98, eps 1e-6, weight decay 0.2): the base recipe of
configs/common.py. Each row brings one of its `neg_image` rows (image,
caption and one of its hard negatives), so a step sees 2B images and 4B
texts (see hardpos_jax/losses.py). An epoch is every TSV row once.

arg options: `demo`, `tiny` (a tiny model from scratch on a NegCLIP dataset
that must be built in input.data_dir; see tests/test_train.py).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config, options = common.base_config(arg)
  config.input.dataset = "coco_hard_pos_neg/negclip"
  config.input.num_hard_negatives = 1
  config.input.hard_images = True
  if options.demo:
    config.batch_size = 8 if options.tiny else 32
  return config
