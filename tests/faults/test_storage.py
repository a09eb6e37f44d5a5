"""Case 15 of issue 8: the checkpoint storage fails while the trainer runs.

The read-only folder and the full filesystem are real mounts over the
workdir's checkpoints/ folder, made in a private user and mount namespace
(`unshare -Urm`, no root needed); the stalled writer is a FIFO planted where
orbax is about to write a step's JSON, so that its open() blocks as on a hung
network filesystem.
"""

import hashlib
import os
import shutil
import subprocess
import time

import pytest

import harness

TIMEOUT_S = 10


def _namespaces_work() -> bool:
  try:
    return subprocess.run(
        ["unshare", "-Urm", "sh", "-c", "mount -t tmpfs tmpfs /mnt"],
        capture_output=True, timeout=30).returncode == 0
  except (OSError, subprocess.TimeoutExpired):
    return False


needs_namespaces = pytest.mark.skipif(
    not _namespaces_work(),
    reason="unprivileged user and mount namespaces (unshare -Urm) are off")


def _in_namespace(script: str, path: str) -> list[str]:
  """A prefix running `script` (mounts at "$0" = `path`, then "$@")."""
  return ["unshare", "-Urm", "sh", "-c", script, path]


def _tree_digest(root: str) -> dict[str, str]:
  out = {}
  for folder, _, files in os.walk(root):
    for name in files:
      path = os.path.join(folder, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
  return out


def _resumable_copy(reference, tmp_path):
  """The reference workdir as if it had stopped after saving step 4."""
  workdir = str(tmp_path / "w")
  shutil.copytree(reference, workdir)
  for step in (6, 8):
    shutil.rmtree(os.path.join(harness.checkpoints_dir(workdir), str(step)))
  return workdir


@needs_namespaces
def test_read_only_checkpoints_fail_at_next_save(data_dir, reference,
                                                 tmp_path):
  workdir = _resumable_copy(reference, tmp_path)
  root = harness.checkpoints_dir(workdir)
  before = _tree_digest(root)
  read_only = _in_namespace('mount --bind "$0" "$0" && '
                            'mount -o remount,ro,bind "$0" "$0" && exec "$@"',
                            root)
  run = harness.start(workdir, data_dir, prefix=read_only)
  codes = run.wait()
  assert codes[0] != 0, run.tail()
  assert "Read-only file system" in run.log(), run.tail()
  assert harness.last_logged_step(workdir) >= 4
  assert _tree_digest(root) == before


@needs_namespaces
def test_full_filesystem_fails_and_keeps_earlier_saves(data_dir, tmp_path):
  """A 16 MB tmpfs holds two saves (6 MB each) of the tiny model."""
  workdir = str(tmp_path / "w")
  root = harness.checkpoints_dir(workdir)
  os.makedirs(root)
  # The tmpfs goes with the namespace: its content is copied out first.
  full = _in_namespace('mount -t tmpfs -o size=16m tmpfs "$0" && "$@"; '
                       'rc=$?; cp -a "$0" "$0.after"; exit $rc', root)
  run = harness.start(workdir, data_dir, prefix=full)
  codes = run.wait()
  assert codes[0] != 0, run.tail()
  assert "No space left on device" in run.log(), run.tail()
  after = str(tmp_path / "after")
  os.makedirs(after)
  shutil.move(root + ".after", harness.checkpoints_dir(after))
  saved = harness.committed_steps(after)
  assert saved, harness.step_dirs(after)
  for step in saved:  # Each earlier save restores in full.
    assert harness.final_params(after, step)
  print(f"FIGURES case 15: full filesystem -> exit {codes[0]}, saves {saved} "
        "intact")


def test_stalled_writer_times_out(data_dir, reference, tmp_path):
  workdir = _resumable_copy(reference, tmp_path)
  before = _tree_digest(os.path.join(harness.checkpoints_dir(workdir), "4"))
  run = harness.start(workdir, data_dir,
                      f"--config.checkpoint_timeout_secs={TIMEOUT_S}")
  fifo = os.path.join(harness.checkpoints_dir(workdir), "6", "meta",
                      "metadata")
  harness.wait_for(run, lambda: os.path.isdir(os.path.dirname(fifo)),
                   "the save of step 6")
  os.mkfifo(fifo)  # Fails the test if orbax got there first.
  planted = time.time()
  code = run.exit_code(0, timeout=TIMEOUT_S * 3 + 30)
  waited = time.time() - planted
  assert code != 0, run.tail()
  assert "timed out" in run.log(), run.tail()
  assert harness.committed_steps(workdir) == [4]
  assert _tree_digest(os.path.join(harness.checkpoints_dir(workdir), "4")) == (
      before)
  print(f"FIGURES case 15: stalled writer -> exit {code} {waited:.1f}s after "
        f"the stall (timeout {TIMEOUT_S}s)")
