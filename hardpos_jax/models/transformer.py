"""Pre-LayerNorm transformer encoder shared by the image and text towers.

Params of an `Encoder` of depth N (W width, H heads, M mlp width):

  block_{i}/ln_1/{scale [W], bias [W]}
  block_{i}/attn/{query,key,value}/{kernel [W, H, W/H], bias [H, W/H]}
  block_{i}/attn/out/{kernel [H, W/H, W], bias [W]}
  block_{i}/ln_2/{scale [W], bias [W]}
  block_{i}/mlp/fc/{kernel [W, M], bias [M]}
  block_{i}/mlp/proj/{kernel [M, W], bias [W]}
"""

import functools
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


def fused_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                    *, causal: bool) -> jax.Array:
  """Flax's `attention_fn` as `jax.nn.dot_product_attention`.

  The causal mask is passed as `is_causal`, not as an [S, S] mask, so that
  on GPU cuDNN's fused (flash) kernel runs it without reading a mask. cuDNN
  is asked for where it can apply (a GPU, bfloat16 or float16); where it
  turns the shape down at trace time, and everywhere else, XLA runs
  softmax(QK^T / sqrt(d)) V with float32 logits and softmax.

  Args:
    query, key, value: [N, S, H, W/H].
    causal: whether position i attends only to positions <= i.

  Returns:
    [N, S, H, W/H].
  """
  if (jax.default_backend() == "gpu"
      and query.dtype in (jnp.bfloat16, jnp.float16)):
    try:
      return jax.nn.dot_product_attention(query, key, value, is_causal=causal,
                                          implementation="cudnn")
    except (NotImplementedError, ValueError, RuntimeError):
      pass  # A head size or length cuDNN does not take: XLA's below.
  return jax.nn.dot_product_attention(query, key, value, is_causal=causal,
                                      implementation="xla")


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
  causal: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = layer_norm("ln_1", self.dtype)(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=self.num_heads, dtype=self.dtype,
        attention_fn=functools.partial(fused_attention, causal=self.causal),
        name="attn")(y, y)
    x = x + y
    y = layer_norm("ln_2", self.dtype)(x)
    y = MlpBlock(self.mlp_dim, self.act, self.dtype, name="mlp")(y)
    return x + y


# `remat` names a `jax.checkpoint_policies` policy: what a rematerialised
# block keeps for the backward pass (everything else is recomputed).
REMAT_POLICIES = ("nothing_saveable", "dots_saveable",
                  "dots_with_no_batch_dims_saveable")


class Encoder(nn.Module):
  """A stack of `depth` EncoderBlocks.

  `remat` (False, True = "nothing_saveable", or one of REMAT_POLICIES)
  trades compute for activation memory.
  """

  depth: int
  num_heads: int
  mlp_dim: int
  act: str = "quick_gelu"
  dtype: Any = jnp.float32
  remat: bool | str = False
  causal: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Runs the blocks.

    Args:
      x: [N, S, W] token sequence.

    Returns:
      [N, S, W].
    """
    block_cls = EncoderBlock
    if self.remat:
      policy = "nothing_saveable" if self.remat is True else self.remat
      if policy not in REMAT_POLICIES:
        raise ValueError(f"Unknown remat policy {policy!r}; choose from "
                         f"{REMAT_POLICIES}")
      block_cls = nn.remat(
          EncoderBlock, policy=getattr(jax.checkpoint_policies, policy))
    for i in range(self.depth):
      x = block_cls(self.num_heads, self.mlp_dim, self.act, self.dtype,
                    self.causal, name=f"block_{i}")(x)
    return x
