"""Text transformer tower (OpenAI CLIP's text encoder).

Params (V vocabulary, C maximum context, W width, E embedding width):

  embedding/embedding [V, W]
  pos_embedding [C, W]
  encoder/...                 see models/transformer.py
  ln_final/{scale, bias} [W]
  head/kernel [W, E]          (+ bias [E] if head_bias)
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from hardpos_jax.models import transformer

POOLS = ("eot", "last", "mean")


class TextTransformer(nn.Module):
  """Causal text transformer pooled at the EOT token, as OpenAI CLIP."""

  width: int
  depth: int
  num_heads: int
  mlp_dim: int
  out_dim: int
  vocab_size: int = 49408
  context_length: int = 77
  act: str = "quick_gelu"
  pool: str = "eot"
  causal: bool = True
  head_bias: bool = False
  dtype: Any = jnp.float32
  remat: bool | str = False

  @nn.compact
  def __call__(self, text: jax.Array) -> tuple[jax.Array, dict]:
    """Embeds token ids.

    Any L <= context_length works; with a causal mask and EOT pooling the
    tokens after EOT never reach the pooled embedding, so running at a
    shorter L gives the same embedding for every caption that fits.

    Args:
      text: [T, L] int32 token ids, padded with 0, EOT the largest id.

    Returns:
      ([T, E] un-normalised embeddings, dict of named intermediates).
    """
    if self.pool not in POOLS:
      raise ValueError(f"Unknown pool type {self.pool!r}; choose from {POOLS}")
    length = text.shape[1]
    if length > self.context_length:
      raise ValueError(
          f"Text length {length} exceeds context_length {self.context_length}"
      )
    out = {}
    x = nn.Embed(
        self.vocab_size, self.width, embedding_init=nn.initializers.normal(0.02),
        dtype=self.dtype, name="embedding",
    )(text)
    pos = self.param(
        "pos_embedding", nn.initializers.normal(0.01),
        (self.context_length, self.width),
    )
    x = x + pos[:length].astype(x.dtype)
    x = transformer.Encoder(
        self.depth, self.num_heads, self.mlp_dim, self.act, self.dtype,
        self.remat, self.causal, name="encoder",
    )(x)
    x = transformer.layer_norm("ln_final", self.dtype)(x)
    out["encoded"] = x
    if self.pool == "eot":
      # OpenAI pools at argmax(ids): EOT (49407) is the largest id.
      x = x[jnp.arange(x.shape[0]), jnp.argmax(text, axis=-1)]
    elif self.pool == "last":
      x = x[:, -1]
    else:
      x = x.mean(axis=1)
    out["pre_logits"] = x
    x = nn.Dense(
        self.out_dim, use_bias=self.head_bias, dtype=self.dtype, name="head"
    )(x)
    return x, out
