"""Contrastive losses: CLIP, NegCLIP hard negatives, and hard positives.

Legend: B images, each with one caption; K hard negatives (HNs) and P hard
positives (HPs) per image; D embedding width. On one device of a sharded
batch, b = B_local rows of B = B_global.

Every term is a softmax cross-entropy of one *row*: an anchor, one target and
the row's valid competitors,

  ce = log(exp(s_target) + sum_{valid competitors} exp(s_n)) - s_target,

with s = logit_scale * cosine similarity. Masked (invalid) entries take part
in nothing, not even in a denominator. A row counts when its target is valid
and it has at least one valid competitor (a softmax over one entry is a
constant 0); each term is the sum of its counted rows' ce divided by the
number of counted rows (0 when none count, never NaN). Rows with several
targets (an image with a caption and HPs) share one set of competitors, so no
logits are built per target.

NegCLIP's hard-negative images need no term of their own: NegCLIP's train.py
(vinid/neg_clip) concatenates images [I; I_nn] and texts [T; T_nn; T-;
T-_nn], then takes image->text cross-entropy over all 4B texts and
text->image over the first 2B, which is this loss over a batch of 2B rows
(each pair and its neighbour, `input.hard_images`) with one HN per row; it
composes with the HP modes and the HN fraction like any other rows.

`clip_loss` is the single-device reference; `sharded_clip_loss` runs inside
`jax.shard_map` and returns the same value and gradients for the gathered
global batch; `make_sharded_loss` wraps it for use under `jax.jit`. The
row softmax, the owned columns and the batch-axis collectives are in
`loss_rows.py`.
"""

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from hardpos_jax import loss_rows
from hardpos_jax import sharding

HP_MODES = ("extra_row", "svlc", "replace")


@dataclasses.dataclass(frozen=True)
class LossOptions:
  """How hard positives and negatives enter the loss (see `clip_loss`); the
  one home of their defaults, which `config.loss` starts from.

  Attributes:
    hp_mode: one of HP_MODES.
    neg_w: weight of svlc's per-sample `hn_loss`.
    hp_replace_q: replace mode's probability of replacing a caption.
  """

  hp_mode: str = "extra_row"
  neg_w: float = 1.0
  hp_replace_q: float = 0.5

  def __post_init__(self):
    if self.hp_mode not in HP_MODES:
      raise ValueError(f"Unknown hp_mode {self.hp_mode!r}; choose from "
                       f"{HP_MODES}")
    if not 0.0 <= self.hp_replace_q <= 1.0:
      raise ValueError(f"hp_replace_q={self.hp_replace_q} is not in [0, 1]")

  @classmethod
  def of(cls, config: Any) -> "LossOptions":
    """The options among `config`'s keys (e.g. `config.loss`, which also
    holds the step's `max_logit_scale`)."""
    return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})


class _Batch(NamedTuple):
  """This device's rows, in float32, with masks filled in."""
  zimg: jax.Array  # [b, D]
  ztxt: jax.Array  # [b, D]
  zneg: jax.Array | None  # [b, K, D]
  neg_mask: jax.Array | None  # [b, K] bool
  zpos: jax.Array | None  # [b, P, D]
  pos_mask: jax.Array | None  # [b, P] bool
  rows: jax.Array  # [b] int32 global row indices


def _replace_captions(ztxt: jax.Array, zpos: jax.Array, pos_mask: jax.Array,
                      rows: jax.Array, q: float, rng: jax.Array
                      ) -> tuple[jax.Array, jax.Array]:
  """Replaces each caption by one of its valid HPs with probability q.

  The draw for a row depends only on (rng, its global row index), so any
  sharding of the batch makes the same choices.

  Args:
    ztxt: [b, D] captions.
    zpos: [b, P, D] hard positives.
    pos_mask: [b, P] bool.
    rows: [b] global row indices.
    q: replacement probability.
    rng: PRNG key.

  Returns:
    ([b, D] captions after replacement, [b] bool replaced).
  """

  def draw(row, mask):
    flip_key, pick_key = jax.random.split(jax.random.fold_in(rng, row))
    any_valid = jnp.any(mask)
    flip = jax.random.bernoulli(flip_key, q) & any_valid
    logits = jnp.where(mask | ~any_valid, 0.0, -jnp.inf)
    return flip, jax.random.categorical(pick_key, logits)

  replaced, pick = jax.vmap(draw)(rows, pos_mask)
  chosen = jnp.take_along_axis(zpos, pick[:, None, None], axis=1)[:, 0]
  return jnp.where(replaced[:, None], chosen, ztxt), replaced


