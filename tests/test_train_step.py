"""Train step: 1 device == 8 devices == 2 processes; optimiser details."""

import functools
import os
import socket
import subprocess
import sys

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from hardpos_jax import losses
from hardpos_jax import sharding
from hardpos_jax import train_step as ts
from hardpos_jax.data import global_batches
import tiny


def run(n_devices, steps=2, hp_mode="extra_row", params=None,
        accum_steps=1):
  mesh = sharding.create_mesh(jax.devices()[:n_devices])
  config = tiny.train_config(hp_mode)
  config.accum_steps = accum_steps
  params = tiny.init_params() if params is None else params
  state = ts.create_train_state(config, params, jax.random.PRNGKey(1), 10)
  state = sharding.replicate(state, mesh)
  step_fn = ts.make_train_step(config, mesh)
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  history = []
  for step in range(steps):
    batch = jax.device_put(tiny.batch(step), batch_sharding)
    state, metrics = step_fn(state, batch)
    history.append(jax.device_get(metrics))
  return state, history


def flat(params):
  return {k: np.asarray(v) for k, v in
          flax.traverse_util.flatten_dict(params, sep="/").items()}


# Softmax is invariant to the attention key bias (it adds the same q.b_k to
# every logit of a query), so its gradient is exactly zero in exact arithmetic
# and float noise in practice, which Adam scales up to about +-lr: it is
# kept for OpenAI parity but its value after a step is not defined.
UNDEFINED = "attn/key/bias"


def assert_params_close(a, b, tol=2e-5):
  """Param trees agree wherever an update is defined."""
  a, b = flat(a), flat(b)
  assert a.keys() == b.keys()
  defined = [k for k in a if not k.endswith(UNDEFINED)]
  assert len(defined) < len(a)  # the rule still names real params
  for key in defined:
    np.testing.assert_allclose(a[key], b[key], atol=tol, rtol=tol,
                               err_msg=key)


@pytest.mark.parametrize("hp_mode", losses.HP_MODES)
def test_eight_devices_equal_one(hp_mode):
  s1, h1 = run(1, hp_mode=hp_mode)
  s8, h8 = run(8, hp_mode=hp_mode)
  for m1, m8 in zip(h1, h8):
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5)
  assert_params_close(s1.params, s8.params)
  assert int(s8.step) == 2


def loss_and_grads(batch, accum_steps=1, hp_mode="extra_row"):
  """The step's loss and gradients on one device, at the batch's length."""
  config = tiny.train_config(hp_mode)
  loss_fn = functools.partial(losses.clip_loss,
                              options=losses.LossOptions.of(config.loss))
  model = ts.clip.CLIP(**tiny.model_config())
  batch = jax.tree.map(jnp.asarray, batch)
  loss_of = functools.partial(ts.batch_loss, loss_fn, batch,
                              jax.random.PRNGKey(3))
  images, texts = batch["image"], ts.batch_texts(batch)
  if accum_steps > 1:
    return ts.accumulated_grads(model.apply, tiny.init_params(), images,
                                texts, loss_of, accum_steps)
  return jax.value_and_grad(
      lambda p: loss_of(*ts.embed(model.apply, p, images, texts),
                        jnp.exp(p["t"])), has_aux=True)(tiny.init_params())


def assert_grads_close(a, b, tol=1e-5):
  """Gradient trees agree, relative to each tensor's scale, wherever the
  gradient is defined (not float noise, see UNDEFINED)."""
  a, b = flat(a), flat(b)
  assert a.keys() == b.keys()
  for key in [k for k in a if not k.endswith(UNDEFINED)]:
    scale = max(np.abs(a[key]).max(), 1e-3)
    np.testing.assert_allclose(a[key], b[key], atol=tol * scale, rtol=tol,
                               err_msg=key)


def test_short_texts_give_the_full_contexts_loss_and_gradients():
  """Under the causal mask the EOT embedding ignores what follows it."""
  batch = tiny.batch(0)
  length = tiny.LENGTH // 2 + 1  # every text's EOT is at LENGTH // 2
  short = {k: v[..., :length] if k in global_batches.TEXT_KEYS else v
           for k, v in batch.items()}
  np.testing.assert_array_equal(
      global_batches.cut_texts(batch, 1)["hard_negatives"],
      short["hard_negatives"])
  (loss, _), grads = loss_and_grads(batch)
  (short_loss, _), short_grads = loss_and_grads(short)
  np.testing.assert_allclose(short_loss, loss, rtol=1e-6)
  # Positions past every EOT get no gradient at the full length either.
  pos = grads["txt"]["pos_embedding"]
  assert not np.asarray(pos[length:]).any() and np.asarray(pos[:length]).any()
  assert_grads_close(short_grads, grads)


@pytest.mark.parametrize("hp_mode", ["extra_row", "replace"])
def test_accumulation_gives_the_full_batch_gradients(hp_mode):
  """GradCache: 4 micro-batches, HN columns and HP rows on, one update."""
  batch = tiny.batch(0)
  (loss, metrics), grads = loss_and_grads(batch, hp_mode=hp_mode)
  (acc_loss, acc_metrics), acc_grads = loss_and_grads(batch, 4, hp_mode)
  np.testing.assert_allclose(acc_loss, loss, rtol=1e-6)
  for key in metrics:
    np.testing.assert_allclose(acc_metrics[key], metrics[key], rtol=1e-5,
                               atol=1e-6, err_msg=key)
  assert np.asarray(acc_grads["t"]) != 0
  assert_grads_close(acc_grads, grads)


