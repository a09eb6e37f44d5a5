"""Training: `python -m hardpos_jax.train --config=configs/pos_neg.py --workdir=DIR`.

`train_and_evaluate(config, workdir)` is the whole run (the tests and Colab
call it directly); `main` only parses flags, hides GPUs from TF, joins the
distributed runtime and calls it. Starting on a workdir with checkpoints
resumes from the newest one that restores, on exactly the batch the
interrupted run would have seen next. With `config.select_metric` set, each
evaluated step is offered to `<workdir>/best`, which keeps the best one
(`hardpos_jax.load(workdir, step="best")`).
"""

import json
import math
import os
import signal
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
from jax.experimental import multihost_utils
import ml_collections
from ml_collections import config_flags
import tensorflow as tf
import tensorflow_datasets as tfds

from hardpos_jax import api
from hardpos_jax import atomic
from hardpos_jax import checkpoint
from hardpos_jax import console
from hardpos_jax import evals
from hardpos_jax import preemption
from hardpos_jax import sharding
from hardpos_jax import tokenizer as tokenizer_lib
from hardpos_jax import train_evals
from hardpos_jax import train_step as ts
from hardpos_jax.data import input_pipeline
from hardpos_jax.models import clip

# Exit status after a preemption save, so launchers know to retry.
PREEMPTED_EXIT_CODE = 42
METRICS_FILE = "metrics.jsonl"
# Metrics of the console's step lines, when the step reports them.
CONSOLE_METRICS = ("loss", "i2t_acc", "t2i_acc", "logit_scale")
# Each step's caption ids, when `config.log_batch_ids` is on.
BATCH_IDS_FILE = "batch_ids.jsonl"


def initial_params(config: ml_collections.ConfigDict) -> Any:
  """Random params (`from_scratch`) or `config.init`'s, checked to match."""
  if config.from_scratch:
    return clip.init_params(config.model.to_dict(),
                            jax.random.PRNGKey(config.seed))
  if config.init is None:
    raise ValueError("Set --config.init=PATH (an OpenAI .pt, HF directory, "
                     "open_clip file or Flax export) or "
                     "--config.from_scratch=True")
  got, params = api.load_params(config.init)
  # The tokenizer's ids must index the checkpoint's token embedding.
  api.load_tokenizer(config.init, got, config.vocab)
  want = json.loads(json.dumps(config.model.to_dict()))
  if got != want:
    diff = {k: (got[k], want[k]) for k in want if got.get(k) != want[k]}
    raise ValueError(f"{config.init} is not the configured model; "
                     f"(checkpoint, config.model) differ at {diff}")
  return params


def num_train_steps(config: ml_collections.ConfigDict,
                    steps_per_epoch: int) -> int:
  if config.total_steps is not None:
    return config.total_steps
  return config.num_epochs * steps_per_epoch


