"""Cases 4, 6 and 10 of issue 8: SIGTERM, and handlers that steal it."""

import json
import os
import signal
import time

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

# Runs the trainer's __main__ with every image batch of an evaluation logged
# (to $EVAL_LOG.<process>) and slowed by $EVAL_SLEEP seconds, so that a
# SIGTERM lands in the middle of a long evaluation.
SLOW_EVAL = """
import dataclasses, os, runpy, time
import jax
from hardpos_jax import evals

create = evals.create_encoders

def slow(*args, **kwargs):
  encoders = create(*args, **kwargs)
  def image_fn(*inputs):
    with open(f"{os.environ['EVAL_LOG']}.{jax.process_index()}", "a") as f:
      f.write(f"{time.time()}\\n")
    time.sleep(float(os.environ["EVAL_SLEEP"]))
    return encoders.image_fn(*inputs)
  return dataclasses.replace(encoders, image_fn=image_fn)

evals.create_encoders = slow
runpy.run_module("hardpos_jax.train", run_name="__main__", alter_sys=True)
"""
EVAL_OVERRIDES = ("--config.evals=synthetic_tiny", "--config.eval_every=4",
                  "--config.eval_batch_size=2")


def _eval_batches(log: str, process: int) -> list[float]:
  path = f"{log}.{process}"
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [float(line) for line in f]


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


@pytest.mark.parametrize("processes",
                         [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigterm_during_evaluation_stops_within_one_batch(
    data_dir, reference, tmp_path, processes):
  """Case 6b: SIGTERM (to the last process) while step 4 is evaluated.

  Every process must stop at the same evaluation batch, within a batch of the
  notice, save step 4 and exit preempted; the restart evaluates step 4 first,
  then trains on exactly.
  """
  workdir, log = str(tmp_path / "w"), str(tmp_path / "eval_batches")
  command = ("-c", SLOW_EVAL)
  run = harness.start(workdir, data_dir, *EVAL_OVERRIDES, command=command,
                      processes=processes,
                      env={"EVAL_LOG": log, "EVAL_SLEEP": "0.5"})
  harness.wait_for(run, lambda: len(_eval_batches(log, 0)) >= 3,
                   "an evaluation batch")
  sent = time.time()
  run.signal(signal.SIGTERM, process=processes - 1)
  assert run.wait() == [train.PREEMPTED_EXIT_CODE] * processes, run.tail()
  exited = time.time() - sent
  batches = [_eval_batches(log, p) for p in range(processes)]
  late = [[t for t in times if t > sent] for times in batches]
  # All stop at the agreed batch: one past the furthest process's check-in
  # when the notice arrived. A process one batch behind (dispatch is
  # asynchronous) may so start two after the signal; without the check-ins
  # the evaluation would run to its end.
  assert len({len(times) for times in batches}) == 1, batches
  limit = 1 if processes == 1 else 2
  assert all(len(times) <= limit for times in late), late
  for process in range(processes):
    assert ("Preempted during the evaluation of step 4; saved step 4 in"
            in run.log(process)), run.tail(process)
  assert harness.committed_steps(workdir)[-1] == 4
  assert harness.last_logged_step(workdir) == 4
  report = os.path.join(workdir, "eval", "4", "synthetic_tiny.json")
  assert not os.path.exists(report)

  run = harness.run_to_end(workdir, data_dir, *EVAL_OVERRIDES,
                           command=command, processes=processes,
                           env={"EVAL_LOG": log + ".again", "EVAL_SLEEP": "0"})
  assert "Evaluating step 4 first" in run.log()
  assert "Training steps 4..8" in run.log()
  for step in (4, 8):
    with open(os.path.join(workdir, "eval", str(step),
                           "synthetic_tiny.json")) as f:
      assert json.load(f)["eval"] == "synthetic_tiny"
  harness.assert_exact(workdir, reference)
  print(f"FIGURES case 6b ({processes} process(es)): SIGTERM during the "
        f"evaluation of step 4 -> {max(map(len, late))} batch(es) started "
        f"after it, exit {train.PREEMPTED_EXIT_CODE} after {exited:.1f} s "
        "(0.5 s per batch), step 4 saved, re-evaluated on restart, resume "
        "exact")
