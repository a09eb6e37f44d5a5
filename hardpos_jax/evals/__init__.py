"""Benchmark evaluation: registry, scoring, metrics and reports.

  registry.py   the benchmarks (EVALUATORS), what `--evals` selects, and
                `evaluate`: a selection scored with one model's params
  kinds.py      the kinds of benchmark (KINDS) and the face they share
  encoding.py   the jitted towers on a mesh (`create_encoders`), batched
  scoring.py    items -> unique images/texts -> scores; gallery ranking
  metrics.py    the papers' metric definitions on per-item scores
  reports.py    JSON, CSV, markdown and PNG per benchmark; the combined table
  <kind>.py     one file per kind of benchmark: splits, summary, table, plot

    encoders = evals.create_encoders(model_config, mesh, batch_size=256)
    summaries = evals.evaluate(encoders, params, tokenizer, ["synthetic"],
                               out_dir="reports")
    evals.show(summaries)
"""

from hardpos_jax.evals.encoding import create_encoders
from hardpos_jax.evals.encoding import Encoders
from hardpos_jax.evals.registry import evaluate
from hardpos_jax.evals.registry import Evaluator
from hardpos_jax.evals.registry import EVALUATORS
from hardpos_jax.evals.registry import get
from hardpos_jax.evals.registry import SUITE
from hardpos_jax.evals.reports import format_table
from hardpos_jax.evals.reports import plot
from hardpos_jax.evals.reports import scalars
from hardpos_jax.evals.reports import show

__all__ = ["EVALUATORS", "Encoders", "Evaluator", "SUITE", "create_encoders", "evaluate",
           "format_table", "get", "plot", "scalars", "show"]
