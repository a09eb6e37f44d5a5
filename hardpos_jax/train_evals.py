"""The trainer's evaluations: which run, when, whether a step's finished,
and model selection (the best evaluated step kept in `<workdir>/best`)."""

import contextlib
import os
from typing import Any

from clu import metric_writers
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from hardpos_jax import checkpoint
from hardpos_jax import console
from hardpos_jax import evals
from hardpos_jax import preemption
from hardpos_jax import tokenizer as tokenizer_lib
from hardpos_jax.evals import reports


def eval_names(config: ml_collections.ConfigDict) -> list[str]:
  return [n for n in config.evals.split(",") if n]


def run_evals(config: ml_collections.ConfigDict, encoders: evals.Encoders,
              params: Any, tokenizer: tokenizer_lib.Tokenizer,
              out_dir: str) -> dict[str, float]:
  """The configured evaluators on `params`; returns flat scalar summaries."""
  summaries = evals.evaluate(
      encoders, params, tokenizer, eval_names(config), out_dir=out_dir,
      data_dir=config.eval_data_dir or config.input.data_dir)
  evals.show(summaries)
  return {k: v for summary in summaries.values()
          for k, v in evals.scalars(summary).items()}


def eval_due(config: ml_collections.ConfigDict, step: int,
              total_steps: int) -> bool:
  return step == total_steps or bool(
      config.eval_every and step % config.eval_every == 0)


def evaluated(config: ml_collections.ConfigDict, out_dir: str) -> bool:
  """Whether a step's evaluation finished: the reports of every eval named
  outright and the combined table, which `evals.evaluate` writes last (the
  marker for `suite`, whose evals may have had no data), are in `out_dir`
  (process 0's view, shared so that all processes decide alike)."""
  names = [s.evaluator.name for s in evals.registry.select(eval_names(config))
           if not s.optional]
  done = all(os.path.exists(os.path.join(out_dir, f"{name}.json"))
             for name in (*names, reports.COMBINED))
  return bool(multihost_utils.broadcast_one_to_all(np.int32(done)))


def check_selection(config: ml_collections.ConfigDict) -> None:
  """Fails before training when `config.select_metric` ("<eval>/...") names
  an evaluation that `config.evals` does not run.

  With no evaluations there is nothing to select from, and nothing to check.
  """
  if not config.select_metric:
    return
  if config.select_mode not in ("max", "min"):
    raise ValueError(f"config.select_mode={config.select_mode!r}; choose "
                     "'max' or 'min'")
  names = [s.evaluator.name
           for s in evals.registry.select(eval_names(config))]
  evaluator = config.select_metric.split("/")[0]
  if names and evaluator not in names:
    raise ValueError(
        f"config.select_metric={config.select_metric!r} is a result of the "
        f"{evaluator!r} evaluation, which config.evals={config.evals!r} does "
        f"not run (it runs {names})")


def best_manager(config: ml_collections.ConfigDict, workdir: str,
                  clock: preemption.Clock) -> contextlib.AbstractContextManager:
  """`checkpoint.create_best_manager` when the run selects; else a context
  that gives None."""
  if not (config.select_metric and eval_names(config)):
    return contextlib.nullcontext()
  return checkpoint.create_best_manager(
      workdir, metric=config.select_metric, mode=config.select_mode,
      timeout_secs=config.checkpoint_timeout_secs, clock=clock)


def select_best(config: ml_collections.ConfigDict,
                best_mngr: ocp.CheckpointManager, step: int, params: Any,
                meta: dict, scalars: dict[str, float],
                writer: metric_writers.MetricWriter) -> None:
  """Offers `step`'s params to the best checkpoint and reports the standing.

  Args:
    config: the run's config; `select_metric` is a key of `scalars`.
    best_mngr: from `checkpoint.create_best_manager`.
    step: the evaluated step.
    params: its params.
    meta: the run's checkpoint meta (`meta["model"]`, the model config).
    scalars: its evaluation results (`run_evals`).
    writer: the run's metric writer.

  Raises:
    ValueError: `scalars` lacks the metric (say, a subset not selected).
  """
  metric = config.select_metric
  if metric not in scalars:
    raise ValueError(f"config.select_metric={metric!r} is not among step "
                     f"{step}'s evaluation results: {sorted(scalars)}")
  value = scalars[metric]
  best, best_value = checkpoint.save_best(
      best_mngr, step, params, meta, metric=metric, mode=config.select_mode,
      value=value)
  writer.write_scalars(step, {f"select/{metric}": value,
                              "select/best": best_value})
  console.say(f"step {step}: {metric} {value:.3f} (best {best_value:.3f} at "
              f"step {best})", lead_only=True)
