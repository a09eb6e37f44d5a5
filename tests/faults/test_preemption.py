"""Cases 4, 6 and 10 of issue 8: SIGTERM, and handlers that steal it."""

import os
import signal

import pytest

import harness
from hardpos_jax import train

# Runs the trainer's __main__ after making `TAKE_SIGTERM_AFTER` (a function of
# the library) install a Python SIGTERM handler once it has run, as a third
# party library might at start-up or mid-run.
THIEF = """
import os, runpy, signal
import jax
from hardpos_jax import checkpoint

def after(fn):
  def wrapped(*args, **kwargs):
    out = fn(*args, **kwargs)
    signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM"))
    return out
  return wrapped

if os.environ["TAKE_SIGTERM_AFTER"] == "initialize":
  jax.distributed.initialize = after(jax.distributed.initialize)
else:
  checkpoint.save = after(checkpoint.save)
runpy.run_module("hardpos_jax.train", run_name="__main__", alter_sys=True)
"""


def test_sigterm_saves_agreed_step_and_resumes_exactly(
    data_dir, reference, tmp_path):
  """Cases 4 and 10: 8 batches prefetched, no interval saves, SIGTERM."""
  workdir = str(tmp_path / "w")
  overrides = ("--config.input.prefetch=8", "--config.checkpoint_every=1000")
  run = harness.start(workdir, data_dir, *overrides)
  # The notice takes up to a few steps to agree on; sent while step 1
  # compiles, it is agreed well before the last step.
  harness.wait_for(run, harness.has_started(run, workdir), "step 1")
  run.signal(signal.SIGTERM)
  assert run.wait() == [train.PREEMPTED_EXIT_CODE], run.tail()
  saved = harness.committed_steps(workdir)[-1]
  assert f"Preempted; saved step {saved} in" in run.log()
  # 0 steps lost: the last step trained (and the last batch read) is saved.
  assert harness.last_logged_step(workdir) == saved
  assert harness.batch_ids(workdir)[-1]["step"] == saved
  run = harness.run_to_end(workdir, data_dir, *overrides)
  assert f"Training steps {saved}..{harness.TOTAL_STEPS}" in run.log()
  harness.assert_exact(workdir, reference)
  print(f"FIGURES case 4/10: SIGTERM in step 1 saved step {saved}, "
        f"0 steps lost, resume exact with prefetch 8")


@pytest.mark.parametrize("after, saved", [("initialize", []),
                                          ("first-save", [1])])
def test_foreign_sigterm_handler_is_loud(data_dir, tmp_path, after, saved):
  """Case 6: a handler installed at start-up, or after the first save."""
  workdir = str(tmp_path / "w")
  run = harness.start(workdir, data_dir, command=("-c", THIEF),
                      env={"TAKE_SIGTERM_AFTER": after})
  assert run.wait() == [1], run.tail()
  assert "A Python SIGTERM handler" in run.log()
  assert "disables orbax's preemption save" in run.log()
  assert harness.committed_steps(workdir) == saved
  assert not os.path.exists(os.path.join(workdir, train.METRICS_FILE)) or (
      harness.last_logged_step(workdir) <= 1)
