"""Pre-LayerNorm transformer encoder shared by the image and text towers.

Params of an `Encoder` of depth N (W width, H heads, M mlp width):

  block_{i}/ln_1/{scale [W], bias [W]}
  block_{i}/attn/{query,key,value}/{kernel [W, H, W/H], bias [H, W/H]}
  block_{i}/attn/out/{kernel [H, W/H, W], bias [W]}
  block_{i}/ln_2/{scale [W], bias [W]}
  block_{i}/mlp/fc/{kernel [W, M], bias [M]}
  block_{i}/mlp/proj/{kernel [M, W], bias [W]}
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# OpenAI CLIP's LayerNorm eps (PyTorch default); flax's default is 1e-6.
LN_EPS = 1e-5


def quick_gelu(x: jax.Array) -> jax.Array:
  """x * sigmoid(1.702 x): the GELU approximation OpenAI CLIP was trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS = {
    "quick_gelu": quick_gelu,
    # PyTorch's nn.GELU default is the exact erf form, not the tanh one.
    "gelu": lambda x: nn.gelu(x, approximate=False),
}


def get_activation(name: str):
  if name not in ACTIVATIONS:
    raise ValueError(
        f"Unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}"
    )
  return ACTIVATIONS[name]


def layer_norm(name: str, dtype: Any) -> nn.LayerNorm:
  return nn.LayerNorm(epsilon=LN_EPS, dtype=dtype, name=name)


class MlpBlock(nn.Module):
  """Dense -> activation -> Dense."""

  mlp_dim: int
  act: str = "quick_gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    width = x.shape[-1]
    x = nn.Dense(self.mlp_dim, dtype=self.dtype, name="fc")(x)
    x = get_activation(self.act)(x)
    return nn.Dense(width, dtype=self.dtype, name="proj")(x)


class EncoderBlock(nn.Module):
  """x + attn(ln_1(x)); x + mlp(ln_2(x)), as CLIP's ResidualAttentionBlock."""

  num_heads: int
  mlp_dim: int
  act: str = "quick_gelu"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None) -> jax.Array:
    y = layer_norm("ln_1", self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype, name="attn"
    )(y, y, mask=mask)
    x = x + y
    y = layer_norm("ln_2", self.dtype)(x)
    y = MlpBlock(self.mlp_dim, self.act, self.dtype, name="mlp")(y)
    return x + y


class Encoder(nn.Module):
  """A stack of `depth` EncoderBlocks; `remat` trades compute for memory."""

  depth: int
  num_heads: int
  mlp_dim: int
  act: str = "quick_gelu"
  dtype: Any = jnp.float32
  remat: bool = False

  @nn.compact
  def __call__(
      self, x: jax.Array, mask: jax.Array | None = None
  ) -> jax.Array:
    """Runs the blocks.

    Args:
      x: [N, S, W] token sequence.
      mask: optional [N or 1, 1, S, S] boolean attention mask.

    Returns:
      [N, S, W].
    """
    block_cls = nn.remat(EncoderBlock) if self.remat else EncoderBlock
    for i in range(self.depth):
      x = block_cls(
          self.num_heads, self.mlp_dim, self.act, self.dtype, name=f"block_{i}"
      )(x, mask)
    return x
