"""Tiny model configs and batches shared by the tests and their subprocesses."""

import gzip

import jax
import ml_collections
import numpy as np

from configs import common
from hardpos_jax.models import clip

VOCAB, LENGTH, IMAGE = 64, 8, 16


def model_config() -> dict:
  return clip.model_config(
      None,
      image=dict(width=32, depth=1, num_heads=2, mlp_dim=64, patch_size=8),
      text=dict(width=32, depth=1, num_heads=2, mlp_dim=64, vocab_size=VOCAB,
                context_length=LENGTH),
      embed_dim=16, image_size=IMAGE)


def train_config(hp_mode: str = "extra_row") -> ml_collections.ConfigDict:
  """The recipes' own schema (configs/common.py), with the tiny model."""
  config, _ = common.base_config(None)
  config.model = model_config()
  config.optim.lr = 1e-2
  config.optim.warmup_steps = 1
  config.loss.hp_mode = hp_mode
  return config


def batch(step: int, b: int = 8, k: int = 2, p: int = 1) -> dict:
  """A deterministic global batch of numpy arrays for `step`."""
  rng = np.random.default_rng(step)

  def ids(*shape):
    x = rng.integers(1, VOCAB - 2, (*shape, LENGTH)).astype(np.int32)
    x[..., 0] = VOCAB - 2
    x[..., LENGTH // 2] = VOCAB - 1  # EOT midway; zeros after it.
    x[..., LENGTH // 2 + 1:] = 0
    return x

  return {
      "image": rng.normal(size=(b, IMAGE, IMAGE, 3)).astype(np.float32),
      "text": ids(b),
      "hard_negatives": ids(b, k),
      "hard_negative_mask": rng.random((b, k)) < 0.7,
      "hard_positives": ids(b, p),
      "hard_positive_mask": rng.random((b, p)) < 0.7,
  }


def init_params(seed: int = 0):
  return clip.init_params(model_config(), jax.random.key(seed))


def byte_vocab(path: str) -> str:
  """Writes a BPE file with no merges (one token per character) to `path`."""
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("#version: 0.2\n")
  return path


def eval_model(vocab_size: int) -> tuple[dict, dict]:
  """(config, params) of a tiny model with OpenAI's 77-token context."""
  config = clip.model_config(
      image=dict(width=32, depth=1, num_heads=2, mlp_dim=64, patch_size=8),
      text=dict(width=32, depth=1, num_heads=2, mlp_dim=64,
                vocab_size=vocab_size),
      embed_dim=16, image_size=32)
  return config, clip.init_params(config, jax.random.key(0))


def mesh_of(n: int) -> jax.sharding.Mesh:
  """A "data" mesh over the first n devices."""
  return jax.sharding.Mesh(np.asarray(jax.devices()[:n]), ("data",))
