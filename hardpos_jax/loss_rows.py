"""The row softmax under the contrastive losses (see losses.py).

Each loss term is a set of rows: an anchor, its targets and its valid
competitors. Here are the embeddings with the image that owns them
(`Owned`), the collectives over the batch axis that make one body serve one
device and `jax.shard_map` alike (`Axis`), and one row's cross-entropy over
masked columns (`softmax_ce`, `contrast`).
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp


class Owned(NamedTuple):
  """N embeddings (texts or images), each belonging to one image."""
  z: jax.Array  # [N, D]
  owner: jax.Array  # [N] int32 global index of the owning image
  valid: jax.Array  # [N] bool
  # [N] bool: one of its owner's targets, so never a competitor for the
  # owner's rows (captions, HPs); False for HNs, which compete for everyone.
  is_pos: jax.Array


def owned(z: jax.Array, valid: jax.Array, owner: jax.Array,
          is_pos: bool) -> Owned:
  """Flattens `z [n, M, D]` and `valid [n, M]` owned row-wise by `owner [n]`."""
  n, m, d = z.shape
  return Owned(z.reshape(n * m, d), jnp.repeat(owner, m), valid.reshape(-1),
                jnp.full((n * m,), is_pos))


def concat(*parts: Owned) -> Owned:
  return jax.tree.map(lambda *x: jnp.concatenate(x), *parts)


@dataclasses.dataclass(frozen=True)
class Axis:
  """Collectives over the data axis; `name=None` is the single-device case."""
  name: str | None

  def gather(self, x: jax.Array) -> jax.Array:
    # all_gather's transpose is a reduce-scatter, so each device's rows get
    # the gradient of every device's logits that used them.
    if self.name is None:
      return x
    return jax.lax.all_gather(x, self.name, tiled=True)

  def psum(self, x: jax.Array) -> jax.Array:
    return x if self.name is None else jax.lax.psum(x, self.name)

  def row_offset(self, b: int) -> jax.Array:
    """Global index of this device's first row."""
    return 0 if self.name is None else jax.lax.axis_index(self.name) * b

  def mean(self, values: jax.Array, valid: jax.Array) -> jax.Array:
    """Mean of `values` over the global valid entries; 0 when there are none."""
    total = self.psum(jnp.sum(jnp.where(valid, values, 0.0)))
    count = self.psum(jnp.sum(valid.astype(jnp.float32)))
    return total / jnp.maximum(count, 1.0)


def masked_logsumexp(x: jax.Array,
                     mask: jax.Array) -> tuple[jax.Array, jax.Array]:
  """logsumexp and max over the last axis's masked entries.

  Args:
    x: [..., N] logits.
    mask: [..., N] bool.

  Returns:
    ([...] logsumexp, [...] max), both -inf where no entry is valid; the
    gradient is finite (zero) there.
  """
  masked = jnp.where(mask, x, -jnp.inf)
  top = jnp.max(masked, axis=-1)
  nonempty = jnp.isfinite(top)
  shift = jax.lax.stop_gradient(jnp.where(nonempty, top, 0.0))
  total = jnp.sum(jnp.exp(masked - shift[..., None]), axis=-1)
  # Double where: log(0) for empty rows would send NaN into the gradient.
  lse = jnp.log(jnp.where(nonempty, total, 1.0)) + shift
  return jnp.where(nonempty, lse, -jnp.inf), top


def softmax_ce(pos_logits: jax.Array, pos_valid: jax.Array,
               neg_logits: jax.Array, neg_valid: jax.Array
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Cross-entropy of each target against its row's shared competitors.

  The one softmax-CE used by every term. A row may hold several targets
  (an image's caption and its HPs); each is scored against the row's
  competitors alone, so the targets never compete with each other.

  Args:
    pos_logits: [R, Q] target logits.
    pos_valid: [R, Q] bool.
    neg_logits: [R, N] competitor logits.
    neg_valid: [R, N] bool.

  Returns:
    (ce [R, Q], counted [R, Q] bool, correct [R, Q] bool): the loss of each
    target, whether it enters the mean (valid target, at least one valid
    competitor), and whether the target beats every competitor (strictly).
  """
  lse_neg, max_neg = masked_logsumexp(neg_logits, neg_valid)
  has_neg = jnp.isfinite(lse_neg)[:, None]
  lse_neg = jnp.where(has_neg, lse_neg[:, None], 0.0)
  ce = jnp.logaddexp(pos_logits, lse_neg) - pos_logits
  return ce, pos_valid & has_neg, pos_logits > max_neg[:, None]


def contrast(anchor: jax.Array, anchor_owner: jax.Array, pos: jax.Array,
             pos_valid: jax.Array, cols: Owned, scale: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Anchors scored against their own targets and against all columns.

  Args:
    anchor: [R, D] local anchors (images or texts).
    anchor_owner: [R] global index of each anchor's image.
    pos: [R, Q, D] each anchor's targets.
    pos_valid: [R, Q] bool.
    cols: C global columns; a column competes for an anchor unless it is
      invalid or one of the anchor owner's targets.
    scale: [] logit scale.

  Returns:
    `softmax_ce`'s (ce, counted, correct), each [R, Q]. Memory: R x C logits.
  """
  pos_logits = scale * jnp.einsum("rd,rqd->rq", anchor, pos)
  neg_logits = scale * jnp.einsum("rd,cd->rc", anchor, cols.z)
  own = cols.is_pos[None, :] & (cols.owner[None, :] == anchor_owner[:, None])
  return softmax_ce(pos_logits, pos_valid, neg_logits,
                    cols.valid[None, :] & ~own)
