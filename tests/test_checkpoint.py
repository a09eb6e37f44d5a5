"""The trainer's checkpoint managers: preemption clock, restore checks and
the best step."""

import re

import jax
import numpy as np
import pytest

import tiny
from hardpos_jax import checkpoint
from hardpos_jax import train_step as ts
from hardpos_jax.models import clip


class FixedClock:
  """A preemption clock whose answer the test sets."""

  def __init__(self, reached: bool):
    self.answer = reached

  def reached(self) -> bool:
    return self.answer


def test_manager_asks_the_clock_not_the_step(tmp_path):
  clock = FixedClock(reached=False)
  with checkpoint.create_manager(str(tmp_path), save_every=100, keep=None,
                                 clock=clock) as mngr:
    # orbax always saves a first step; after it, step 3 is off the interval.
    checkpoint.save(mngr, 1, _state(tiny.train_config()), {}, force=True)
    mngr.wait_until_finished()
    assert not mngr.should_save(3)
    clock.answer = True  # An evaluation batch was the agreed point.
    assert mngr.should_save(3)


def _state(config):
  return ts.create_train_state(config, tiny.init_params(),
                               jax.random.PRNGKey(0), total_steps=10)


def test_restore_latest_round_trip_and_shape_check(tmp_path):
  config = tiny.train_config()
  state = _state(config).replace(step=7)
  meta = {"global_batch_size": 8}
  with checkpoint.create_manager(str(tmp_path), save_every=1,
                                 keep=None) as mngr:
    checkpoint.save(mngr, 7, state, meta, force=True)
  with checkpoint.create_manager(str(tmp_path), save_every=1,
                                 keep=None) as mngr:
    restored, got_meta = checkpoint.restore_latest(mngr, _state(config))
  assert int(restored.step) == 7 and got_meta == meta
  for got, want in zip(jax.tree.leaves(restored.params),
                       jax.tree.leaves(state.params), strict=True):
    assert isinstance(got, np.ndarray)  # Host arrays, placed by the caller.
    np.testing.assert_array_equal(got, want)

  wider = tiny.train_config()
  wider.model.embed_dim = 24
  other = ts.create_train_state(
      wider, clip.init_params(wider.model.to_dict(), jax.random.key(0)),
      jax.random.PRNGKey(0), total_steps=10)
  with checkpoint.create_manager(str(tmp_path), save_every=1,
                                 keep=None) as mngr:
    with pytest.raises(RuntimeError, match="No checkpoint .* restores"):
      checkpoint.restore_latest(mngr, other)
  # Nothing is set aside when no step restores (say, the config changed).
  assert (tmp_path / "checkpoints" / "7").is_dir()



@pytest.fixture(scope="module")
def params():
  return jax.tree.map(np.asarray, tiny.init_params())


def _params_of(params, step):
  """Params that differ from step to step."""
  return jax.tree.map(lambda x: x + step, params)


def _offer(mngr, params, step, value, mode):
  return checkpoint.save_best(
      mngr, step, _params_of(params, step), {"model": tiny.model_config()},
      metric="m", mode=mode, value=value)


@pytest.mark.parametrize("mode, best", [("max", 2), ("min", 4)])
def test_best_manager_keeps_the_best_step(tmp_path, params, mode, best):
  workdir = str(tmp_path)
  values = {2: 0.3, 4: 0.1, 6: 0.2}
  with checkpoint.create_best_manager(workdir, metric="m", mode=mode) as mngr:
    for step, value in values.items():
      standing = _offer(mngr, params, step, value, mode)
    assert standing == (best, values[best])
    # Offered again (a restart redoes its evaluation): no duplicate step.
    assert _offer(mngr, params, best, values[best], mode) == standing
    assert mngr.all_steps() == [best]
  assert checkpoint.best_step(workdir) == best
  assert checkpoint.workdir_step(workdir, "best") == best
  config, restored = checkpoint.restore_params(workdir, step="best")
  assert config == tiny.model_config()
  jax.tree.map(np.testing.assert_array_equal, restored,
               _params_of(params, best))
  with pytest.raises(ValueError, match="best by m .*selects by other"):
    checkpoint.create_best_manager(workdir, metric="other", mode=mode)


def test_missing_best_says_how_to_keep_one(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=f"{re.escape(str(tmp_path))}.*config.select_metric"):
    checkpoint.restore_params(str(tmp_path), step="best")
  assert checkpoint.best_step(str(tmp_path)) is None
  assert not (tmp_path / checkpoint.BEST).exists()  # Reading creates nothing.
