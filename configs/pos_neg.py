"""The paper's main model: fine-tuning with hard negatives AND hard positives.

  python -m hardpos_jax.train --config=configs/pos_neg.py \
      --config.init=ViT-B-32.pt --workdir=gs://bucket/pos_neg

arg options: `hp=both|swap|replace` (the paper's HN + swap-only /
replace-only HP rows), `hn_fraction=0.25|0.5|0.75` (its HN-fraction ablation),
`demo`, `tiny` (see configs/common.py).
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  config, options = common.base_config(arg, hp="both", hn_fraction=1.0)
  config.input.num_hard_negatives = 1
  config.input.num_hard_positives = 1
  config.input.hard_positive_kinds = options.hp
  config.input.hard_negative_fraction = options.hn_fraction
  config.loss.hp_mode = "extra_row"
  return config
