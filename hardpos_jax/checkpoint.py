"""Orbax checkpoints: the trainer's workdir and exported Flax params.

Workdir: `<workdir>/checkpoints/<step>/{state,meta}` written by an orbax
`CheckpointManager`: `state` holds step, params, optimizer state and the
loss's PRNG key; `meta` (JSON) the model config, the global batch size and
the seed. The input position is the step itself: the data order is a pure
function of (seed, step, global batch size), see data/input_pipeline.py.

Best: `<workdir>/best/<step>/{params,meta,metrics}`, a second manager that
keeps only the evaluated step with the best `config.select_metric` (model
selection); `restore_params(workdir, step="best")` reads it.

Flax export: a directory with `model_config.json` and `params/` (an orbax
StandardCheckpointer tree of float32 params).
"""

import json
import os
from typing import Any

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

from hardpos_jax import atomic
from hardpos_jax import preemption

MODEL_CONFIG = "model_config.json"
CHECKPOINTS = "checkpoints"
# The best step's folder under the workdir, and the `step` that names it.
BEST = "best"


def is_flax_checkpoint(path: str) -> bool:
  """An export directory or a training workdir."""
  return (os.path.isfile(os.path.join(path, MODEL_CONFIG))
          or os.path.isdir(os.path.join(path, CHECKPOINTS)))


def save_params(path: str, config: dict, params: Any) -> None:
  """Writes `config` and `params` to the directory `path` (absolute-ised).

  orbax writes into a temporary name and renames when complete, so a failed
  save leaves no `params/`; the config is written last, so a directory is
  only recognised as a checkpoint once both are there.
  """
  path = os.path.abspath(path)
  if os.path.exists(path):
    raise FileExistsError(f"{path} exists; refusing to overwrite it")
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(os.path.join(path, "params"), params)
    ckptr.wait_until_finished()
  atomic.write_text(os.path.join(path, MODEL_CONFIG),
                    json.dumps(config, indent=2))


def best_step(workdir: str) -> int | None:
  """The step of the workdir's best checkpoint; None when it keeps none."""
  if not os.path.isdir(os.path.join(os.path.abspath(workdir), BEST)):
    return None  # Checked first: opening a manager would create the folder.
  with create_best_manager(workdir) as mngr:
    return mngr.best_step()


def workdir_step(workdir: str, step: int | str | None = None) -> int:
  """`step` if the workdir has it complete, else its latest complete step;
  `step="best"`: its best step (`best_step`)."""
  if step == BEST:
    best = best_step(workdir)
    if best is None:
      raise FileNotFoundError(
          f"{workdir}: no best checkpoint in {BEST}/; the trainer keeps one "
          "when config.select_metric names a result of config.evals (e.g. "
          "--config.select_metric=synthetic/replace_macro/augmented)")
    return best
  with create_manager(workdir, save_every=1, keep=None) as mngr:
    steps = sorted(mngr.all_steps())
  if not steps or (step is not None and step not in steps):
    raise FileNotFoundError(
        f"{workdir}: no complete checkpoint"
        f"{'' if step is None else f' at step {step}'}; steps: {steps}")
  return steps[-1] if step is None else step


def _restore_item(mngr: ocp.CheckpointManager, step: int,
                  item: str) -> tuple[dict, Any]:
  """(model config, `item`) of `step`."""
  restored = mngr.restore(step, args=ocp.args.Composite(**{
      item: ocp.args.StandardRestore(), "meta": ocp.args.JsonRestore()}))
  return restored.meta["model"], restored[item]


def restore_params(path: str,
                   step: int | str | None = None) -> tuple[dict, Any]:
  """(model config, params) of an export dir, or of a workdir's `step`
  (default: its latest complete checkpoint; "best": its best one)."""
  path = os.path.abspath(path)
  if os.path.isfile(os.path.join(path, MODEL_CONFIG)):
    with open(os.path.join(path, MODEL_CONFIG)) as f:
      config = json.load(f)
    with ocp.StandardCheckpointer() as ckptr:
      return config, ckptr.restore(os.path.join(path, "params"))
  if step == BEST:
    step = workdir_step(path, BEST)
    with create_best_manager(path) as mngr:
      return _restore_item(mngr, step, "params")
  with create_manager(path, save_every=1, keep=None) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{path}: no complete checkpoint in "
                              f"{CHECKPOINTS}/")
    config, state = _restore_item(mngr, step, "state")
  return config, state["params"]


class _ClockedManager(ocp.CheckpointManager):
  """Asks the run's `preemption.Clock`, not the step, for the agreed point."""

  def __init__(self, *args, clock: preemption.Clock, **kwargs):
    self._clock = clock
    super().__init__(*args, **kwargs)

  def reached_preemption(self, step: int) -> bool:
    del step  # The clock also counts evaluation batches; see preemption.py.
    return self._clock.reached()


