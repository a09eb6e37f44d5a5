"""Drives the trainer as real subprocesses for the fault-injection tests.

Every run is `python -m hardpos_jax.train` on the tiny demo recipe with
`log_batch_ids` on, so a workdir records which examples each step trained on.
"Exact resume" (issue 8) is checked by `assert_exact`: the same per-step
caption ids as the uninterrupted run, no step skipped or repeated, the same
final step and bit-identical parameters.
"""

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

import flax.traverse_util
import jax
import numpy as np
import orbax.checkpoint as ocp

from hardpos_jax import checkpoint
from hardpos_jax import train as train_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
# Steps and save interval of every run unless a test says otherwise.
TOTAL_STEPS = 8
EVERY = 2
# Fake CPU devices of every run. gloo across processes is slow here with
# more than one device per process (seconds per step), so 2 processes get 1.
DEVICES = 2
# Longest a single trainer process may take before the test fails.
RUN_TIMEOUT = 240
POLL_S = 0.002
COMMIT_FILE = "commit_success.txt"


@dataclasses.dataclass
class Run:
  """One trainer launch: its processes and their stderr logs."""

  procs: list[subprocess.Popen]
  logs: list[str]
  started: float

  def wait(self, timeout: float = RUN_TIMEOUT) -> list[int]:
    """Exit codes, in process order; fails the test if one hangs."""
    deadline = time.time() + timeout
    codes = []
    for i, proc in enumerate(self.procs):
      try:
        codes.append(proc.wait(max(1.0, deadline - time.time())))
      except subprocess.TimeoutExpired as e:
        self.kill()
        raise AssertionError(f"process {i} of {len(self.procs)} still running"
                             f" after {timeout}s:\n{self.tail(i)}") from e
    return codes

  def exit_code(self, process: int, timeout: float) -> int:
    """Process `process`'s exit code; kills the run if it hangs past `timeout`.
    """
    try:
      return self.procs[process].wait(timeout)
    except subprocess.TimeoutExpired as e:
      self.kill()
      raise AssertionError(f"process {process} hangs {timeout}s on:\n"
                           f"{self.tail(process)}") from e

  def running(self) -> bool:
    return any(p.poll() is None for p in self.procs)

  def signal(self, sig: int, process: int = 0) -> None:
    self.procs[process].send_signal(sig)

  def kill(self) -> None:
    """kill -9 on every process still running, then reaps them."""
    for proc in self.procs:
      if proc.poll() is None:
        proc.kill()
    for proc in self.procs:
      proc.wait()

  def tail(self, process: int = 0, chars: int = 4000) -> str:
    with open(self.logs[process], errors="replace") as f:
      return f.read()[-chars:]

  def log(self, process: int = 0) -> str:
    with open(self.logs[process], errors="replace") as f:
      return f.read()


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start(workdir: str, data_dir: str, *overrides: str, processes: int = 1,
          env: dict[str, str] | None = None, prefix: Sequence[str] = (),
          command: Sequence[str] = ("-m", "hardpos_jax.train")) -> Run:
  """Launches the trainer on `workdir` (tiny demo, batch ids logged).

  Every run has `DEVICES` fake CPU devices in all, split over its processes:
  a 2-process run then computes bit for bit what a 1-process run does.

  Args:
    workdir: the training workdir.
    data_dir: a TFDS dir holding synthetic_shapes/tiny.
    *overrides: more flags, e.g. `--config.KEY=VALUE` (later ones win).
    processes: processes of one run, joined on localhost with gloo.
    env: extra environment variables.
    prefix: a command that runs the interpreter, e.g. `unshare ...`.
    command: what follows the interpreter; the trainer's flags come after.

  Compiled programs are cached next to `data_dir` for the whole suite.
  """
  os.makedirs(workdir, exist_ok=True)
  cache = os.path.join(os.path.dirname(data_dir), "jax_cache")
  base_env = {**os.environ, **(env or {}),
              "JAX_COMPILATION_CACHE_DIR": cache,
              "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
              "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
              "XLA_FLAGS": "--xla_force_host_platform_device_count="
                           f"{DEVICES // processes}",
              "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
              "TF_CPP_MIN_LOG_LEVEL": "2"}
  flags_ = [f"--workdir={workdir}", "--config=configs/pos_neg.py:demo,tiny",
            f"--config.input.data_dir={data_dir}", "--config.evals=",
            "--config.log_batch_ids=True",
            f"--config.total_steps={TOTAL_STEPS}",
            f"--config.checkpoint_every={EVERY}", *overrides]
  port = free_port()
  procs, logs = [], []
  stamp = time.strftime("%H%M%S") + f"{time.time() % 1:.3f}"[1:]
  for i in range(processes):
    multi = ([f"--coordinator_address=localhost:{port}",
              f"--num_processes={processes}", f"--process_id={i}"]
             if processes > 1 else [])
    log = os.path.join(os.path.dirname(workdir),
                       f"{os.path.basename(workdir)}.{stamp}.p{i}.log")
    with open(log, "w") as out:
      procs.append(subprocess.Popen(
          [*prefix, sys.executable, *command, *flags_, *multi], cwd=ROOT,
          env=base_env,
          stdout=out, stderr=subprocess.STDOUT))
    logs.append(log)
  return Run(procs, logs, time.time())


