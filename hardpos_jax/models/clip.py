"""Two-tower CLIP: image and text towers with a learned temperature.

Params:

  t []          log of the logit scale (logit_scale = exp(t), OpenAI's
                `logit_scale`, initialised to log(1 / 0.07))
  img/...       models/vit.py
  txt/...       models/text.py

A model is described by a plain dict (a ConfigDict in configs/):
`{"image": {...VisionTransformer fields}, "text": {...TextTransformer
fields}, "embed_dim": E, "dtype": ..., "remat": ...}`; `model_config(variant,
**overrides)` builds it from a variant string.
"""

from collections.abc import Callable
import copy
import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hardpos_jax import sharding
from hardpos_jax import tokenizer as tokenizer_lib
from hardpos_jax.models.text import TextTransformer
from hardpos_jax.models.vit import VisionTransformer

# Texts run at the shortest multiple of this holding every row's EOT.
TEXT_BUCKET = 8
# On a CPU the image tower runs over this many images per device at a time:
# 1.3-1.4x the rate of one call over 256 for ViT-B/32 on 2 cores (the
# activations stay in cache; benchmarks/eval_speed.py).
CPU_IMAGE_CHUNK = 32

# OpenAI CLIP architectures (open_clip's model_configs/ViT-*.json).
VARIANTS = {
    "B/32": dict(
        image=dict(width=768, depth=12, num_heads=12, mlp_dim=3072,
                   patch_size=32),
        text=dict(width=512, depth=12, num_heads=8, mlp_dim=2048),
        embed_dim=512, image_size=224,
    ),
    "B/16": dict(
        image=dict(width=768, depth=12, num_heads=12, mlp_dim=3072,
                   patch_size=16),
        text=dict(width=512, depth=12, num_heads=8, mlp_dim=2048),
        embed_dim=512, image_size=224,
    ),
    "L/14": dict(
        image=dict(width=1024, depth=24, num_heads=16, mlp_dim=4096,
                   patch_size=14),
        text=dict(width=768, depth=12, num_heads=12, mlp_dim=3072),
        embed_dim=768, image_size=224,
    ),
}

# What makes a tower numerically OpenAI's CLIP vs big_vision's defaults.
OPENAI_STYLE = dict(
    image=dict(act="quick_gelu", pool="cls", patch_bias=False, ln_pre=True,
               head_bias=False),
    text=dict(act="quick_gelu", pool="eot", causal=True, head_bias=False,
              vocab_size=49408, context_length=77),
)


def model_config(variant: str | None = None, **overrides: Any) -> dict:
  """A model description: a variant's sizes, OpenAI style, then `overrides`.

  Args:
    variant: one of VARIANTS, or None to give every size in `overrides`.
    **overrides: `image`/`text` dicts merged key by key, or top-level keys
      (`embed_dim`, `image_size`, `dtype`, `remat`).

  Returns:
    A nested dict accepted by `CLIP(**config)`.
  """
  if variant is not None and variant not in VARIANTS:
    raise ValueError(f"Unknown variant {variant!r}; choose from "
                     f"{sorted(VARIANTS)}")
  config = copy.deepcopy(OPENAI_STYLE)
  config.update(dtype="float32", remat=False)
  for key, value in {**VARIANTS.get(variant, {}), **overrides}.items():
    if key in ("image", "text"):
      config[key].update(value)
    else:
      config[key] = value
  return config


