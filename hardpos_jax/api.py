"""`hardpos_jax.load(path)`: one model object for every checkpoint kind.

    model = hardpos_jax.load("ViT-B-32.pt")           # OpenAI / open_clip file
    model = hardpos_jax.load("clip-vit-base-patch32")  # HF CLIPModel directory
    model = hardpos_jax.load("workdir")                # orbax params/workdir
    model = hardpos_jax.load("workdir", step="best")   # its selected step
    zimg = model.encode_image(model.preprocess(images))   # [N, E]
    ztxt = model.encode_text(["a photo of a cat"])        # [T, E]
    model.export("hf", "out_dir")
    config, params = hardpos_jax.api.load_params("workdir")  # no Model
"""

import dataclasses
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hardpos_jax import checkpoint
from hardpos_jax import convert
from hardpos_jax import tokenizer as tokenizer_lib
from hardpos_jax.data import eval_transform
from hardpos_jax.models import clip

# Rows per jitted call: bounds memory for long lists; one compile per shape.
_CHUNK = 256


def _pad_rows(x: np.ndarray, n: int) -> np.ndarray:
  return np.concatenate([x, np.zeros((n - len(x), *x.shape[1:]), x.dtype)])


@dataclasses.dataclass
class Model:
  """A CLIP with its config, params and tokenizer.

  Attributes:
    config: model config dict (`CLIP(**config)`).
    params: Flax params.
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
  """

  config: dict
  params: Any
  tokenizer: tokenizer_lib.Tokenizer

  def __post_init__(self):
    # The evaluator's towers: the same precision and text length rule.
    self._image_fn, self._text_fn = clip.towers(self.config)

  def _chunked(self, fn, x: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(x), _CHUNK):
      part = x[i:i + _CHUNK]
      # Pad the last chunk so every call has one shape (one compilation).
      rows = _CHUNK if len(x) > _CHUNK else len(part)
      out.append(np.asarray(fn(self.params, _pad_rows(part, rows)))[:len(part)])
    return np.concatenate(out) if out else np.zeros((0, self.config[
        "embed_dim"]), np.float32)

  def encode_image(self, pixels: np.ndarray) -> np.ndarray:
    """[N, S, S, 3] float32 preprocessed images -> [N, E] unit embeddings."""
    pixels = np.asarray(pixels, np.float32)
    size = self.config["image_size"]
    if pixels.ndim != 4 or pixels.shape[1:] != (size, size, 3):
      raise ValueError(f"Expected images [N, {size}, {size}, 3], got "
                       f"{pixels.shape}; use model.preprocess() first")
    return self._chunked(self._image_fn, pixels)

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """List of T strings -> [T, C] int32 ids at the model's context C."""
    return self.tokenizer(list(texts), self.config["text"]["context_length"])

  def encode_text(self, texts: Sequence[str]) -> np.ndarray:
    """List of T strings -> [T, E] unit embeddings."""
    ids = self.tokenize(texts)
    return self._chunked(self._text_fn,
                         ids[:, :clip.text_length(self.config, ids)])

  def preprocess(self, images: Sequence[np.ndarray]) -> np.ndarray:
    """uint8 [H, W, 3] images -> [N, S, S, 3] float32, OpenAI's transform."""
    size = self.config["image_size"]
    return np.stack([eval_transform.clip_eval_image(np.asarray(im), size)
                     for im in images])

  def logits(self, pixels: np.ndarray, texts: Sequence[str]) -> np.ndarray:
    """[N, T] logit_scale * cosine similarity, as CLIP's logits_per_image."""
    scale = float(jnp.exp(self.params["t"]))
    return scale * self.encode_image(pixels) @ self.encode_text(texts).T

  def export(self, fmt: str, path: str) -> None:
    """Writes the model as `hf` (directory), `open_clip` (file) or `flax`."""
    if fmt == "hf":
      convert.write_hf(path, self.config, self.params, self.tokenizer)
    elif fmt == "open_clip":
      convert.write_open_clip(path, self.config, self.params)
    elif fmt == "flax":
      checkpoint.save_params(path, self.config, self.params)
    else:
      raise ValueError(f"Unknown export format {fmt!r}; choose from "
                       "['flax', 'hf', 'open_clip']")


def _hf_vocab(path: str) -> str | None:
  if os.path.isdir(path) and all(
      os.path.isfile(os.path.join(path, f)) for f in ("vocab.json",
                                                     "merges.txt")):
    return path
  return None


def load_params(path: str, *, step: int | str | None = None,
                quick_gelu: bool = True) -> tuple[dict, Any]:
  """Reads any supported checkpoint's (model config, Flax params).

  Args:
    path: an OpenAI/open_clip weights file (.pt/.pth/.bin/.safetensors), a HF
      `CLIPModel` directory, a `flax` export or a training workdir.
    step: a training workdir's step, or "best": the step its trainer kept
      by `config.select_metric`; default: its latest complete one.
    quick_gelu: activation for OpenAI-key files (see convert.config_from_openai).

  Returns:
    (config, params): `CLIP(**config)`'s config dict and its params as device
    arrays, e.g. params["img"]["embedding"]["kernel"] is [P, P, 3, W].
  """
  if checkpoint.is_flax_checkpoint(path):
    config, params = checkpoint.restore_params(path, step)
  elif step is not None:
    raise ValueError(f"{path} is not a training workdir: it has no steps")
  else:
    config, params = convert.read_pytorch(path, quick_gelu=quick_gelu)
  return config, jax.tree_util.tree_map(jnp.asarray, params)


def load_tokenizer(path: str, config: dict,
                   vocab: str | None = None) -> tokenizer_lib.Tokenizer:
  """The tokenizer of `path`'s model, checked against its `config`.

  Args:
    path: the checkpoint, as given to `load_params`.
    config: its model config.
    vocab: BPE `.txt.gz` or a directory with vocab.json + merges.txt; default:
      a HF directory's own files, else `tokenizer.default_bpe_path()`.

  Raises:
    ValueError: the tokenizer's vocabulary is not the size of the model's
      token embedding.
  """
  vocab = vocab or _hf_vocab(path)
  tok = tokenizer_lib.Tokenizer.from_path(vocab) if vocab else (
      tokenizer_lib.Tokenizer())
  if tok.vocab_size != config["text"]["vocab_size"]:
    raise ValueError(f"Tokenizer has {tok.vocab_size} tokens but the model's "
                     f"embedding has {config['text']['vocab_size']}")
  return tok


def load(path: str, vocab: str | None = None, *,
         step: int | str | None = None, quick_gelu: bool = True) -> Model:
  """Loads any supported checkpoint as a `Model`.

  `path`, `step` and `quick_gelu` are `load_params`'s, `vocab` is
  `load_tokenizer`'s.
  """
  config, params = load_params(path, step=step, quick_gelu=quick_gelu)
  return Model(config=config, params=params,
               tokenizer=load_tokenizer(path, config, vocab))