def _margins(batch: _Batch, ax: loss_rows.Axis) -> dict[str, jax.Array]:
  """Mean cosine margins s(c) - s(c_n) and s(c_p) - s(c_n) over valid pairs."""
  s_c = jnp.einsum("bd,bd->b", batch.zimg, batch.ztxt)
  s_n = jnp.einsum("bd,bkd->bk", batch.zimg, batch.zneg)
  out = {"margin_c_cn": ax.mean(s_c[:, None] - s_n, batch.neg_mask)}
  if batch.zpos is not None:
    s_p = jnp.einsum("bd,bpd->bp", batch.zimg, batch.zpos)
    valid = batch.pos_mask[:, :, None] & batch.neg_mask[:, None, :]
    out["margin_cp_cn"] = ax.mean(s_p[:, :, None] - s_n[:, None, :], valid)
  return out


def _check(zimg, ztxt, zneg, neg_mask, zpos, pos_mask, options: LossOptions,
           rng) -> None:
  """Raises ValueError on inconsistent shapes and a missing rng."""
  if zimg.ndim != 2 or ztxt.shape != zimg.shape:
    raise ValueError(f"zimg {zimg.shape} and ztxt {ztxt.shape} must both be "
                     "[B, D]")
  for name, z, mask in (("zneg", zneg, neg_mask), ("zpos", zpos, pos_mask)):
    if z is None and mask is not None:
      raise ValueError(f"{name} is None but its mask is given")
    if z is not None and (z.ndim != 3 or z.shape[0] != zimg.shape[0]
                          or z.shape[2] != zimg.shape[1]):
      raise ValueError(f"{name} {z.shape} must be [B, M, D] for zimg "
                       f"{zimg.shape}")
    if mask is not None and mask.shape != z.shape[:2]:
      raise ValueError(f"{name} mask {mask.shape} must be {z.shape[:2]}")
  if options.hp_mode == "replace" and zpos is not None and rng is None:
    raise ValueError("hp_mode='replace' needs rng")


def _gathered(ax: loss_rows.Axis, batch: _Batch, z: jax.Array,
              mask: jax.Array, is_pos: bool) -> loss_rows.Owned:
  """`z [b, M, D]` of every device as B * M columns."""
  return loss_rows.owned(ax.gather(z), ax.gather(mask), ax.gather(batch.rows),
                         is_pos)


def _own(batch: _Batch, z: jax.Array, owner: jax.Array) -> jax.Array:
  """[N, 1, D]: the local row of `z [b, D]` owning each of N entries."""
  return jnp.take(z, owner - batch.rows[0], axis=0)[:, None]


def _clip_terms(batch: _Batch, extra_rows: bool, scale: jax.Array,
                ax: loss_rows.Axis) -> dict[str, jax.Array]:
  """CLIP / NegCLIP terms, with HPs as extra rows when `extra_rows`."""
  b = batch.zimg.shape[0]
  ones = jnp.ones((b, 1), bool)
  cols = [_gathered(ax, batch, batch.ztxt[:, None], ones, True)]
  targets, target_valid = batch.ztxt[:, None], ones
  texts = loss_rows.owned(batch.ztxt[:, None], ones, batch.rows, True)
  if batch.zneg is not None:
    cols.append(_gathered(ax, batch, batch.zneg, batch.neg_mask, False))
  if extra_rows and batch.zpos is not None:
    cols.append(_gathered(ax, batch, batch.zpos, batch.pos_mask, True))
    targets = jnp.concatenate([targets, batch.zpos], axis=1)
    target_valid = jnp.concatenate([ones, batch.pos_mask], axis=1)
    texts = loss_rows.concat(
        texts, loss_rows.owned(batch.zpos, batch.pos_mask, batch.rows, True))
  ce, counted, correct = loss_rows.contrast(
      batch.zimg, batch.rows, targets, target_valid, loss_rows.concat(*cols),
      scale)
  out = {"i2t_loss": 0.5 * ax.mean(ce, counted),
         "i2t_acc": ax.mean(correct[:, 0], counted[:, 0])}
  images = _gathered(ax, batch, batch.zimg[:, None], ones, True)
  ce, counted, _ = loss_rows.contrast(texts.z, texts.owner,
                                      _own(batch, batch.zimg, texts.owner),
                                      texts.valid[:, None], images, scale)
  out["t2i_loss"] = 0.5 * ax.mean(ce, counted)
  return out


