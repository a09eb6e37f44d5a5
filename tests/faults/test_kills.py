"""Case 3 of issue 8: kill -9 at seeded moments, restart each time.

One workdir is killed at each moment of `MOMENTS` in turn (the delays and
target steps come from `SEED`), restarted after each kill, and finally run to
the end. It saves every step and keeps 2, so that saves and deletions are
frequent targets. Each restart must resume from the newest complete save,
losing at most the one save that was in flight, and the end must be exact.
"""

import json
import os
import random
import re
import time

import pytest

import harness

SEED = 8
EVERY = 1
KEEP = 2  # so that every save after the second deletes an old step
MOMENTS = ("start-up", "restore/compile", "mid-step", "mid-save",
           "old-step deletion", "mid-step")


def _trigger(moment: str, rng: random.Random, run: harness.Run, workdir: str,
             start: int):
  """(condition, description) that says when to kill at `moment`."""
  if moment == "start-up":
    delay = rng.uniform(0.5, 4.0)
    return lambda: time.time() > run.started + delay, f"{delay:.2f}s in"
  if moment == "restore/compile":
    delay = rng.uniform(0.0, 1.5)
    config = os.path.join(workdir, "config.json")

    def written_then_waited():
      # config.json is rewritten as train_and_evaluate starts.
      return (os.path.exists(config) and
              time.time() > max(os.path.getmtime(config), run.started) + delay)
    return written_then_waited, f"{delay:.2f}s after config.json"
  # Targets stay below the last step so that the run is still going.
  last = harness.TOTAL_STEPS - 1
  if moment == "mid-step":
    step = min(start + rng.randint(1, 2), last)
    delay = rng.uniform(0.0, 0.05)
    trained, logged = harness.has_trained(run, workdir, step), []

    def after_step():
      if not logged and trained():
        logged.append(time.time())
      return bool(logged) and time.time() > logged[0] + delay
    return after_step, f"{delay:.3f}s after step {step}"
  if moment == "mid-save":
    step = min(start + 2, last)
    return (lambda: any(s >= step for s in harness.uncommitted_steps(workdir)),
            f"while step {step} or later is written")
  if moment == "old-step deletion":
    committed = set()

    def deleting():
      now = set(harness.committed_steps(workdir))
      gone = committed - now
      committed.update(now)
      return bool(gone)
    return deleting, "as a committed step is deleted"
  raise ValueError(f"Unknown kill moment {moment!r}; choose from {MOMENTS}")


@pytest.mark.slow
def test_kills_at_seeded_moments_resume_exactly(data_dir, reference, tmp_path):
  rng = random.Random(SEED)
  workdir = str(tmp_path / "w")
  overrides = (f"--config.checkpoint_every={EVERY}",
               f"--config.keep_checkpoints={KEEP}")
  figures = []
  for moment in MOMENTS:
    committed = harness.committed_steps(workdir)
    start = committed[-1] if committed else 0
    run = harness.start(workdir, data_dir, *overrides)
    condition, when = _trigger(moment, rng, run, workdir, start)
    harness.wait_for(run, condition, f"the {moment} kill moment ({when})")
    harness.sigkill(run)
    # A restart that got as far as restoring resumed from the newest save.
    resumed = re.search(r"Training steps (\d+)\.\.", run.log())
    assert resumed is None or int(resumed.group(1)) == start, run.tail()
    last = harness.last_logged_step(workdir)
    resume = harness.committed_steps(workdir)
    resume = resume[-1] if resume else 0
    lost_saves = harness.max_resume_loss(resume, last, EVERY)
    figures.append({"moment": moment, "when": when, "last_step": last,
                    "resumes_at": resume, "steps_lost": max(0, last - resume),
                    "saves_lost": lost_saves})
    assert lost_saves <= 1, figures[-1]
  run = harness.run_to_end(workdir, data_dir, *overrides)
  start = figures[-1]["resumes_at"]
  assert f"Training steps {start}..{harness.TOTAL_STEPS}" in run.log()
  harness.assert_exact(workdir, reference)
  print("FIGURES case 3:", json.dumps(figures))
  print(f"FIGURES case 3: {len(figures)}/{len(figures)} kills resumed exactly, "
        f"max steps lost {max(f['steps_lost'] for f in figures)}, max saves "
        f"lost {max(f['saves_lost'] for f in figures)}, params bit-identical")
