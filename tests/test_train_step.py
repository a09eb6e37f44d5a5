"""Train step: 1 device == 8 devices == 2 processes; optimiser details."""

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
import tiny


def run(n_devices, steps=2, hp_mode="extra_row", params=None):
  mesh = sharding.create_mesh(jax.devices()[:n_devices])
  config = tiny.train_config(hp_mode)
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


def assert_params_close(a, b, tol=2e-5):
  a, b = flat(a), flat(b)
  assert a.keys() == b.keys()
  for key in a:
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


def test_step_matches_unsharded_reference_loss():
  """The step's loss is `clip_loss` on the whole batch, single device."""
  _, history = run(8, steps=1)  # donates its own copy of the params
  params = tiny.init_params()
  batch = tiny.batch(0)
  model = ts.clip.CLIP(**tiny.model_config())
  zimg, zall, out = model.apply({"params": params}, batch["image"],
                                ts.stack_texts(batch))
  zall = zall.reshape(8, 4, -1)
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
  got = dict(np.load(out))
  state, _ = run(4, steps=3)
  ref = flat(state.params)
  assert got.keys() == ref.keys()
  for key in ref:
    np.testing.assert_allclose(got[key], ref[key], atol=2e-5, rtol=2e-5,
                               err_msg=key)


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
