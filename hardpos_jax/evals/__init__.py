"""Registered benchmark evaluators.

    encoders = evals.create_encoders(model_config, mesh, batch_size=256)
    summary = evals.get("hard_positives").evaluate(
        encoders, params, tokenizer, data_dir=..., out_dir=...)
    print(evals.format_table(summary))

Names (EVALUATORS):
  hard_positives   the released benchmark (TFDS `hard_positives`, manual)
  synthetic        the same three subsets from `synthetic_shapes_benchmark`'s
                   test splits (config `default`); nothing to download
  synthetic_tiny   the same from its `tiny` config, for tests and smoke runs
  sugar_crepe      SugarCrepe's seven subsets (TFDS `sugar_crepe`, manual)
  retrieval_coco   COCO 5k (Karpathy test) image<->text Recall@1/5/10
                   (TFDS `coco_captions/2014`)
  zeroshot_cifar10, zeroshot_cifar100, zeroshot_imagenet
                   zero-shot top-1/top-5 with OpenAI's prompt ensembles
                   (TFDS `cifar10`, `cifar100`, `imagenet2012`, manual)

With `out_dir`, an evaluation writes `<name>.json` (the summary),
`<name>_scores.csv` (subset, index and the kind's SCORE_COLUMNS: s_c, s_n[,
s_p]; retrieval ranks; zero-shot label, prediction and rank), `<name>.md`
(the table) and `<name>.png` (the plot), each written under a temporary
name and renamed, by process 0 only.
"""

from collections.abc import Mapping
import csv
import dataclasses
import json
import os
import time
from types import ModuleType
from typing import Any

from absl import logging
import jax
import numpy as np

from hardpos_jax import atomic
from hardpos_jax.data import input_pipeline
from hardpos_jax.evals import hard_positives
from hardpos_jax.evals import retrieval
from hardpos_jax.evals import scoring
from hardpos_jax.evals import sugar_crepe
from hardpos_jax.evals import zeroshot
from hardpos_jax.evals.scoring import create_encoders, Encoders

# Each kind of benchmark: its scorer (`score_split`), CSV columns
# (SCORE_COLUMNS), summary, table and plot.
KINDS: dict[str, ModuleType] = {
    "hard_positives": hard_positives,
    "sugar_crepe": sugar_crepe,
    "retrieval": retrieval,
    "zeroshot": zeroshot,
}


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """A benchmark: which splits to score and how to report them.

  Attributes:
    name: the registry name; output files are named after it.
    kind: a key of KINDS.
    splits: {subset: (TFDS dataset with config, split)}.
  """

  name: str
  kind: str
  splits: Mapping[str, tuple[str, str]]

  def evaluate(self, encoders: Encoders, params: Any, tokenizer: Any, *,
               data_dir: str | None = None, manual_dir: str | None = None,
               out_dir: str | None = None) -> dict:
    """Scores every subset and summarises; writes the reports to `out_dir`.

    Args:
      encoders: from `create_encoders` for the model's config.
      params: the model's params (any placement).
      tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
      data_dir: TFDS data directory; None means TFDS's default.
      manual_dir: the released files, to prepare a dataset not yet built.
      out_dir: where to write the reports; None writes nothing.

    Returns:
      The summary: `eval` (the name), `kind`, `seconds` and the kind's
      `summarize` output (fractions in [0, 1], counts).
    """
    kind = KINDS[self.kind]
    start = time.perf_counter()
    scores = {}
    for subset, (dataset, split) in self.splits.items():
      source = input_pipeline.data_source(dataset, split, data_dir,
                                          manual_dir)
      scores[subset] = kind.score_split(encoders, params, tokenizer, source,
                                        subset)
      logging.info("%s/%s: %d items, %d images, %d texts at L=%d",
                   self.name, subset, len(scores[subset].index),
                   scores[subset].num_images, scores[subset].num_texts,
                   scores[subset].text_length)
    summary = {"eval": self.name, "kind": self.kind,
               **kind.summarize(scores),
               "seconds": time.perf_counter() - start}
    if out_dir is not None and jax.process_index() == 0:
      self._write(summary, scores, out_dir)
    return summary

  def _write(self, summary: dict, scores: Mapping[str, scoring.SplitScores],
             out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, self.name)
    atomic.write_text(f"{path}.json", json.dumps(summary, indent=2) + "\n")
    atomic.write_text(f"{path}.md", format_table(summary) + "\n")
    atomic.write_atomically(f"{path}.png", lambda tmp: plot(summary, tmp))

    def write_csv(tmp):
      with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["subset", "index", *KINDS[self.kind].SCORE_COLUMNS])
        for subset, s in scores.items():
          for index, row in zip(s.index, s.scores):
            # str(float32) is the shortest text that reads back exactly.
            writer.writerow([subset, int(index), *map(str, row)])

    atomic.write_atomically(f"{path}_scores.csv", write_csv)


EVALUATORS = {
    "hard_positives": Evaluator("hard_positives", "hard_positives",
                                hard_positives.benchmark_splits()),
    "synthetic": Evaluator("synthetic", "hard_positives",
                           hard_positives.synthetic_splits("default")),
    "synthetic_tiny": Evaluator("synthetic_tiny", "hard_positives",
                                hard_positives.synthetic_splits("tiny")),
    "sugar_crepe": Evaluator("sugar_crepe", "sugar_crepe",
                             sugar_crepe.benchmark_splits()),
    "retrieval_coco": Evaluator("retrieval_coco", "retrieval",
                                retrieval.benchmark_splits("coco_5k")),
    **{f"zeroshot_{task}": Evaluator(f"zeroshot_{task}", "zeroshot",
                                     zeroshot.benchmark_splits(task))
       for task in zeroshot.TASKS},
}


def get(name: str) -> Evaluator:
  """The registered evaluator `name`."""
  if name not in EVALUATORS:
    raise ValueError(f"Unknown eval {name!r}; choose from {sorted(EVALUATORS)}")
  return EVALUATORS[name]


def format_table(summary: dict) -> str:
  """A markdown table of one evaluator's summary."""
  return KINDS[summary["kind"]].format_table(summary)


def plot(summary: dict, path: str) -> None:
  """Writes a PNG plot of one evaluator's summary to `path`."""
  KINDS[summary["kind"]].plot(summary, path)


def scalars(summary: dict) -> dict[str, float]:
  """The summary's numbers, keyed "<eval>/<subset>/<metric>", for logging."""

  def flatten(prefix, node):
    if isinstance(node, dict):
      for k, v in node.items():
        yield from flatten(f"{prefix}/{k}", v)
    elif isinstance(node, (int, float, np.number)):
      yield prefix, float(node)

  return dict(flatten(summary["eval"], {k: v for k, v in summary.items()
                                        if k not in ("eval", "kind")}))


__all__ = ["EVALUATORS", "Encoders", "Evaluator", "KINDS", "create_encoders",
           "format_table", "get", "plot", "scalars"]
