"""The base recipe every config file starts from, and its `arg` parser.

The paper's training code and hyper-parameters are not public: where it is
silent, the recipe follows NegCLIP (Yuksekgonul et al., ICLR 2023): OpenAI
ViT-B/32, batch 256, 5 epochs, lr 1e-6 (grid 1e-5, 5e-6, 1e-6), 50 warmup
steps then cosine, AdamW(0.9, 0.98, eps 1e-6), weight decay 0.2 on matrices.

`arg` is "name=value,flag,...": `demo` swaps in the embedded synthetic world
and a tiny model trained from scratch (CPU, minutes); `tiny` shrinks it
further for tests.
"""

import dataclasses

import ml_collections
from ml_collections import config_dict

from hardpos_jax import losses
from hardpos_jax.models import clip


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """'demo,hn_fraction=0.5' -> ConfigDict; types follow `defaults`."""
  parsed = ml_collections.ConfigDict(defaults)
  for item in filter(None, (arg or "").split(",")):
    name, _, value = item.partition("=")
    if name not in defaults:
      raise ValueError(f"Unknown config arg {name!r}; choose from "
                       f"{sorted(defaults)}")
    kind = type(defaults[name])
    if kind is bool:
      parsed[name] = value in ("", "true", "True", "1")
    else:
      parsed[name] = kind(value)
  return parsed


def base_config(
    arg: str | None, **options
) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
  """NegCLIP's recipe on COCO, no hard negatives or positives.

  Args:
    arg: the recipe's arg string.
    **options: the recipe's own arg options with their defaults (`demo` and
      `tiny` are always there).

  Returns:
    (config, parsed options).
  """
  arg = parse_arg(arg, demo=False, tiny=False, **options)
  config = ml_collections.ConfigDict()
  config.seed = 0  # model init, data order and the loss's random choices
  # Weights to start from: anything hardpos_jax.load reads (OpenAI .pt, HF
  # dir, open_clip file, Flax export). Required unless from_scratch.
  config.init = config_dict.placeholder(str)
  config.from_scratch = False  # random init instead of config.init
  config.vocab = config_dict.placeholder(str)  # BPE file; None: the default
  config.model = clip.model_config("B/32")  # must match config.init

  config.batch_size = 256  # global, over all devices of all hosts
  # Micro-batches per step, holding one's activations at a time: the same
  # update (the whole batch's negatives), for batches larger than memory.
  config.accum_steps = 1
  config.num_epochs = 5
  config.total_steps = config_dict.placeholder(int)  # None: from num_epochs

  config.input = ml_collections.ConfigDict()
  config.input.dataset = "coco_hard_pos_neg/coco"  # TFDS name/config
  # TFDS data dir; None: <workdir>/tfds, where the synthetic world is built
  # on first use (the manual datasets need theirs built beforehand).
  config.input.data_dir = config_dict.placeholder(str)
  config.input.split = "train"
  # An epoch: every (image, caption) pair once ("pairs", the paper's and
  # NegCLIP's), or every image once with a random caption ("images").
  config.input.epoch_unit = "pairs"
  config.input.image_size = 224
  config.input.text_length = 77
  config.input.num_hard_negatives = 0  # K hard negatives per image
  config.input.num_hard_positives = 0  # P hard positives per image
  config.input.hard_negative_fraction = 1.0  # examples keeping their HNs
  config.input.hard_positive_kinds = "both"  # "swap", "replace" or "both"
  # NegCLIP's hard-negative images: each pair brings a neighbour's image,
  # caption and HNs, from the dataset's neg_images or a neighbours file
  # (python -m hardpos_jax.neighbours).
  config.input.hard_images = False
  config.input.neighbours = config_dict.placeholder(str)
  config.input.crop_scale = (0.9, 1.0)  # open_clip's random resized crop
  config.input.crop_ratio = (3 / 4, 4 / 3)
  # PIL's antialiased bicubic; False is big_vision's faster resize (see
  # docs/data.md, Speed).
  config.input.antialias = True
  config.input.prefetch = 2  # host batches prepared ahead

  config.optim = ml_collections.ConfigDict()
  config.optim.lr = 1e-6
  config.optim.warmup_steps = 50
  config.optim.b1 = 0.9
  config.optim.b2 = 0.98
  config.optim.eps = 1e-6
  config.optim.weight_decay = 0.2  # matrices only (train_step.weight_decay_mask)
  config.optim.grad_clip = 1.0  # global norm
  # ((regex over "/"-joined param paths, lr multiplier), ...); the first
  # match wins and 0 freezes, e.g. (("^img/", 0.0),) locks the image tower.
  config.optim.lr_mults = ()

  # losses.LossOptions, with its defaults: hp_mode (losses.HP_MODES), neg_w
  # (svlc's per-sample HN term weight), hp_replace_q (replace's probability).
  config.loss = ml_collections.ConfigDict(
      dataclasses.asdict(losses.LossOptions()))
  config.loss.max_logit_scale = 100.0  # CLIP's clamp of exp(t)

  config.log_every = 50  # steps between metrics.jsonl / TensorBoard rows
  config.checkpoint_every = 500  # steps between saves (also at the end)
  config.keep_checkpoints = 3
  # A save whose writes are not done by then is an error, not a hang.
  config.checkpoint_timeout_secs = 1200
  # Write each step's caption ids to <workdir>/batch_ids.jsonl (resume tests).
  config.log_batch_ids = False
  config.eval_every = config_dict.placeholder(int)  # None: only at the end
  # evals registry names (or name/subset, suite); retrieval_coco_val feeds
  # the model selection below (TFDS coco_captions/2014, downloaded once).
  config.evals = "hard_positives,sugar_crepe,retrieval_coco_val"
  config.eval_batch_size = 256
  config.eval_data_dir = config_dict.placeholder(str)  # None: input.data_dir
  # Model selection: each evaluated step is offered to <workdir>/best, which
  # keeps the best by this logged evaluation result (a key of evals.scalars);
  # load it with step="best". None (or ""): no best checkpoint; unused while
  # config.evals is empty. NegCLIP and the paper choose the epoch by COCO
  # (Karpathy) *validation* retrieval, as here; never select by
  # retrieval_coco, the test split. Set eval_every to a step count per epoch
  # (2,312 at batch 256 on train2017's pairs) to choose among epochs.
  config.select_metric = (
      "retrieval_coco_val/subsets/coco_val/image_to_text/recall@1")
  config.select_mode = "max"  # "max" or "min": which select_metric is best

  if arg.demo:
    _demo(config, arg.tiny)
  return config, arg