def test_accumulated_step_on_eight_devices_equals_one_plain_step():
  s1, h1 = run(1)
  s8, h8 = run(8, accum_steps=4)
  for m1, m8 in zip(h1, h8):
    np.testing.assert_allclose(m8["loss"], m1["loss"], rtol=1e-5)
    np.testing.assert_allclose(m8["grad_norm"], m1["grad_norm"], rtol=1e-5)
  assert_params_close(s1.params, s8.params)


def test_step_matches_unsharded_reference_loss():
  """The step's loss is `clip_loss` on the whole batch, single device."""
  _, history = run(8, steps=1)  # donates its own copy of the params
  params = tiny.init_params()
  batch = tiny.batch(0)
  model = ts.clip.CLIP(**tiny.model_config())
  zimg, zall = ts.embed(model.apply, params, batch["image"],
                        ts.batch_texts(batch))
  out = {"logit_scale": np.exp(params["t"])}
  ref, _ = losses.clip_loss(
      zimg, zall[:, 0], logit_scale=out["logit_scale"], zneg=zall[:, 1:3],
      neg_mask=batch["hard_negative_mask"], zpos=zall[:, 3:],
      pos_mask=batch["hard_positive_mask"])
  np.testing.assert_allclose(history[0]["loss"], ref, rtol=1e-5)


def test_two_processes_equal_one_process(tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  out = str(tmp_path / "params.npz")
  worker = os.path.join(os.path.dirname(__file__), "two_process_worker.py")
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  procs = [subprocess.Popen([sys.executable, worker, str(i), str(port), "3",
                             out], env=env, stderr=subprocess.PIPE)
           for i in range(2)]
  for p in procs:
    _, err = p.communicate(timeout=240)
    assert p.returncode == 0, err.decode()[-3000:]
  state, _ = run(4, steps=3)
  got = flax.traverse_util.unflatten_dict(dict(np.load(out)), sep="/")
  assert_params_close(got, state.params)


def test_key_bias_gradient_is_float_noise():
  """Why UNDEFINED is skipped: its gradient is noise next to the others'."""
  params = tiny.init_params()
  batch = tiny.batch(0)
  model = ts.clip.CLIP(**tiny.model_config())

  def loss(params):
    zimg, ztxt, out = model.apply({"params": params}, batch["image"],
                                  batch["text"])
    return losses.clip_loss(zimg, ztxt, logit_scale=out["logit_scale"])[0]

  grads = flat(jax.grad(loss)(params))
  key_bias = max(np.abs(v).max() for k, v in grads.items()
                 if k.endswith(UNDEFINED))
  query_bias = min(np.abs(v).max() for k, v in grads.items()
                   if k.endswith("attn/query/bias"))
  assert key_bias < 1e-6 * query_bias


def test_weight_decay_mask_only_matrices():
  mask = flat(ts.weight_decay_mask(tiny.init_params()))
  assert not mask["t"] and not mask["img/cls"]
  assert not mask["img/ln_pre/scale"] and mask["txt/head/kernel"]
  assert not mask["img/encoder/block_0/mlp/fc/bias"]
  assert mask["img/encoder/block_0/mlp/fc/kernel"]
  assert mask["img/encoder/block_0/attn/query/kernel"]
  assert mask["txt/embedding/embedding"]


def test_logit_scale_clamped_and_state_donated():
  params = tiny.init_params()
  params["t"] = jnp.log(200.0)
  mesh = sharding.create_mesh()
  config = tiny.train_config()
  state = ts.create_train_state(config, params, jax.random.PRNGKey(1), 10)
  state = sharding.replicate(state, mesh)
  old_leaf = state.params["img"]["head"]["kernel"]
  batch = jax.device_put(tiny.batch(0), NamedSharding(mesh,
                                                      PartitionSpec("data")))
  state, metrics = ts.make_train_step(config, mesh)(state, batch)
  assert float(metrics["logit_scale"]) <= 100.0 + 1e-3
  assert float(jnp.exp(state.params["t"])) <= 100.0 + 1e-3
  assert old_leaf.is_deleted()


def test_learning_rate_schedule():
  config = tiny.train_config().optim
  lr = ts.create_learning_rate_fn(config, 10)
  assert float(lr(0)) == 0.0
  np.testing.assert_allclose(float(lr(1)), config.lr, rtol=1e-6)
  assert float(lr(10)) < 1e-6


def test_lr_mults_freeze_and_scale():
  """A 0 multiplier freezes a group; others move at their own scale."""
  config = tiny.train_config()
  config.optim.lr_mults = (("^img/", 0.0), ("^txt/head/", 0.5))
  mesh = sharding.create_mesh(jax.devices()[:1])
  params = tiny.init_params()
  before = flat(params)
  state = ts.create_train_state(config, params, jax.random.PRNGKey(1), 10)
  labels = flat(ts.param_labels(tiny.init_params(), config.optim.lr_mults))
  assert labels["img/cls"] == "^img/" and labels["t"] == "default"
  assert labels["txt/head/kernel"] == "^txt/head/"
  state = sharding.replicate(state, mesh)
  batch = jax.device_put(tiny.batch(0), NamedSharding(mesh,
                                                      PartitionSpec("data")))
  step_fn = ts.make_train_step(config, mesh)
  for _ in range(2):  # the warmup's lr is 0 at step 0
    state, _ = step_fn(state, batch)
  after = flat(state.params)
  for key in before:
    moved = not np.array_equal(before[key], after[key])
    assert moved == (not key.startswith("img/")), key