def run_to_end(workdir: str, data_dir: str, *overrides: str, **kwargs) -> Run:
  """Runs the trainer to the end; fails the test unless all exit 0."""
  run = start(workdir, data_dir, *overrides, **kwargs)
  codes = run.wait()
  assert codes == [0] * len(codes), f"exit codes {codes}:\n{run.tail()}"
  return run


def wait_for(run: Run, condition: Callable[[], bool], what: str,
             timeout: float = RUN_TIMEOUT) -> None:
  """Polls `condition` until true; fails if the run ends or time runs out."""
  deadline = time.time() + timeout
  while not condition():
    if not run.running():
      raise AssertionError(f"the run ended ({[p.returncode for p in run.procs]}"
                           f") before {what}:\n{run.tail()}")
    if time.time() > deadline:
      run.kill()
      raise AssertionError(f"no {what} after {timeout}s:\n{run.tail()}")
    time.sleep(POLL_S)


# ----------------------------------------------------------- the workdir ---


def rows(workdir: str, name: str) -> list[dict]:
  """The complete JSONL rows of `name` in `workdir` (a cut last line is not)."""
  path = os.path.join(workdir, name)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = f.readlines()
  return [json.loads(line) for line in lines if line.endswith("\n")]


def batch_ids(workdir: str) -> list[dict]:
  return rows(workdir, train_lib.BATCH_IDS_FILE)


def last_logged_step(workdir: str) -> int:
  """The last step whose metrics row was written (0 if none)."""
  logged = rows(workdir, train_lib.METRICS_FILE)
  return logged[-1]["step"] if logged else 0


def has_trained(run: Run, workdir: str, step: int) -> Callable[[], bool]:
  """Whether `run` itself has logged `step` (a restart first truncates the
  rows of earlier runs, which rewrites the file)."""
  path = os.path.join(workdir, train_lib.METRICS_FILE)
  return lambda: (os.path.exists(path)
                  and os.path.getmtime(path) > run.started
                  and last_logged_step(workdir) >= step)


def has_started(run: Run, workdir: str) -> Callable[[], bool]:
  """Whether `run` has read the batch of its first step (and is compiling)."""
  path = os.path.join(workdir, train_lib.BATCH_IDS_FILE)
  return lambda: (os.path.exists(path)
                  and os.path.getmtime(path) > run.started
                  and bool(batch_ids(workdir)))


def checkpoints_dir(workdir: str) -> str:
  return os.path.join(workdir, checkpoint.CHECKPOINTS)


def step_dirs(workdir: str) -> dict[int, bool]:
  """{step: committed} for every numeric directory under checkpoints/."""
  root = checkpoints_dir(workdir)
  if not os.path.isdir(root):
    return {}
  out = {}
  for name in os.listdir(root):
    if name.isdigit() and os.path.isdir(os.path.join(root, name)):
      out[int(name)] = os.path.exists(os.path.join(root, name, COMMIT_FILE))
  return out


def committed_steps(workdir: str) -> list[int]:
  return sorted(s for s, done in step_dirs(workdir).items() if done)


def uncommitted_steps(workdir: str) -> list[int]:
  return sorted(s for s, done in step_dirs(workdir).items() if not done)


def final_params(workdir: str,
                 step: int | None = None) -> dict[str, np.ndarray]:
  """The workdir's params at `step` (default: the latest committed), on host.

  Read as numpy, so a checkpoint of any process or device count compares.
  """
  path = os.path.join(checkpoints_dir(workdir),
                      str(step or committed_steps(workdir)[-1]), "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    as_numpy = jax.tree.map(
        lambda _: ocp.RestoreArgs(restore_type=np.ndarray),
        ckptr.metadata(path).item_metadata.tree)
    state = ckptr.restore(path, args=ocp.args.PyTreeRestore(
        restore_args=as_numpy))
  return flax.traverse_util.flatten_dict(state["params"], sep="/")


def assert_exact(workdir: str, reference: str) -> None:
  """`workdir` ended exactly where the uninterrupted `reference` did."""
  ids, ref_ids = batch_ids(workdir), batch_ids(reference)
  assert [r["step"] for r in ids] == list(range(1, TOTAL_STEPS + 1)), (
      f"steps logged in {workdir}: {[r['step'] for r in ids]}")
  for got, want in zip(ids, ref_ids, strict=True):
    assert got == want, f"step {want['step']}: trained on {got}, not {want}"
  assert committed_steps(workdir)[-1] == TOTAL_STEPS
  got, want = final_params(workdir), final_params(reference)
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def max_resume_loss(resumed_at: int, last_logged: int,
                    every: int = EVERY) -> int:
  """Saves lost, given the step a restart resumed at and the last logged one.

  Every save up to the last multiple of `every` below `last_logged` had
  started when that row was written, and orbax keeps at most one save in
  flight, so a correct trainer loses at most that one.
  """
  started = (max(last_logged - 1, 0) // every) * every
  return max(0, (started - resumed_at) // every)


def sigkill(run: Run) -> None:
  """kill -9 on process 0 of `run` and reaps it."""
  run.signal(signal.SIGKILL)
  run.procs[0].wait()