def _open(directory: str, item_names: tuple[str, ...], *,
          timeout_secs: int, clock: preemption.Clock | None,
          **options) -> ocp.CheckpointManager:
  """A manager of `directory` on the commit-file protocol (`create_manager`)
  with `options` (`ocp.CheckpointManagerOptions`' keywords)."""
  options = ocp.CheckpointManagerOptions(
      create=True, atomicity_options=ocp.options.AtomicityOptions(
          mode=ocp.options.AtomicityMode.COMMIT_FILE),
      async_options=ocp.AsyncOptions(timeout_secs=timeout_secs), **options)
  if clock is None:
    return ocp.CheckpointManager(directory, options=options,
                                 item_names=item_names)
  return _ClockedManager(directory, options=options, item_names=item_names,
                         clock=clock)


def create_manager(workdir: str, *, save_every: int, keep: int | None,
                   timeout_secs: int = 1200,
                   clock: preemption.Clock | None = None
                   ) -> ocp.CheckpointManager:
  """The workdir's manager; use it as a context manager so that a pending
  async save completes (or fails loudly) before the program ends.

  A step counts only once its `commit_success.txt` is written, on a local
  disk as on GCS: with orbax's default rename protocol on a local disk any
  directory with a numeric name counts as a step, so one empty `7/` (a
  half-finished copy or deletion) would make every later save before step 7
  return False without a word.

  Args:
    workdir: the training workdir; checkpoints go to `<workdir>/checkpoints`.
    save_every: steps between saves.
    keep: how many steps to keep; None keeps all.
    timeout_secs: a save whose writes have not finished by then fails (at the
      next save, or when the manager closes) instead of hanging.
    clock: the training run's preemption clock; None (reading only) keeps
      orbax's check-in with the step.
  """
  return _open(os.path.join(os.path.abspath(workdir), CHECKPOINTS),
               ("state", "meta"), timeout_secs=timeout_secs, clock=clock,
               save_interval_steps=save_every, max_to_keep=keep)


def _score(metrics: dict) -> float:
  """Higher is better: the mode travels with each step's metrics, so that
  a reader (`best_step`) needs no config to rank them."""
  return metrics["value"] if metrics["mode"] == "max" else -metrics["value"]


def create_best_manager(workdir: str, *, metric: str | None = None,
                        mode: str | None = None, timeout_secs: int = 1200,
                        clock: preemption.Clock | None = None
                        ) -> ocp.CheckpointManager:
  """The manager of `<workdir>/best`: orbax keeps the one step whose
  `_score` is highest (`save_best`), on `create_manager`'s protocol.

  Args:
    workdir: the training workdir.
    metric, mode: what the trainer will offer steps by; a workdir whose best
      step was chosen otherwise is an error. None: reading only.
    timeout_secs, clock: as `create_manager`'s.

  Raises:
    ValueError: the best step was chosen by another metric or mode.
  """
  directory = os.path.join(os.path.abspath(workdir), BEST)
  # A step without metrics (damaged) must not outlive the next save.
  mngr = _open(directory, ("params", "meta"), timeout_secs=timeout_secs,
               clock=clock, max_to_keep=1, best_fn=_score, best_mode="max",
               keep_checkpoints_without_metrics=False)
  best = mngr.best_step()
  if metric is not None and best is not None:
    chosen = mngr.metrics(best)
    if (chosen["metric"], chosen["mode"]) != (metric, mode):
      mngr.close()
      raise ValueError(
          f"{directory} holds step {best}, the best by {chosen['metric']} "
          f"({chosen['mode']}); this run selects by {metric} ({mode}). Move "
          f"{directory} aside or keep config.select_metric and select_mode.")
  return mngr


def save_best(mngr: ocp.CheckpointManager, step: int, params: Any,
              meta: dict, *, metric: str, mode: str,
              value: float) -> tuple[int, float]:
  """Offers `step`'s params with its `metric` `value`; orbax keeps the best.

  All processes must call it (orbax saves are collective). The save is
  waited for: the caller reads the best value back, and evaluations are
  rare.

  Args:
    mngr: from `create_best_manager`.
    step: the evaluated step.
    params: its params.
    meta: its meta (`meta["model"]` is the model config).
    metric: the metric's name.
    mode: "max" or "min", which `value` is best.
    value: the step's metric.

  Returns:
    (best step, its value), this one included.
  """
  # A step evaluated again (a restart redoes an evaluation whose reports are
  # missing) may be here already, and orbax refuses to save a step twice.
  if step not in mngr.all_steps():
    # force: orbax would skip a step older than the one kept.
    mngr.save(step, force=True,
              args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                      meta=ocp.args.JsonSave(meta)),
              metrics={"metric": metric, "mode": mode, "value": value})
    mngr.wait_until_finished()
  best = mngr.best_step()
  return best, mngr.metrics(best)["value"]


