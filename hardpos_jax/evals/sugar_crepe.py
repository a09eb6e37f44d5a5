"""SugarCrepe (Hsieh et al., NeurIPS 2023): summary and report.

Each item scores its image against its caption c and hard negative c_n
(`metrics.accuracy`); the seven subsets are averaged (macro) and pooled
(micro).
"""

from collections.abc import Mapping

from matplotlib import figure
import numpy as np

from hardpos_jax.evals import metrics
from hardpos_jax.evals import scoring
from tfds_builders.sugar_crepe.sugar_crepe import SUBSETS

# Scored features and their columns in the scores CSV.
TEXT_KEYS = ("caption", "hard_negative")
SCORE_COLUMNS = ("s_c", "s_n")
INDEX_KEY = "id"


def benchmark_splits() -> dict[str, tuple[str, str]]:
  """{subset: (TFDS dataset, split)} of the released benchmark."""
  return {s: (f"sugar_crepe/{s}", "test") for s in SUBSETS}


# Scores a split's items against their TEXT_KEYS texts (any subset).
score_split = scoring.item_scorer(TEXT_KEYS, INDEX_KEY)


def summarize(scores: Mapping[str, scoring.SplitScores]) -> dict:
  """Accuracy per subset, macro and micro.

  Args:
    scores: {subset: its scores}.

  Returns:
    {"subsets": {subset: accuracy and counts}, "macro": accuracy,
    "micro": accuracy}.
  """
  subsets = {
      name: {**metrics.accuracy(*s.scores.T), "images": s.num_images,
             "texts": s.num_texts, "text_length": s.text_length,
             "truncated": s.num_truncated}
      for name, s in scores.items()
  }
  pooled = np.concatenate([s.scores for s in scores.values()])
  return {"subsets": subsets,
          "macro": metrics.macro([{k: s[k] for k in ("count", "accuracy")}
                                  for s in subsets.values()]),
          "micro": metrics.accuracy(*pooled.T)}


def headline(summary: dict) -> dict[str, float]:
  """Accuracy per subset and the macro mean over them."""
  return {name: row["accuracy"] for name, row in _rows(summary)
          if name != "micro"}


def _rows(summary: dict) -> list[tuple[str, dict]]:
  return [*summary["subsets"].items(), ("macro", summary["macro"]),
          ("micro", summary["micro"])]


def format_table(summary: dict) -> str:
  """A markdown table of `summary` (from `summarize`), accuracy in percent."""
  lines = ["| subset | items | images | texts | accuracy |",
           "|---|---|---|---|---|"]
  for name, row in _rows(summary):
    lines.append(f"| {name} | {row['count']} | {row.get('images', '')} | "
                 f"{row.get('texts', '')} | {100 * row['accuracy']:.1f} |")
  return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
  """Writes a PNG of the accuracy per subset, macro and micro."""
  rows = _rows(summary)
  fig = figure.Figure(figsize=(8, 4), layout="constrained")
  ax = fig.subplots()
  x = np.arange(len(rows))
  ax.bar(x, [100 * r["accuracy"] for _, r in rows])
  ax.set_xticks(x, [n for n, _ in rows], rotation=20, ha="right")
  ax.set_ylabel("accuracy (%)")
  ax.set_title(summary["eval"])
  fig.savefig(path, format="png", dpi=100)
