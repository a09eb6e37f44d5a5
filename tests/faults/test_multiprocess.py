"""Cases 5, 8, 11 and 13 of issue 8: two trainer processes on localhost.

Each process of a 2-process run has one fake CPU device, so a run computes
what the 1-process, 2-device `reference` does, bit for bit.
"""

import os
import shutil
import signal
import time

import pytest

import harness
from hardpos_jax import train

pytestmark = pytest.mark.slow

HEARTBEAT_S = 10

# Runs the trainer's __main__ with checkpoint step $BLIND_STEP unreadable on
# process $BLIND_PROCESS alone, as a host with a stale or damaged cache of
# shared storage would see it.
ONE_BLIND = """
import os, runpy
import jax
import orbax.checkpoint as ocp

# The array reader every orbax restore path ends in, as a real read error.
restore = ocp.PyTreeCheckpointHandler.restore

def blind(self, directory, *args, **kwargs):
  step = os.path.basename(os.path.dirname(os.fspath(directory)))
  if (jax.process_index() == int(os.environ["BLIND_PROCESS"])
      and step == os.environ["BLIND_STEP"]):
    raise OSError(f"simulated: {directory} unreadable on this host")
  return restore(self, directory, *args, **kwargs)

ocp.PyTreeCheckpointHandler.restore = blind
runpy.run_module("hardpos_jax.train", run_name="__main__", alter_sys=True)
"""


def _copy(workdir, tmp_path, name):
  out = str(tmp_path / name)
  shutil.copytree(workdir, out)
  return out


@pytest.fixture(scope="module")
def preempted_pair(data_dir, tmp_path_factory):
  """2 processes; process 1 got SIGTERM in step 1: (workdir, run, codes)."""
  workdir = str(tmp_path_factory.mktemp("pair") / "w")
  run = harness.start(workdir, data_dir, "--config.checkpoint_every=1000",
                      processes=2)
  # Sent while step 1 compiles, so that the agreed step comes before the end.
  harness.wait_for(run, harness.has_started(run, workdir), "step 1")
  run.signal(signal.SIGTERM, process=1)
  return workdir, run, run.wait()


def test_sigterm_to_one_of_two_processes(preempted_pair, data_dir, reference,
                                         tmp_path):
  """Case 5: both save the agreed step and exit preempted; resume exactly."""
  workdir, run, codes = preempted_pair
  assert codes == [train.PREEMPTED_EXIT_CODE] * 2, run.tail(0) + run.tail(1)
  saved = harness.committed_steps(workdir)[-1]
  for process in (0, 1):
    assert f"Preempted; saved step {saved} in" in run.log(process)
  assert harness.last_logged_step(workdir) == saved
  workdir = _copy(workdir, tmp_path, "resumed")
  run = harness.run_to_end(workdir, data_dir, processes=2)
  assert f"Training steps {saved}..{harness.TOTAL_STEPS}" in run.log(1)
  harness.assert_exact(workdir, reference)
  print(f"FIGURES case 5: SIGTERM to process 1 of 2 -> both saved step "
        f"{saved} and exited {train.PREEMPTED_EXIT_CODE}; 2-process resume "
        "exact")


def test_two_process_checkpoint_resumed_by_one(preempted_pair, data_dir,
                                               reference, tmp_path):
  """Case 11, 2 -> 1: an exact elastic resume."""
  workdir, _, _ = preempted_pair
  saved = harness.committed_steps(workdir)[-1]
  workdir = _copy(workdir, tmp_path, "one")
  run = harness.run_to_end(workdir, data_dir)
  assert f"Training steps {saved}..{harness.TOTAL_STEPS}" in run.log()
  harness.assert_exact(workdir, reference)


def test_dead_peer_stops_the_survivor_then_both_resume(data_dir, reference,
                                                       tmp_path):
  """Cases 13 and 11 (1 -> 2): kill -9 on process 1; process 0 must not hang.

  The pair starts from the 1-process reference's step 4, so its first leg is
  also the 1 -> 2 elastic resume; one workdir serves both cases to spare a
  2-process launch (about a minute here).
  """
  workdir = _copy(reference, tmp_path, "w")
  for step in (6, 8):
    shutil.rmtree(os.path.join(harness.checkpoints_dir(workdir), str(step)))
  heartbeat = f"--heartbeat_timeout_seconds={HEARTBEAT_S}"
  run = harness.start(workdir, data_dir, heartbeat, processes=2)
  harness.wait_for(run, harness.has_trained(run, workdir, 5), "step 5")
  assert f"Training steps 4..{harness.TOTAL_STEPS}" in run.log(0)
  run.procs[1].kill()
  killed = time.time()
  code = run.exit_code(0, timeout=HEARTBEAT_S * 3 + 30)
  waited = time.time() - killed
  assert code != 0, run.tail(0)
  resume = harness.committed_steps(workdir)[-1]
  run = harness.run_to_end(workdir, data_dir, heartbeat, processes=2)
  assert f"Training steps {resume}..{harness.TOTAL_STEPS}" in run.log(0)
  harness.assert_exact(workdir, reference)
  print(f"FIGURES case 13: survivor exited {code} {waited:.1f}s after its "
        f"peer was killed (heartbeat {HEARTBEAT_S}s); resumed at {resume}, "
        "exact")


def test_step_only_one_process_cannot_read(data_dir, reference, tmp_path):
  """Case 8 on two processes: step 6 restores on process 0, not on 1.

  Neither may train on from a step the other lacks: both fall back to step 4,
  step 6 is set aside, and the run ends exactly.
  """
  workdir = _copy(reference, tmp_path, "w")
  shutil.rmtree(os.path.join(harness.checkpoints_dir(workdir), "8"))
  run = harness.run_to_end(workdir, data_dir, processes=2,
                           command=("-c", ONE_BLIND),
                           env={"BLIND_PROCESS": "1", "BLIND_STEP": "6"})
  assert "does not restore on process 1" in run.log(1)
  for process in (0, 1):
    assert f"Training steps 4..{harness.TOTAL_STEPS}" in run.log(process)
  assert os.path.isdir(
      os.path.join(harness.checkpoints_dir(workdir), "6.corrupt"))
  harness.assert_exact(workdir, reference)
  print("FIGURES case 8 (2 processes): step 6 unreadable on process 1 only "
        "-> both resumed at step 4, step 6 set aside, exact")