def _svlc_terms(batch: _Batch, neg_w: float, scale: jax.Array,
                ax: loss_rows.Axis) -> dict[str, jax.Array]:
  """SVLC's added terms (Doveh et al., CVPR 2023; TSVLC's `loss.py`).

  `hp_img_loss` = 1/4 (image->HP + HP->image) and `hp_cap_loss` = 1/4
  (caption->HP + HP->caption): in-batch CLIP terms between HPs and images or
  captions (SVLC's symmetric `loss_pos`); an image's other HPs never compete
  in its rows. `hn_loss` = neg_w * mean over each image's caption and valid
  HPs of a softmax over [that positive, the image's valid HNs] (SVLC's
  `loss_neg`, extended from the caption to the HPs); positives without a valid
  HN are not counted.
  """
  b = batch.zimg.shape[0]
  ones = jnp.ones((b, 1), bool)
  out = {}
  if batch.zpos is not None:
    hp_cols = _gathered(ax, batch, batch.zpos, batch.pos_mask, True)
    hps = loss_rows.owned(batch.zpos, batch.pos_mask, batch.rows, True)
    for key, z in (("hp_img_loss", batch.zimg), ("hp_cap_loss", batch.ztxt)):
      ce, counted, _ = loss_rows.contrast(z, batch.rows, batch.zpos,
                                          batch.pos_mask, hp_cols, scale)
      to_hp = ax.mean(ce, counted)
      ce, counted, _ = loss_rows.contrast(
          hps.z, hps.owner, _own(batch, z, hps.owner), hps.valid[:, None],
          _gathered(ax, batch, z[:, None], ones, True), scale)
      out[key] = 0.25 * (to_hp + ax.mean(ce, counted))
  if batch.zneg is not None:
    positives, pos_valid = batch.ztxt[:, None], ones
    if batch.zpos is not None:
      positives = jnp.concatenate([positives, batch.zpos], axis=1)
      pos_valid = jnp.concatenate([ones, batch.pos_mask], axis=1)
    ce, counted, _ = loss_rows.softmax_ce(
        scale * jnp.einsum("bd,bqd->bq", batch.zimg, positives), pos_valid,
        scale * jnp.einsum("bd,bkd->bk", batch.zimg, batch.zneg),
        batch.neg_mask)
    out["hn_loss"] = neg_w * ax.mean(ce, counted)
  return out


def _loss(zimg, ztxt, *, logit_scale, zneg, neg_mask, zpos, pos_mask,
          options: LossOptions, rng,
          ax: loss_rows.Axis) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`clip_loss` over this device's rows; see its docstring."""
  _check(zimg, ztxt, zneg, neg_mask, zpos, pos_mask, options, rng)
  hp_mode = options.hp_mode
  # fp32: a softmax over B (1 + K + P) columns loses too much in bf16.
  f32 = lambda x: None if x is None else jnp.asarray(x, jnp.float32)
  fill = lambda z, mask: (None if z is None else jnp.ones(z.shape[:2], bool)
                          if mask is None else jnp.asarray(mask, bool))
  rows = ax.row_offset(zimg.shape[0]) + jnp.arange(zimg.shape[0])
  batch = _Batch(f32(zimg), f32(ztxt), f32(zneg), fill(zneg, neg_mask),
                 f32(zpos), fill(zpos, pos_mask), rows)
  metrics = {}
  if zneg is not None:
    metrics.update(_margins(batch, ax))
  if hp_mode == "replace" and zpos is not None:
    ztxt, replaced = _replace_captions(batch.ztxt, batch.zpos, batch.pos_mask,
                                       rows, options.hp_replace_q, rng)
    metrics["replaced_frac"] = ax.mean(replaced.astype(jnp.float32),
                                       jnp.ones_like(replaced))
    batch = batch._replace(ztxt=ztxt, zpos=None, pos_mask=None)
  scale = f32(logit_scale)
  metrics.update(_clip_terms(batch, hp_mode == "extra_row", scale, ax))
  if hp_mode == "svlc":
    metrics.update(_svlc_terms(batch, options.neg_w, scale, ax))
  loss = sum(v for k, v in metrics.items() if k.endswith("_loss"))
  return loss, metrics


def clip_loss(
    zimg: jax.Array,
    ztxt: jax.Array,
    *,
    logit_scale: jax.Array | float,
    zneg: jax.Array | None = None,
    neg_mask: jax.Array | None = None,
    zpos: jax.Array | None = None,
    pos_mask: jax.Array | None = None,
    options: LossOptions = LossOptions(),
    rng: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """CLIP loss with optional hard negatives and hard positives, one device.

  Base (CLIP; NegCLIP when `zneg` is given): `i2t_loss` = 1/2 mean over
  images of the CE of the image's caption against every other caption and
  every valid HN of every image (its own HNs included); `t2i_loss` = 1/2 mean
  over captions of the CE of its image against the other images. HNs are
  never text->image rows. With `zpos=None` this is exactly CLIP's / NegCLIP's
  symmetric loss (NegCLIP: texts = [captions; HNs] as i2t columns, t2i over
  the B captions only).

  Hard positives, by `hp_mode`:
    extra_row: each valid HP is one more i2t row of its image (target itself,
      competitors as for the caption row) and one more t2i row (target its
      image). An image's caption and HPs never compete in each other's rows;
      an HP is an ordinary competing column for every other image. Means are
      over all counted rows: i2t over B captions + valid HPs, t2i likewise.
    svlc: the base loss, HPs not as columns, plus `_svlc_terms`:
      `hp_img_loss` = 1/4 (image->HP + HP->image) and `hp_cap_loss` = 1/4
      (caption->HP + HP->caption) in-batch CLIP terms, and `hn_loss` =
      neg_w * mean CE of each image's caption and valid HPs against only that
      image's valid HNs (SVLC, Doveh et al., CVPR 2023).
    replace: each caption with a valid HP is replaced by one of them (uniform)
      with probability `hp_replace_q`, drawn from `rng` folded with the row
      index; then the base loss. HPs take no other part.

  Counting: a row enters its term's mean when its target is valid and it has
  a valid competitor; a term with no counted row is 0. Masked entries enter
  no softmax and get zero gradient; their values must be finite.

  Args:
    zimg: [B, D] image embeddings, L2-normalised.
    ztxt: [B, D] caption embeddings, L2-normalised.
    logit_scale: [] multiplier of the cosine similarities (exp(t), clamped).
    zneg: [B, K, D] hard negatives, L2-normalised, or None.
    neg_mask: [B, K] bool, True = valid; None = all valid.
    zpos: [B, P, D] hard positives, L2-normalised, or None.
    pos_mask: [B, P] bool, True = valid; None = all valid.
    options: the hard-positive mode and its weights (`LossOptions`).
    rng: PRNG key (replace only).

  Returns:
    (loss [], metrics): loss is the sum of the metrics' `*_loss` entries,
    each already weighted as above. Also `i2t_acc` (fraction of counted
    images whose caption scores strictly above every competitor), with HNs
    `margin_c_cn` = mean s(c) - s(c_n) over valid (image, HN) pairs and with
    HPs too `margin_cp_cn` = mean s(c_p) - s(c_n) over valid (HP, HN) pairs
    of the same image (cosine, no logit scale, captions before replacement),
    and in replace mode `replaced_frac`.
  """
  return _loss(zimg, ztxt, logit_scale=logit_scale, zneg=zneg,
               neg_mask=neg_mask, zpos=zpos, pos_mask=pos_mask,
               options=options, rng=rng, ax=loss_rows.Axis(None))


def sharded_clip_loss(
    zimg: jax.Array,
    ztxt: jax.Array,
    *,
    logit_scale: jax.Array | float,
    zneg: jax.Array | None = None,
    neg_mask: jax.Array | None = None,
    zpos: jax.Array | None = None,
    pos_mask: jax.Array | None = None,
    options: LossOptions = LossOptions(),
    rng: jax.Array | None = None,
    axis: str = sharding.BATCH_AXIS,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`clip_loss` of the global batch, called inside `jax.shard_map`.

  Each device holds b = B_local consecutive rows (device i holds global rows
  i*b .. i*b+b-1) of every batch argument; `logit_scale` and `rng` are
  replicated. The columns are all-gathered (tiled, with gradient), each
  device scores only its own rows against all B = B_global columns, and the
  sums and counts of every mean are psum-ed. The loss and metrics returned
  are replicated (invariant over `axis`), equal to `clip_loss` on the
  gathered batch, and so are the gradients with respect to every device's
  local inputs (under the default `check_vma=True`, which makes psum's
  transpose right). `replace` draws per global row, as `clip_loss` does.

  Memory per device, in float32 logits: b * B * (1 + K + P) for image->text
  (P only in extra_row) plus b * (1 + P) * B for text->image; svlc adds
  4 * b * P * B. The gathered embeddings take B * (1 + K + P) * D.

  Args:
    zimg, ztxt, zneg, neg_mask, zpos, pos_mask: this device's rows, shapes as
      in `clip_loss` with b for B.
    logit_scale, options, rng: as in `clip_loss`.
    axis: the mesh axis the batch is sharded over.

  Returns:
    (loss [], metrics), as in `clip_loss`.
  """
  return _loss(zimg, ztxt, logit_scale=logit_scale, zneg=zneg,
               neg_mask=neg_mask, zpos=zpos, pos_mask=pos_mask,
               options=options, rng=rng, ax=loss_rows.Axis(axis))


def make_sharded_loss(
    mesh: jax.sharding.Mesh, options: LossOptions = LossOptions(),
    axis: str = sharding.BATCH_AXIS
) -> Callable[..., tuple[jax.Array, dict[str, jax.Array]]]:
  """`sharded_clip_loss` wrapped in `jax.shard_map`, ready for `jax.jit`.

  Args:
    mesh: the device mesh; the batch is split over `axis`.
    options: the loss's fixed `LossOptions`.
    axis: mesh axis name.

  Returns:
    `loss_fn(zimg, ztxt, *, logit_scale, zneg=None, neg_mask=None, zpos=None,
    pos_mask=None, rng=None) -> (loss, metrics)` taking global arrays (B a
    multiple of the axis size), as `clip_loss` does.
  """

  def body(batch, logit_scale, rng):
    return sharded_clip_loss(**batch, logit_scale=logit_scale, rng=rng,
                             axis=axis, options=options)

  mapped = jax.shard_map(body, mesh=mesh,
                         in_specs=(PartitionSpec(axis), PartitionSpec(),
                                   PartitionSpec()),
                         out_specs=PartitionSpec())

  def loss_fn(zimg, ztxt, *, logit_scale, zneg=None, neg_mask=None,
              zpos=None, pos_mask=None, rng=None):
    if zimg.shape[0] % mesh.shape[axis]:
      raise ValueError(f"Batch {zimg.shape[0]} is not a multiple of the "
                       f"{mesh.shape[axis]} devices on axis {axis!r}")
    batch = dict(zimg=zimg, ztxt=ztxt, zneg=zneg, neg_mask=neg_mask,
                 zpos=zpos, pos_mask=pos_mask)
    return mapped(batch, jnp.asarray(logit_scale, jnp.float32), rng)

  return loss_fn
