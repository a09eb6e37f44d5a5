"""What an evaluation writes and prints: per-benchmark files and tables, and
one combined table with a row per model.

Per benchmark, `write` puts `<name>.json` (the summary), `<name>_scores.csv`
(subset, index and the kind's SCORE_COLUMNS: s_c, s_n[, s_p]; retrieval
ranks; zero-shot label, prediction and rank), `<name>.md` (the table) and
`<name>.png` (the plot) in a directory. `write_combined` puts
`suite.json`, `suite.md` and `suite.png`: each model's headline numbers
(each kind's `headline`) side by side. Every file is written under a
temporary name and renamed, by process 0 only.
"""

from collections.abc import Mapping
import csv
import json
import os
from typing import Any

import jax
from matplotlib import figure
import numpy as np

from hardpos_jax import atomic
from hardpos_jax.evals import kinds

COMBINED = "suite"


def format_table(summary: dict) -> str:
  """A markdown table of one evaluator's summary."""
  return kinds.get(summary["kind"]).format_table(summary)


def plot(summary: dict, path: str) -> None:
  """Writes a PNG plot of one evaluator's summary to `path`."""
  kinds.get(summary["kind"]).plot(summary, path)


def headline(summary: dict) -> dict[str, float]:
  """The few numbers of a summary a paper's table reports, keyed
  "<eval> <metric>", fractions in [0, 1]."""
  kind = kinds.get(summary["kind"])
  return {f"{summary['eval']} {k}": v
          for k, v in kind.headline(summary).items()}


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


def show(summaries: Mapping[str, dict], where: str | None = None) -> None:
  """Prints each summary's table on process 0."""
  if jax.process_index() != 0:
    return
  for name, summary in summaries.items():
    place = f", reports in {where}" if where else ""
    print(f"## {name} ({summary['seconds']:.0f} s){place}\n\n"
          f"{format_table(summary)}\n", flush=True)


def write(summary: dict, scores: Mapping[str, Any], out_dir: str) -> None:
  """Writes one evaluator's reports (process 0 only).

  Args:
    summary: its summary.
    scores: {subset: scores with `index` [N] and `scores` [N, C]}.
    out_dir: the directory, created if missing.
  """
  if jax.process_index() != 0:
    return
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, summary["eval"])
  atomic.write_text(f"{path}.json", json.dumps(summary, indent=2) + "\n")
  atomic.write_text(f"{path}.md", format_table(summary) + "\n")
  atomic.write_atomically(f"{path}.png", lambda tmp: plot(summary, tmp))
  columns = kinds.get(summary["kind"]).SCORE_COLUMNS

  def write_csv(tmp):
    with open(tmp, "w", newline="", encoding="utf-8") as f:
      writer = csv.writer(f)
      writer.writerow(["subset", "index", *columns])
      for subset, s in scores.items():
        for index, row in zip(s.index, s.scores):
          # str(float32) is the shortest text that reads back exactly.
          writer.writerow([subset, int(index), *map(str, row)])

  atomic.write_atomically(f"{path}_scores.csv", write_csv)


def combined(per_model: Mapping[str, Mapping[str, dict]]
             ) -> dict[str, dict[str, float]]:
  """{model: {"<eval> <metric>": value}} from {model: {eval: summary}}."""
  return {model: {k: v for s in summaries.values()
                  for k, v in headline(s).items()}
          for model, summaries in per_model.items()}


def format_combined(table: Mapping[str, Mapping[str, float]]) -> str:
  """A markdown table, a row per model and a column per headline number
  (percent); a number a model lacks is blank."""
  columns = list(dict.fromkeys(k for row in table.values() for k in row))
  lines = ["| model | " + " | ".join(columns) + " |",
           "|---" * (1 + len(columns)) + "|"]
  for model, row in table.items():
    cells = [f"{100 * row[c]:.1f}" if c in row else "" for c in columns]
    lines.append(f"| {model} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def plot_combined(table: Mapping[str, Mapping[str, float]],
                  path: str) -> None:
  """Writes a PNG: one group of bars per headline number, a bar per model."""
  columns = list(dict.fromkeys(k for row in table.values() for k in row))
  fig = figure.Figure(figsize=(max(6, 0.9 * len(columns) + 2), 4.5),
                      layout="constrained")
  ax = fig.subplots()
  x = np.arange(len(columns))
  width = 0.8 / max(1, len(table))
  for i, (model, row) in enumerate(table.items()):
    ax.bar(x + (i - (len(table) - 1) / 2) * width,
           [100 * row.get(c, np.nan) for c in columns], width, label=model)
  ax.set_xticks(x, columns, rotation=30, ha="right")
  ax.set_ylabel("%")
  ax.set_ylim(0, 100)
  ax.legend()
  fig.savefig(path, format="png", dpi=100)


def write_combined(table: Mapping[str, Mapping[str, float]],
                   out_dir: str) -> None:
  """Writes `suite.json`, `suite.md` and `suite.png` (process 0 only)."""
  if jax.process_index() != 0:
    return
  os.makedirs(out_dir, exist_ok=True)
  path = os.path.join(out_dir, COMBINED)
  atomic.write_text(f"{path}.json", json.dumps(table, indent=2) + "\n")
  atomic.write_text(f"{path}.md", format_combined(table) + "\n")
  atomic.write_atomically(f"{path}.png", lambda tmp: plot_combined(table, tmp))
