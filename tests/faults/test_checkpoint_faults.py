"""Cases 1, 2, 7, 8 and 9 of issue 8: saves cut short, damaged, cluttered.

Each case damages a workdir (a kill mid-save, or a copy of the reference run's
workdir with files removed, cut or added), restarts the trainer on it and
checks it ends exactly where the uninterrupted run did.
"""

import os
import shutil

import harness
from hardpos_jax import train

CKPT = harness.checkpoints_dir


def resumed_at(run: harness.Run, step: int) -> bool:
  return f"Training steps {step}..{harness.TOTAL_STEPS}" in run.log()


def copy_reference(reference, tmp_path, drop=()):
  """A copy of the reference workdir without checkpoint steps `drop`."""
  workdir = str(tmp_path / "w")
  shutil.copytree(reference, workdir)
  for step in drop:
    shutil.rmtree(os.path.join(CKPT(workdir), str(step)))
  return workdir


def test_kill_mid_save_resumes_from_previous_complete_step(
    data_dir, reference, tmp_path):
  """Cases 1 and 2: kill -9 while step 4 or later is being written.

  The step being written sits in its final place without its commit file, as
  on GCS; the restart must ignore it and later save that step over it.
  """
  workdir = str(tmp_path / "w")
  run = harness.start(workdir, data_dir)
  harness.wait_for(
      run, lambda: any(s >= 4 for s in harness.uncommitted_steps(workdir)),
      "a save of step >= 4 in progress")
  harness.sigkill(run)
  partial = harness.uncommitted_steps(workdir)
  complete = harness.committed_steps(workdir)
  assert partial and max(complete) < max(partial), (partial, complete)
  run = harness.run_to_end(workdir, data_dir)
  assert resumed_at(run, max(complete)), run.tail()
  harness.assert_exact(workdir, reference)


def test_crash_right_after_save_keeps_the_save(data_dir, tmp_path):
  """Case 7: NaN stop one step after the save of step 2 started.

  (The plain-return half is the `reference` fixture: `harness.train` exits 0
  and `assert_exact` reads its final step right after.)
  """
  workdir = str(tmp_path / "w")
  run = harness.start(workdir, data_dir, "--config.optim.lr=1e30")
  assert run.wait() == [1]
  assert "FloatingPointError" in run.log() and "at step 3" in run.log()
  assert harness.committed_steps(workdir) == [1, 2]
  assert not harness.uncommitted_steps(workdir)
  params = harness.final_params(workdir, 2)
  assert all(v.size and bool((v == v).all()) for v in params.values())


def test_corrupt_latest_steps_fall_back_and_are_kept(
    data_dir, reference, tmp_path):
  """Case 8: step 8's largest data file cut in half, step 6's metadata gone."""
  workdir = copy_reference(reference, tmp_path)
  step8 = os.path.join(CKPT(workdir), "8")
  largest = max((os.path.join(d, f) for d, _, fs in os.walk(step8) for f in fs),
                key=os.path.getsize)
  size = os.path.getsize(largest)
  with open(largest, "r+b") as f:
    f.truncate(size // 2)
  os.remove(os.path.join(CKPT(workdir), "6", "state", "_METADATA"))
  run = harness.run_to_end(workdir, data_dir)
  log = run.log()
  for step in (8, 6):
    assert f"Checkpoint step {step} in" in log and "does not restore" in log
    assert os.path.isdir(os.path.join(CKPT(workdir), f"{step}.corrupt"))
  assert resumed_at(run, 4), run.tail()
  # Left for inspection exactly as found.
  aside = largest.replace(step8, step8 + ".corrupt")
  assert os.path.getsize(aside) == size // 2
  harness.assert_exact(workdir, reference)


def test_junk_in_checkpoint_folder_is_ignored(data_dir, reference, tmp_path):
  """Cases 9 and 2: tmp leftovers, odd names, empty step folders, step 12
  (a full copy of step 4 without its commit file, newer than any step) and
  cut last lines in the JSONL logs.
  """
  workdir = copy_reference(reference, tmp_path, drop=(6, 8))
  root = CKPT(workdir)
  junk_dirs = ["6.orbax-checkpoint-tmp-1712345678", "notes", "best_7", "7",
               "10"]
  for name in junk_dirs:
    os.makedirs(os.path.join(root, name))
  with open(os.path.join(root, "6.orbax-checkpoint-tmp-1712345678", "x"),
            "w") as f:
    f.write("half a save")
  shutil.copytree(os.path.join(root, "4"), os.path.join(root, "12"))
  os.remove(os.path.join(root, "12", harness.COMMIT_FILE))
  for name in ("14", "README"):
    with open(os.path.join(root, name), "w") as f:
      f.write("not a checkpoint")
  # A kill -9 in the middle of appending a row leaves a cut last line.
  for name in (train.METRICS_FILE, train.BATCH_IDS_FILE):
    with open(os.path.join(workdir, name), "a") as f:
      f.write('{"step": 9, "lo')
  run = harness.run_to_end(workdir, data_dir)
  assert resumed_at(run, 4), run.tail()
  harness.assert_exact(workdir, reference)
  assert harness.committed_steps(workdir) == [4, 6, 8]
  for name in junk_dirs + ["12", "14", "README"]:
    assert os.path.exists(os.path.join(root, name)), name