class CLIP(nn.Module):
  """Image and text towers projecting into one E-dim space."""

  image: Mapping[str, Any]
  text: Mapping[str, Any]
  embed_dim: int
  image_size: int = 224
  dtype: str = "float32"
  remat: bool | str = False
  # log(1/0.07), OpenAI CLIP's initial temperature.
  t_init: float = math.log(1 / 0.07)

  def setup(self):
    common = dict(out_dim=self.embed_dim, dtype=jnp.dtype(self.dtype),
                  remat=self.remat)
    self.img = VisionTransformer(**self.image, **common)
    self.txt = TextTransformer(**self.text, **common)
    self.t = self.param("t", nn.initializers.constant(self.t_init), ())

  def __call__(
      self, images: jax.Array | None = None, text: jax.Array | None = None
  ) -> tuple[jax.Array | None, jax.Array | None, dict]:
    """Embeds either or both modalities.

    Args:
      images: [B, S, S, 3] CLIP-normalised float images, or None.
      text: [T, L] int32 token ids, or None.

    Returns:
      (zimg [B, E] or None, ztxt [T, E] or None, out) with float32
      L2-normalised embeddings; `out` holds `logit_scale` (exp(t)) and the
      towers' intermediates under `img/` and `txt/`.
    """
    zimg = ztxt = None
    out = {"logit_scale": jnp.exp(self.t)}
    if images is not None:
      zimg, img_out = self.img(images)
      out.update({f"img/{k}": v for k, v in img_out.items()})
      zimg = l2_normalize(zimg)
    if text is not None:
      ztxt, txt_out = self.txt(text)
      out.update({f"txt/{k}": v for k, v in txt_out.items()})
      ztxt = l2_normalize(ztxt)
    return zimg, ztxt, out


def l2_normalize(x: jax.Array) -> jax.Array:
  """[N, E] -> [N, E] float32 unit rows (normalised in fp32 under bf16)."""
  x = x.astype(jnp.float32)
  return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def init_params(config: Mapping[str, Any], rng: jax.Array) -> dict:
  """Random params for `CLIP(**config)`, shapes only traced (no big compute)."""
  model = CLIP(**config)
  size = config["image_size"]
  images = jnp.zeros((1, size, size, 3), jnp.float32)
  text = jnp.zeros((1, config["text"]["context_length"]), jnp.int32)
  return jax.jit(model.init)(rng, images, text)["params"]


Tower = Callable[[Any, jax.Array], jax.Array]


def towers(config: Mapping[str, Any], precision: str = "highest",
           out_shardings: Any = None) -> tuple[Tower, Tower]:
  """The jitted image and text towers every consumer of a model uses.

  Args:
    config: the model's config dict.
    precision: `jax.default_matmul_precision` of their matmuls; "highest"
      keeps float32 models in float32 on TPU, whose default runs float32
      matmuls in one bfloat16 pass.
    On a CPU, image batches of a multiple of `CPU_IMAGE_CHUNK` per device
    run in chunks of that many (the same embeddings, faster).
    out_shardings: of the embeddings, e.g. replicated over a mesh.

  Returns:
    (image_fn, text_fn): (params, float32 [B, S, S, 3]) -> float32 [B, E]
    and (params, int32 [B, L]) -> float32 [B, E] unit embeddings; L may be
    shorter than the context (see `text_length`).
  """
  module = CLIP(**config)

  def embed_images(params, x):
    chunk = CPU_IMAGE_CHUNK * jax.device_count()
    if jax.default_backend() != "cpu" or x.shape[0] % chunk or (
        x.shape[0] == chunk):
      return module.apply({"params": params}, images=x)[0]
    parts = sharding.split_rows(x, x.shape[0] // chunk)
    return sharding.merge_rows(jax.lax.map(
        lambda part: module.apply({"params": params}, images=part)[0],
        parts))

  image = jax.jit(embed_images, out_shardings=out_shardings)
  text = jax.jit(lambda p, t: module.apply({"params": p}, text=t)[1],
                 out_shardings=out_shardings)

  def at_precision(fn: Tower) -> Tower:
    def call(params, x):
      # Set where the call is traced, so it is part of the compiled program.
      with jax.default_matmul_precision(precision):
        return fn(params, x)
    return call

  return at_precision(image), at_precision(text)


def text_bucket(config: Mapping[str, Any]) -> int | None:
  """The multiple texts may be cut to, or None where only the full context
  is exact.

  With a causal mask and EOT pooling, tokens after EOT never reach the
  output, so any L holding every row's EOT gives the same embeddings and
  gradients; rounding L up to a multiple of `TEXT_BUCKET` bounds the number
  of compiled shapes.
  """
  text = config["text"]
  return TEXT_BUCKET if text["causal"] and text["pool"] == "eot" else None


def text_length(config: Mapping[str, Any], ids: np.ndarray) -> int:
  """L to run token ids [N, C] at: exact for every row (see `text_bucket`);
  the full context C where shortening is not exact."""
  bucket = text_bucket(config)
  return tokenizer_lib.used_length(ids, bucket) if bucket else ids.shape[1]