def _host_scalars(metrics: dict[str, jax.Array]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _check_finite(pending: list[tuple[int, jax.Array]], last_saved: Any):
  """Raises on the first non-finite (step, [loss, grad_norm]) in `pending`.

  Finite loss and gradients (and a finite lr) make finite new params, so a
  checkpoint taken after this check holds no NaN.
  """
  for step, values in pending:
    loss, grad_norm = (float(v) for v in values)
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      raise FloatingPointError(
          f"Loss {loss}, gradient norm {grad_norm} at step {step}; stopping. "
          f"The last checkpoint (step {last_saved}) is intact.")


def _truncate_rows(path: str, step: int) -> None:
  """Drops JSONL rows past `step` (logged by a run that died before saving).

  A last line without its newline was cut by a kill mid-write and is dropped;
  any other line that does not parse is an error.
  """
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  if lines and not lines[-1].endswith("\n"):
    logging.warning("%s: dropping a cut last line %r", path, lines.pop())
  rows = []
  for number, line in enumerate(lines, 1):
    try:
      if json.loads(line)["step"] <= step:
        rows.append(line)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise ValueError(f"{path}, line {number}: not a row with a step "
                       f"({e}): {line!r:.200}") from e
  atomic.write_text(path, "".join(rows))


def _step_line(step: int, total: int, row: dict, seconds: float) -> str:
  """"step 40/250  loss 3.412  i2t_acc 0.125 ...  410 ex/s  ETA 1m05s"."""
  shown = "  ".join(f"{k} {row[k]:.3f}" for k in CONSOLE_METRICS if k in row)
  eta = int((total - step) / max(row["steps_per_sec"], 1e-9))
  width = len(str(total))
  return (f"step {step:{width}d}/{total}  {shown}  "
          f"{row['examples_per_sec']:.0f} ex/s  ETA {eta // 60}m{eta % 60:02d}s"
          f"  ({seconds:.0f} s)")


def _append_row(path: str, row: dict) -> None:
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")


def _log_batch_ids(path: str, step: int, caption_ids: jax.Array) -> None:
  """Appends the caption ids of the batch that made `step` (all processes')."""
  ids = multihost_utils.process_allgather(caption_ids, tiled=True)
  if jax.process_index() == 0:
    _append_row(path, {"step": step, "caption_ids": ids.tolist()})


def _check_sigterm_handler(last_saved: int | None) -> None:
  """Raises if Python code took SIGTERM from the distributed runtime.

  The runtime turns SIGTERM into orbax's preemption save; a later
  `signal.signal(SIGTERM, ...)` silently replaces that (docs/RELIABILITY.md).
  """
  handler = signal.getsignal(signal.SIGTERM)
  if jax.distributed.is_initialized() and callable(handler):
    raise RuntimeError(
        f"A Python SIGTERM handler ({handler!r}) was installed after "
        "jax.distributed.initialize(): it disables orbax's preemption save. "
        "Remove it; the trainer saves and exits with code "
        f"{PREEMPTED_EXIT_CODE} on SIGTERM by itself. The last checkpoint "
        f"(step {last_saved}) is intact.")


def check_sizes(config: ml_collections.ConfigDict) -> None:
  """The pipeline must make what the model takes; says which keys differ.

  Without this, a mismatch surfaces as a broadcast error inside the ViT.
  `input.text_length` may be shorter than the model's context (exact with
  a causal mask and EOT pooling, see README), never longer.
  """
  image, model_image = config.input.image_size, config.model.image_size
  if image != model_image:
    raise ValueError(f"config.input.image_size={image} but "
                     f"config.model.image_size={model_image}; set both")
  length, context = (config.input.text_length,
                     config.model.text.context_length)
  if not 0 < length <= context:
    raise ValueError(f"config.input.text_length={length} must be in [1, "
                     f"config.model.text.context_length={context}]")
  rows = input_pipeline.batch_rows(config.input, config.batch_size)
  if config.accum_steps < 1 or rows % (config.accum_steps * jax.device_count()):
    raise ValueError(
        f"config.accum_steps={config.accum_steps} micro-batches of the "
        f"{rows} rows of a step must each split evenly over the "
        f"{jax.device_count()} devices")


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> ts.TrainState:
  """Trains (resuming from `workdir` if it has checkpoints), evaluating every
  `eval_every` steps and at the end, and keeping the best evaluated step by
  `config.select_metric` in `<workdir>/best`.

  A run resumed at a step whose evaluation a preemption cut short evaluates
  it first. Restarting a finished run evaluates only what is missing.

  Raises:
    preemption.Preempted: after saving at the point all hosts agreed on, a
      training step or a batch of an evaluation.
    FloatingPointError: a loss became NaN/inf; the last checkpoint is intact.
    ValueError: `config.select_metric` is not among the evaluation results.
  """
  check_sizes(config)
  train_evals.check_selection(config)
  workdir = os.path.abspath(workdir)
  lead = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  config = config.copy_and_resolve_references()
  if config.input.data_dir is None:
    config.input.data_dir = os.path.join(workdir, "tfds")
  if lead:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  mesh = sharding.create_mesh()
  tokenizer = tokenizer_lib.Tokenizer(config.vocab)
  source = input_pipeline.data_source(config.input.dataset,
                                      config.input.split,
                                      config.input.data_dir)
  total_steps = num_train_steps(config, input_pipeline.steps_per_epoch(
      config.input, source, config.batch_size))
  state = ts.create_train_state(config, initial_params(config),
                                jax.random.PRNGKey(config.seed), total_steps)
  meta = {"model": config.model.to_dict(), "seed": config.seed,
          "global_batch_size": config.batch_size,
          "process_count": jax.process_count()}
  metrics_path = os.path.join(workdir, METRICS_FILE)
  ids_path = os.path.join(workdir, BATCH_IDS_FILE)
  writer = metric_writers.create_default_writer(workdir, just_logging=not lead)
  clock = preemption.Clock()
  # Built once: each evaluation reuses the compiled towers.
  encoders = evals.create_encoders(
      config.model.to_dict(), mesh, config.eval_batch_size,
      before_batch=clock.check)
  _check_sigterm_handler(last_saved=None)
  with checkpoint.create_manager(
      workdir, save_every=config.checkpoint_every,
      keep=config.keep_checkpoints,
      timeout_secs=config.checkpoint_timeout_secs, clock=clock) as mngr, (
          train_evals.best_manager(config, workdir, clock)) as best_mngr:
    restored = checkpoint.restore_latest(mngr, state)
    if restored is not None:
      state, saved_meta = restored
      if saved_meta["global_batch_size"] != config.batch_size:
        raise ValueError(
            f"{workdir} was trained with global batch "
            f"{saved_meta['global_batch_size']} ({saved_meta['process_count']}"
            f" processes); resuming with {config.batch_size} would change the "
            "data order. Keep batch_size; the process count may change.")
    state = sharding.replicate(state, mesh)
    start = int(state.step)
    console.say(f"Training steps {start}..{total_steps} in {workdir}")
    if lead:
      _truncate_rows(metrics_path, start)
      _truncate_rows(ids_path, start)
    batches = input_pipeline.create_train_iterator(
        config.input, tokenizer=tokenizer, mesh=mesh,
        global_batch_size=config.batch_size, seed=config.seed,
        start_step=start, text_bucket=clip.text_bucket(config.model))
    step_fn = ts.make_train_step(config, mesh)
    lr_fn = ts.create_learning_rate_fn(config.optim, total_steps)
    progress = periodic_actions.ReportProgress(num_train_steps=total_steps,
                                               writer=writer)
    last_saved = mngr.latest_step()

    def evaluate_at(step: int, state: ts.TrainState,
                    last_saved: int | None) -> None:
      """Evaluates `state` (at `step`) and offers it to the best checkpoint;
      at a preemption point inside, saves it unless `last_saved` is `step`
      already, and stops."""
      out_dir = os.path.join(workdir, "eval", str(step))
      try:
        scalars = train_evals.run_evals(config, encoders, state.params,
                                        tokenizer, out_dir)
      except preemption.Preempted:
        if last_saved != step:
          checkpoint.save(mngr, step, state, meta, force=True)
        mngr.wait_until_finished()
        raise preemption.Preempted(
            f"Preempted during the evaluation of step {step}; saved step "
            f"{step} in {workdir}") from None
      writer.write_scalars(step, scalars)
      if best_mngr is not None:
        train_evals.select_best(config, best_mngr, step, state.params, meta,
                                scalars, writer)

    if (restored is not None
        and train_evals.eval_due(config, start, total_steps)
        and not train_evals.evaluated(
            config, os.path.join(workdir, "eval", str(start)))):
      console.say(f"Evaluating step {start} first: its evaluation did not "
                  "finish.")
      evaluate_at(start, state, last_saved)
    pending, tick, began = [], time.time(), time.time()
    for step in range(start, total_steps):
      batch = next(batches)
      done = step + 1
      if config.log_batch_ids:
        _log_batch_ids(ids_path, done, batch["caption_id"])
      state, metrics = step_fn(state, batch)
      # Before should_save, which asks the clock (checkpoint.create_manager).
      preempted = clock.tick()
      pending.append((done, (metrics["loss"], metrics["grad_norm"])))
      progress(done)
      if done % config.log_every == 0 or done == total_steps:
        _check_finite(pending, last_saved)
        pending = []
        row = _host_scalars(metrics)
        elapsed, tick = time.time() - tick, time.time()
        row.update(lr=float(lr_fn(step)),
                   steps_per_sec=config.log_every / elapsed,
                   examples_per_sec=config.log_every * config.batch_size
                   / elapsed)
        writer.write_scalars(done, row)
        if lead:
          _append_row(metrics_path, {"step": done, **row})
          print(_step_line(done, total_steps, row, time.time() - began),
                flush=True)
      if mngr.should_save(done) or done == total_steps:
        _check_finite(pending, last_saved)
        pending = []
        checkpoint.save(mngr, done, state, meta, force=done == total_steps)
        last_saved = done
      if preempted:
        mngr.wait_until_finished()
        raise preemption.Preempted(
            f"Preempted; saved step {done} in {workdir}")
      _check_sigterm_handler(last_saved)
      if train_evals.eval_due(config, done, total_steps):
        if done == total_steps:
          mngr.wait_until_finished()  # Saved before a long final evaluation.
        evaluate_at(done, state, last_saved)
    mngr.wait_until_finished()
  writer.flush()
  return state


def main(argv):
  del argv
  tf.config.set_visible_devices([], "GPU")
  tfds.disable_progress_bar()
  log_dir = console.log_to(flags.FLAGS.workdir, "train")
  sharding.initialize_distributed(flags.FLAGS.coordinator_address,
                         flags.FLAGS.num_processes, flags.FLAGS.process_id,
                         flags.FLAGS.heartbeat_timeout_seconds)
  if jax.process_index() == 0:
    print(f"Full log: {os.path.join(log_dir, 'train.INFO')}", flush=True)
  try:
    train_and_evaluate(flags.FLAGS.config, flags.FLAGS.workdir)
  except preemption.Preempted as e:
    logging.warning("%s", e)
    sys.exit(PREEMPTED_EXIT_CODE)
  except Exception:  # pylint: disable=broad-exception-caught
    # orbax's threads of a failed or stalled save (read-only, full or hung
    # storage) may never end, and Python waits for them at exit: leave now.
    # The `with` around the checkpoint manager has already finished or failed
    # every save.
    logging.exception("Training failed; exiting with status 1.")
    logging.flush()
    os._exit(1)  # pylint: disable=protected-access


if __name__ == "__main__":
  # Defined here, not at import, so tests and notebooks can import this.
  config_flags.DEFINE_config_file("config", None, "Recipe file[:arg].",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Checkpoints, logs and evaluations.")
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0, for a hand-launched "
                      "multi-process run; default: detect the cluster.")
  flags.DEFINE_integer("num_processes", None,
                       "Processes of a hand-launched run.")
  flags.DEFINE_integer("process_id", None, "This process's index in [0, "
                       "num_processes).")
  flags.DEFINE_integer("heartbeat_timeout_seconds", 100,
                       "A process whose peer is silent this long stops.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