def _state_items(state: Any) -> dict:
  return {"step": state.step, "params": state.params,
          "opt_state": state.opt_state, "rng": state.rng}


def save(mngr: ocp.CheckpointManager, step: int, state: Any, meta: dict, *,
         force: bool = False) -> bool:
  """Saves if the manager's policy (interval or preemption) or `force` asks.

  Returns:
    Whether a save was started (it completes asynchronously).
  """
  return mngr.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(_state_items(state)),
      meta=ocp.args.JsonSave(meta)))


def _read_alone(directory: str, step: int, target: Any) -> tuple[Any, dict]:
  """Step `step`'s state (host numpy arrays shaped as `target`) and meta,
  read by this process without waiting for the others.

  orbax's restore ends in a barrier of all processes; one that fails before
  it would leave the others pairing that barrier with its next collective.
  The state is replicated, so a host copy is all a process needs.
  """
  path = os.path.join(directory, str(step))
  alone = ocp.options.MultiprocessingOptions(
      primary_host=jax.process_index(), active_processes={jax.process_index()})
  as_numpy = jax.tree_util.tree_map(
      lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  with ocp.Checkpointer(
      ocp.PyTreeCheckpointHandler(multiprocessing_options=alone),
      multiprocessing_options=alone) as ckptr:
    state = ckptr.restore(
        os.path.join(path, "state"),
        args=ocp.args.PyTreeRestore(item=target, restore_args=as_numpy))
  with ocp.Checkpointer(ocp.JsonCheckpointHandler(),
                        multiprocessing_options=alone) as ckptr:
    meta = ckptr.restore(os.path.join(path, "meta"))

  def check(key, got, want):
    if not hasattr(want, "dtype"):  # A Python number: TrainState's step.
      return got
    # orbax gives 0-d arrays back as Python numbers.
    got = np.asarray(got, want.dtype) if np.ndim(got) == 0 else got
    if got.shape != want.shape or got.dtype != want.dtype:
      raise ValueError(f"{jax.tree_util.keystr(key)} is {got.dtype} "
                       f"{got.shape}; the model needs {want.dtype} "
                       f"{want.shape}")
    return got

  state = jax.tree_util.tree_map_with_path(check, state, target)
  return state, meta


def _restore_everywhere(mngr: ocp.CheckpointManager, step: int,
                        target: Any) -> tuple[Any, dict] | None:
  """`step` as (host state, meta), or None (logged) if any process failed.

  All processes agree, so that none trains on from a step that another could
  not read.
  """
  try:
    restored = _read_alone(str(mngr.directory), step, target)
  except Exception as e:  # pylint: disable=broad-exception-caught
    # orbax raises many types for damaged files; all mean "not this step".
    logging.error("Checkpoint step %d in %s does not restore on process %d "
                  "(%s: %s).", step, mngr.directory, jax.process_index(),
                  type(e).__name__, e)
    restored = None
  ok = multihost_utils.process_allgather(np.int32(restored is not None))
  return restored if ok.all() else None


def _move_aside(mngr: ocp.CheckpointManager, steps: list[int]) -> None:
  """Renames unreadable `steps` to `<step>.corrupt[.n]`, kept for inspection.

  Left under its own name, a bad step would still be the latest one: orbax
  would skip every save up to it and refuse to save that step again.
  """
  if steps and jax.process_index() == 0:
    for step in steps:
      path = os.path.join(mngr.directory, str(step))
      aside = path + ".corrupt"
      n = 0
      while os.path.exists(aside):
        n += 1
        aside = f"{path}.corrupt.{n}"
      os.rename(path, aside)
      logging.error("Moved the unreadable checkpoint step %d to %s.", step,
                    aside)
  if steps:
    multihost_utils.sync_global_devices("hardpos_jax_checkpoint_move_aside")
    mngr.reload()


def restore_latest(mngr: ocp.CheckpointManager,
                   state: Any) -> tuple[Any, dict] | None:
  """The newest checkpoint that restores on every process, as host arrays
  shaped as `state`'s (place them with `sharding.replicate`).

  A step that fails to restore (truncated or missing files) is logged and the
  previous one is tried: orbax itself does not fall back. Once an older step
  restores, the newer bad ones are renamed `<step>.corrupt` (never deleted);
  if none restores (say the model config changed) nothing is renamed.

  Returns:
    (state, meta), or None when the workdir has no checkpoint yet.

  Raises:
    RuntimeError: checkpoints exist but none restores.
  """
  target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                  _state_items(state))
  steps = sorted(mngr.all_steps(), reverse=True)
  for i, step in enumerate(steps):
    restored = _restore_everywhere(mngr, step, target)
    if restored is not None:
      _move_aside(mngr, steps[:i])
      items, meta = restored
      return state.replace(**items), meta
  if steps:
    raise RuntimeError(f"No checkpoint in {mngr.directory} restores (tried "
                       f"steps {steps}); see the errors above")
  return None
