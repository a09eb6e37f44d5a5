"""Tiny model configs and batches shared by the tests and their subprocesses,
and the fixture writers and per-item towers of the benchmark tests."""

import gzip
import json

import jax
import ml_collections
import numpy as np
from PIL import Image

from configs import common
from hardpos_jax.data import eval_transform
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


def byte_tokenizer(directory):
  """A Tokenizer of `byte_vocab`, written in `directory` (a pathlib.Path)."""
  # Imported here, so that the subprocesses that import tiny need not.
  from hardpos_jax import tokenizer  # pylint: disable=g-import-not-at-top
  return tokenizer.Tokenizer(byte_vocab(str(directory / "bytes.txt.gz")))


class Towers:
  """A tiny model (`eval_model`'s) applied to one image or one text at a
  time: the per-item loops the evaluators are checked against."""

  def __init__(self, model, tokenizer):
    config, params = model
    module = clip.CLIP(**config)
    self._size = config["image_size"]
    self._tokenizer = tokenizer
    self._image = jax.jit(
        lambda x: module.apply({"params": params}, images=x)[0])
    self._text = jax.jit(lambda t: module.apply({"params": params}, text=t)[1])

  def image(self, data):
    """[D] unit embedding of encoded image bytes, as the evaluators see
    them."""
    pixels = eval_transform.clip_eval_image(eval_transform.decode_rgb(data),
                                            self._size)
    return np.asarray(self._image(pixels[None]))[0]

  def text(self, text):
    """[D] unit embedding of a text (bytes, as TFDS gives it, or str)."""
    if isinstance(text, bytes):
      text = text.decode()
    return np.asarray(self._text(self._tokenizer([text], 77)))[0]


def write_json(path, value):
  """Writes `value` as JSON to `path` (a pathlib.Path), making its folder."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(value))


def write_image(path, seed, mode="RGB", format="JPEG"):
  """Writes a 48x40 image of random pixels ("RGB" or "RGBA") to `path`,
  making its folder."""
  path.parent.mkdir(parents=True, exist_ok=True)
  pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, len(mode)),
                                                np.uint8)
  Image.fromarray(pixels).save(path, format=format)


def build(name, manual_dir, data_dir, **kwargs):
  """Prepares the TFDS dataset `name` ("dataset/config") from `manual_dir`
  in `data_dir`; `kwargs` go to the builder (e.g. skip_bad_examples)."""
  # Imported here, so that the subprocesses that import tiny need not.
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(name, data_dir=str(data_dir), **kwargs)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder
