"""Losses against an independent float64 re-derivation, and sharded parity."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh

from hardpos_jax import losses

SCALE = 7.0
TOL = dict(rtol=1e-5, atol=1e-6)
# Jitted: op-by-op dispatch of the backward pass is many times slower.
clip_loss = jax.jit(losses.clip_loss, static_argnames=("options",))
Options = losses.LossOptions


def _unit(x):
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _batch(seed, b=6, k=2, p=2, d=5):
  """Random unit embeddings; image 1 has no valid HN and no valid HP."""
  rng = np.random.default_rng(seed)
  neg_mask = rng.random((b, k)) < 0.6
  pos_mask = rng.random((b, p)) < 0.6
  neg_mask[0], pos_mask[0] = True, True
  neg_mask[1], pos_mask[1] = False, False
  return dict(
      zimg=_unit(rng.normal(size=(b, d))).astype(np.float32),
      ztxt=_unit(rng.normal(size=(b, d))).astype(np.float32),
      zneg=_unit(rng.normal(size=(b, k, d))).astype(np.float32),
      neg_mask=neg_mask,
      zpos=_unit(rng.normal(size=(b, p, d))).astype(np.float32),
      pos_mask=pos_mask,
  )


# --- reference: one softmax row at a time, explicit loops, float64 --------


def _ce(target, competitors):
  """-log softmax of `target` among [target] + competitors; None if alone."""
  if not competitors:
    return None
  logits = np.array([target] + competitors, np.float64)
  top = logits.max()
  return float(np.log(np.exp(logits - top).sum()) + top - target)


def _mean(values):
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else 0.0


def reference(batch, mode="extra_row", scale=SCALE, neg_w=1.0):
  """Loss terms and i2t accuracy, derived row by row from the definitions."""
  zi = batch["zimg"].astype(np.float64)
  zt = batch["ztxt"].astype(np.float64)
  n = len(zi)
  s = lambda u, v: scale * float(np.dot(u, v))
  hns, hps = [], []
  if batch.get("zneg") is not None:
    hns = [(j, batch["zneg"][j, k].astype(np.float64))
           for j in range(n) for k in range(batch["zneg"].shape[1])
           if batch["neg_mask"][j, k]]
  if batch.get("zpos") is not None:
    hps = [(j, batch["zpos"][j, q].astype(np.float64))
           for j in range(n) for q in range(batch["zpos"].shape[1])
           if batch["pos_mask"][j, q]]
  extra = mode == "extra_row"

  i2t, correct = [], []
  for i in range(n):
    others = [zt[j] for j in range(n) if j != i] + [v for _, v in hns]
    if extra:
      others += [v for j, v in hps if j != i]
    competitors = [s(zi[i], v) for v in others]
    targets = [zt[i]] + ([v for j, v in hps if j == i] if extra else [])
    for t in targets:
      i2t.append(_ce(s(zi[i], t), competitors))
    correct.append(s(zi[i], zt[i]) > max(competitors))
  texts = [(j, zt[j]) for j in range(n)] + (hps if extra else [])
  t2i = [_ce(s(t, zi[j]), [s(t, zi[i]) for i in range(n) if i != j])
         for j, t in texts]
  out = {"i2t_loss": 0.5 * _mean(i2t), "t2i_loss": 0.5 * _mean(t2i),
         "i2t_acc": float(np.mean(correct))}

  if mode == "svlc":
    if hps:
      for key, anchor in (("hp_img_loss", zi), ("hp_cap_loss", zt)):
        to_hp = [_ce(s(anchor[j], v),
                     [s(anchor[j], w) for i, w in hps if i != j])
                 for j, v in hps]
        from_hp = [_ce(s(v, anchor[j]),
                       [s(v, anchor[i]) for i in range(n) if i != j])
                   for j, v in hps]
        out[key] = 0.25 * (_mean(to_hp) + _mean(from_hp))
    if hns:
      per_sample = []
      for i in range(n):
        own_negs = [s(zi[i], v) for j, v in hns if j == i]
        for t in [zt[i]] + [v for j, v in hps if j == i]:
          per_sample.append(_ce(s(zi[i], t), own_negs))
      out["hn_loss"] = neg_w * _mean(per_sample)
  return out


def _check_against(loss, metrics, expected):
  for key, value in expected.items():
    np.testing.assert_allclose(metrics[key], value, err_msg=key, **TOL)
  loss_keys = sorted(k for k in metrics if k.endswith("_loss"))
  assert loss_keys == sorted(k for k in expected if k.endswith("_loss"))
  np.testing.assert_allclose(loss, sum(metrics[k] for k in loss_keys), **TOL)


def _negclip_numpy(zimg, ztxt, zneg=None, neg_mask=None, scale=SCALE):
  """NegCLIP as written: texts = [captions; valid HNs], t2i over captions."""
  texts = ztxt if zneg is None else np.concatenate([ztxt, zneg[neg_mask]])
  lse = lambda x: np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)
  diag = np.arange(len(zimg))
  logits = scale * zimg.astype(np.float64) @ texts.T.astype(np.float64)
  i2t = np.mean(lse(logits) - logits[diag, diag])
  logits = scale * ztxt.astype(np.float64) @ zimg.T.astype(np.float64)
  t2i = np.mean(lse(logits) - logits[diag, diag])
  return 0.5 * (i2t + t2i)


# --- single device --------------------------------------------------------


@pytest.mark.parametrize("mode", ["extra_row", "svlc"])
@pytest.mark.parametrize("with_negs", [True, False])
def test_matches_reference(mode, with_negs):
  batch = _batch(0)
  if not with_negs:
    batch.update(zneg=None, neg_mask=None)
  loss, metrics = clip_loss(**batch, logit_scale=SCALE,
                            options=Options(hp_mode=mode, neg_w=0.7))
  _check_against(loss, metrics, reference(batch, mode, neg_w=0.7))


@pytest.mark.parametrize("mode", losses.HP_MODES)
@pytest.mark.parametrize("with_negs", [True, False])
def test_without_hps_is_negclip_or_clip(mode, with_negs):
  batch = _batch(1)
  batch.update(zpos=None, pos_mask=None)
  if not with_negs:
    batch.update(zneg=None, neg_mask=None)
  loss, metrics = clip_loss(**batch, logit_scale=SCALE,
                            options=Options(hp_mode=mode))
  expected = _negclip_numpy(batch["zimg"], batch["ztxt"], batch["zneg"],
                            batch["neg_mask"])
  # svlc keeps its per-sample HN term on top of NegCLIP.
  np.testing.assert_allclose(metrics["i2t_loss"] + metrics["t2i_loss"],
                             expected, **TOL)
  _check_against(loss, metrics, reference(batch, mode))


def test_replace_with_q0_and_q1():
  batch = _batch(2)
  key = jax.random.key(3)
  _, metrics = clip_loss(
      **batch, logit_scale=SCALE, rng=key,
      options=Options(hp_mode="replace", hp_replace_q=0.0))
  base = dict(batch, zpos=None, pos_mask=None)
  _check_against(metrics["i2t_loss"] + metrics["t2i_loss"], metrics,
                 reference(base))
  assert metrics["replaced_frac"] == 0.0

  # At most one valid HP per row makes q=1 deterministic.
  batch["pos_mask"][:, 1] = False
  loss, metrics = clip_loss(
      **batch, logit_scale=SCALE, rng=key,
      options=Options(hp_mode="replace", hp_replace_q=1.0))
  has_hp = batch["pos_mask"][:, 0]
  replaced = dict(base, ztxt=np.where(has_hp[:, None], batch["zpos"][:, 0],
                                      batch["ztxt"]))
  _check_against(loss, metrics, reference(replaced))
  np.testing.assert_allclose(metrics["replaced_frac"], has_hp.mean(), **TOL)


def test_replace_draws():
  rng = np.random.default_rng(4)
  b, p, q = 4000, 3, 0.3
  ztxt = rng.normal(size=(b, 2)).astype(np.float32)
  zpos = rng.normal(size=(b, p, 2)).astype(np.float32)
  pos_mask = rng.random((b, p)) < 0.5
  rows = np.arange(b)
  draw = jax.jit(losses._replace_captions, static_argnums=4)
  new, replaced = draw(ztxt, zpos, pos_mask, rows, q, jax.random.key(5))
  new, replaced = np.asarray(new), np.asarray(replaced)
  picked = (new[:, None, :] == zpos).all(-1)  # [b, P]
  np.testing.assert_array_equal(picked.any(1), replaced)
  np.testing.assert_array_equal(new[~replaced], ztxt[~replaced])
  assert not (picked & ~pos_mask).any()
  has_hp = pos_mask.any(1)
  assert abs(replaced[has_hp].mean() - q) < 0.03
  # Uniform among the valid HPs: rows with all P valid pick each ~1/P.
  full = pos_mask.all(1) & replaced
  np.testing.assert_allclose(picked[full].mean(0), 1 / p, atol=0.1)
  # A row's draw depends on its global index only, not on its position.
  flip = lambda x: x[::-1]
  again, again_replaced = draw(flip(ztxt), flip(zpos), flip(pos_mask),
                               flip(rows), q, jax.random.key(5))
  np.testing.assert_array_equal(flip(again), new)
  np.testing.assert_array_equal(flip(again_replaced), replaced)


def test_own_hp_is_never_a_negative():
  # One image, one HN, one HP: no t2i row has a competitor, so the loss is
  # 1/4 (ce(c | n) + ce(p | n)); if p competed in the caption row, its
  # gradient would have a second part.
  rng = np.random.default_rng(6)
  zimg, ztxt = _unit(rng.normal(size=(2, 1, 4))).astype(np.float32)
  zneg, zpos = _unit(rng.normal(size=(2, 1, 1, 4))).astype(np.float32)
  grad = jax.grad(lambda zp: clip_loss(
      zimg, ztxt, logit_scale=SCALE, zneg=zneg, zpos=zp)[0])(zpos)
  a = SCALE * float(zimg[0] @ zpos[0, 0])
  m = SCALE * float(zimg[0] @ zneg[0, 0])
  expected = 0.25 * SCALE * zimg[0] * (1 / (1 + np.exp(m - a)) - 1)
  np.testing.assert_allclose(grad[0, 0], expected, **TOL)

  # A paraphrase identical to its caption costs nothing for its own image,
  # but the same text as another image's HP is a competitor for image 0.
  eye = np.eye(2, 4, dtype=np.float32)
  zpos = eye[:, None].copy()
  own, _ = clip_loss(eye, eye, logit_scale=50.0, zpos=zpos)
  assert own < 1e-6
  zpos[1, 0] = eye[0]
  other, _ = clip_loss(eye, eye, logit_scale=50.0, zpos=zpos)
  assert other > 0.1


@pytest.mark.parametrize("mode", losses.HP_MODES)
def test_masked_entries_are_inert_and_nothing_is_nan(mode):
  batch = _batch(7)
  kwargs = dict(logit_scale=SCALE, options=Options(hp_mode=mode),
                rng=jax.random.key(0))

  def loss_of(zneg, zpos):
    return clip_loss(**dict(batch, zneg=zneg, zpos=zpos), **kwargs)[0]

  value_and_grad = jax.jit(jax.value_and_grad(loss_of, argnums=(0, 1)))
  loss, grads = value_and_grad(batch["zneg"], batch["zpos"])
  assert all(np.isfinite(g).all() for g in grads)
  assert not np.asarray(grads[0])[~batch["neg_mask"]].any()
  assert not np.asarray(grads[1])[~batch["pos_mask"]].any()
  junk_neg = np.where(batch["neg_mask"][..., None], batch["zneg"], 0.0)
  junk_pos = np.where(batch["pos_mask"][..., None], batch["zpos"], 3.0)
  np.testing.assert_allclose(value_and_grad(junk_neg, junk_pos)[0], loss,
                             **TOL)

  # One image, nothing valid: every row is dropped, loss 0, no NaN.
  lone = {k: v[:1] for k, v in batch.items()}
  lone["neg_mask"][:], lone["pos_mask"][:] = False, False
  loss, grads = jax.value_and_grad(
      lambda z: clip_loss(**dict(lone, **z), **kwargs)[0])(
          {k: lone[k] for k in ("zimg", "ztxt", "zneg", "zpos")})
  assert loss == 0.0
  assert all(np.isfinite(g).all() for g in jax.tree.leaves(grads))


def test_margins():
  batch = _batch(8)
  _, metrics = clip_loss(**batch, logit_scale=SCALE)
  zi, zt, zn, zp = (batch[k] for k in ("zimg", "ztxt", "zneg", "zpos"))
  c_cn, cp_cn = [], []
  for i in range(len(zi)):
    for k in np.flatnonzero(batch["neg_mask"][i]):
      c_cn.append(zi[i] @ zt[i] - zi[i] @ zn[i, k])
      for q in np.flatnonzero(batch["pos_mask"][i]):
        cp_cn.append(zi[i] @ zp[i, q] - zi[i] @ zn[i, k])
  np.testing.assert_allclose(metrics["margin_c_cn"], np.mean(c_cn), **TOL)
  np.testing.assert_allclose(metrics["margin_cp_cn"], np.mean(cp_cn), **TOL)


def test_bad_options_raise():
  batch = _batch(9)
  with pytest.raises(ValueError, match="extra_row"):
    Options(hp_mode="swap")
  with pytest.raises(ValueError, match=r"hp_replace_q=1.5 is not in \[0, 1\]"):
    Options(hp_replace_q=1.5)
  with pytest.raises(ValueError, match="rng"):
    clip_loss(**batch, logit_scale=SCALE, options=Options(hp_mode="replace"))
  with pytest.raises(ValueError, match="mask"):
    clip_loss(**dict(batch, neg_mask=batch["neg_mask"][:, :1]),
                     logit_scale=SCALE)


# --- sharded over 8 fake devices ------------------------------------------

EMBEDDINGS = ("zimg", "ztxt", "zneg", "zpos")


@pytest.mark.parametrize("mode,with_negs,with_hps", [
    ("extra_row", True, True),
    ("svlc", True, True),
    ("replace", True, True),
    ("extra_row", True, False),
    ("extra_row", False, False),
])
def test_sharded_matches_single_device(mode, with_negs, with_hps):
  assert jax.device_count() == 8
  batch = _batch(10, b=16, k=2, p=2, d=6)
  if not with_negs:
    batch.update(zneg=None, neg_mask=None)
  if not with_hps:
    batch.update(zpos=None, pos_mask=None)
  options = Options(hp_mode=mode, neg_w=0.5, hp_replace_q=0.5)
  masks = {k: batch[k] for k in ("neg_mask", "pos_mask")}
  embeddings = {k: batch[k] for k in EMBEDDINGS}
  sharded = losses.make_sharded_loss(Mesh(jax.devices(), ("data",)),
                                     options)
  key = jax.random.key(11)

  def run(loss_fn):
    def total(z, scale):
      return loss_fn(**z, **masks, logit_scale=scale, rng=key)
    (loss, metrics), grads = jax.value_and_grad(
        total, argnums=(0, 1), has_aux=True)(embeddings, jnp.float32(SCALE))
    return loss, metrics, grads

  want = run(lambda **kw: clip_loss(**kw, options=options))
  got = jax.jit(run, static_argnums=0)(sharded)
  np.testing.assert_allclose(got[0], want[0], **TOL)
  assert got[1].keys() == want[1].keys()
  for key_ in want[1]:
    np.testing.assert_allclose(got[1][key_], want[1][key_], err_msg=key_,
                               **TOL)
  for name, g, w in zip(("embeddings", "logit_scale"), got[2], want[2]):
    for leaf_got, leaf_want in zip(jax.tree.leaves(g), jax.tree.leaves(w)):
      assert np.abs(leaf_want).max() > 0, name
      np.testing.assert_allclose(leaf_got, leaf_want, err_msg=name, **TOL)


def test_gradient_taken_inside_shard_map():
  # How a train step uses it: grad inside the map, per-device local rows.
  batch = _batch(12, b=16, k=2, p=2, d=6)
  masks = {k: batch[k] for k in ("neg_mask", "pos_mask")}
  embeddings = {k: batch[k] for k in EMBEDDINGS}

  def body(z, m):
    return jax.grad(lambda z: losses.sharded_clip_loss(
        **z, **m, logit_scale=SCALE)[0])(z)

  spec = jax.sharding.PartitionSpec("data")
  got = jax.jit(jax.shard_map(body, mesh=Mesh(jax.devices(), ("data",)),
                              in_specs=spec, out_specs=spec))(embeddings,
                                                              masks)
  want = jax.grad(lambda z: clip_loss(**z, **masks, logit_scale=SCALE)[0])(
      embeddings)
  for name in EMBEDDINGS:
    np.testing.assert_allclose(got[name], want[name], err_msg=name, **TOL)


# --- NegCLIP with hard-negative images --------------------------------------


def negclip_reference(img, img_nn, txt, txt_nn, neg, neg_nn, scale):
  """NegCLIP's train.py + ClipLoss (vinid/neg_clip), in float64.

  images = [I; I_nn] (2B), texts = [T; T_nn; T-; T-_nn] (4B); image->text
  cross-entropy over all 4B columns, text->image over the first 2B rows.
  """
  images = np.concatenate([img, img_nn]).astype(np.float64)
  texts = np.concatenate([txt, txt_nn, neg, neg_nn]).astype(np.float64)
  n = len(images)

  def ce(logits):
    top = logits.max(axis=1, keepdims=True)
    logz = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return np.mean(logz - logits[np.arange(n), np.arange(n)])

  per_image = scale * images @ texts.T
  per_text = scale * texts[:n] @ images.T
  return (ce(per_image) + ce(per_text)) / 2


def test_hard_images_are_negclips_loss():
  rng = np.random.default_rng(21)
  b, d = 8, 6
  img, img_nn, txt, txt_nn, neg, neg_nn = (
      _unit(rng.normal(size=(b, d))).astype(np.float32) for _ in range(6))
  want = negclip_reference(img, img_nn, txt, txt_nn, neg, neg_nn, SCALE)

  def rows(own, partner):  # the pipeline's order: each pair's partner next
    return np.stack([own, partner], axis=1).reshape(2 * b, *own.shape[1:])

  z = dict(zimg=rows(img, img_nn), ztxt=rows(txt, txt_nn),
           zneg=rows(neg, neg_nn)[:, None])
  loss, _ = clip_loss(**z, logit_scale=SCALE)
  np.testing.assert_allclose(loss, want, **TOL)
  # The same on 8 devices (2 rows each), gradients included.
  sharded = losses.make_sharded_loss(Mesh(jax.devices(), ("data",)))
  grad = jax.value_and_grad(lambda f, z: f(**z, logit_scale=SCALE)[0],
                            argnums=1)
  got_loss, got = jax.jit(grad, static_argnums=0)(sharded, z)
  want_loss, want_grads = grad(clip_loss, z)
  np.testing.assert_allclose(got_loss, want, **TOL)
  for name in z:
    np.testing.assert_allclose(got[name], want_grads[name], err_msg=name,
                               **TOL)
