"""Vision transformer image tower (OpenAI CLIP's `VisionTransformer`).

Params (W width, p patch, N = (S/p)^2 patches, E embedding width):

  embedding/kernel [p, p, 3, W]      (+ bias [W] unless patch_bias=False)
  cls [W]                            class token (pool="cls")
  pos_embedding [N (+1 with cls), W]
  ln_pre/{scale, bias} [W]           (ln_pre=True)
  encoder/...                        see models/transformer.py
  ln_post/{scale, bias} [W]
  head/kernel [W, E]                 (+ bias [E] if head_bias)
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hardpos_jax.models import transformer

POOLS = ("cls", "gap")


class VisionTransformer(nn.Module):
  """ViT over [B, S, S, 3] images; OpenAI CLIP's with the defaults."""

  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  patch_size: int
  out_dim: int
  act: str = "quick_gelu"
  pool: str = "cls"
  # OpenAI: bias-free conv1, ln_pre before the blocks, bias-free proj.
  patch_bias: bool = False
  ln_pre: bool = True
  head_bias: bool = False
  dtype: Any = jnp.float32
  remat: bool | str = False

  @nn.compact
  def __call__(self, images: jax.Array) -> tuple[jax.Array, dict]:
    """Embeds images.

    Args:
      images: [B, S, S, 3] float, CLIP-normalised.

    Returns:
      ([B, E] un-normalised embeddings, dict of named intermediates).
    """
    if self.pool not in POOLS:
      raise ValueError(f"Unknown pool type {self.pool!r}; choose from {POOLS}")
    out = {}
    p = self.patch_size
    x = nn.Conv(
        self.width, (p, p), strides=(p, p), padding="VALID",
        use_bias=self.patch_bias, dtype=self.dtype, name="embedding",
    )(images.astype(self.dtype))
    b, h, w, c = x.shape
    x = x.reshape(b, h * w, c)
    if self.pool == "cls":
      # OpenAI order: class token first, then positions added to all tokens.
      cls = self.param("cls", nn.initializers.normal(c**-0.5), (c,))
      x = jnp.concatenate(
          [jnp.broadcast_to(cls.astype(x.dtype), (b, 1, c)), x], axis=1
      )
    pos = self.param(
        "pos_embedding", nn.initializers.normal(c**-0.5), (x.shape[1], c)
    )
    x = x + pos.astype(x.dtype)
    if self.ln_pre:
      x = transformer.layer_norm("ln_pre", self.dtype)(x)
    x = transformer.Encoder(
        self.depth, self.num_heads, self.mlp_dim, self.act, self.dtype,
        self.remat, name="encoder",
    )(x)
    out["encoded"] = x
    x = x[:, 0] if self.pool == "cls" else x.mean(axis=1)
    x = transformer.layer_norm("ln_post", self.dtype)(x)
    out["pre_logits"] = x
    x = nn.Dense(
        self.out_dim, use_bias=self.head_bias, dtype=self.dtype, name="head"
    )(x)
    return x, out