def _demo(config: ml_collections.ConfigDict, tiny: bool) -> None:
  """The embedded default: synthetic world, tiny model, from scratch."""
  config.from_scratch = True
  width = 32 if tiny else 128
  # 48-pixel images in 16-pixel patches: one patch per cell of the world's
  # 3x3 grid, so an object is a token (and the image tower is cheap on CPU).
  config.model = clip.model_config(
      None,
      image=dict(width=width, depth=2 if tiny else 4, num_heads=2,
                 mlp_dim=2 * width, patch_size=8 if tiny else 16),
      text=dict(width=width, depth=2 if tiny else 4, num_heads=2,
                mlp_dim=2 * width, context_length=24),
      embed_dim=width, image_size=32 if tiny else 48)
  config.input.dataset = "synthetic_shapes/" + ("tiny" if tiny else "default")
  config.input.image_size = config.model.image_size
  config.input.text_length = config.model.text.context_length
  config.batch_size = 8 if tiny else 64
  config.num_epochs = 1 if tiny else 2
  config.optim.lr = 1e-3
  config.optim.warmup_steps = 2 if tiny else 50
  config.optim.weight_decay = 0.1
  config.log_every = 1 if tiny else 20
  config.checkpoint_every = 2 if tiny else 200
  benchmark = "synthetic_tiny" if tiny else "synthetic"
  # The demo also runs every other benchmark whose data it finds (`suite`).
  config.evals = benchmark if tiny else f"{benchmark},suite"
  # The synthetic benchmark's REPLACE (macro) Augmented accuracy: caption
  # and hard positive both beat the hard negative (evals/metrics.py).
  config.select_metric = f"{benchmark}/replace_macro/augmented"
  config.eval_batch_size = 64
