"""The hard-positive benchmark (Kamath et al., ECCV 2024): summary and report.

Each item scores its image against its caption c, hard negative c_n and hard
positive c_p (`metrics.hard_positive_metrics`). REPLACE is reported as the
mean of replace_att and replace_rel (macro, as the paper) and over their
pooled items (micro).
"""

from collections.abc import Mapping

from matplotlib import figure
import numpy as np

from hardpos_jax.evals import metrics
from hardpos_jax.evals import plots
from hardpos_jax.evals import scoring

SUBSETS = ("replace_att", "replace_rel", "swap")
REPLACE = ("replace_att", "replace_rel")
# Scored features and their columns in the scores CSV.
TEXT_KEYS = ("caption", "hard_negative", "hard_positive")
SCORE_COLUMNS = ("s_c", "s_n", "s_p")
INDEX_KEY = "index"


def benchmark_splits() -> dict[str, tuple[str, str]]:
  """{subset: (TFDS dataset, split)} of the released benchmark."""
  return {s: (f"hard_positives/{s}", "test") for s in SUBSETS}


def synthetic_splits(config: str) -> dict[str, tuple[str, str]]:
  """The same subsets from a `synthetic_shapes_benchmark` config's splits."""
  return {s: (f"synthetic_shapes_benchmark/{config}", f"test_{s}")
          for s in SUBSETS}


# Scores a split's items against their TEXT_KEYS texts (any subset).
score_split = scoring.item_scorer(TEXT_KEYS, INDEX_KEY)


def summarize(scores: Mapping[str, scoring.SplitScores]) -> dict:
  """Metrics per subset and, when both REPLACE subsets are scored, REPLACE.

  Args:
    scores: {subset: its scores}, any of SUBSETS (a selection may score
      some only).

  Returns:
    {"subsets": {subset: metrics and counts}} and, with both REPLACE
    subsets, "replace_macro" and "replace_micro" metrics.
  """
  subsets = {name: {**_metrics(s.scores), **s.counts()}
             for name, s in scores.items()}
  if not all(n in scores for n in REPLACE):
    return {"subsets": subsets}
  replace = metrics.summarize_subsets({n: scores[n] for n in REPLACE},
                                      _metrics)
  return {"subsets": subsets, "replace_macro": replace["macro"],
          "replace_micro": replace["micro"]}


def _metrics(scores: np.ndarray) -> dict[str, float]:
  return metrics.hard_positive_metrics(*scores.T)


def headline(summary: dict) -> dict[str, float]:
  """The paper's columns: Orig, Aug and Brittleness of REPLACE (macro) and
  SWAP, or of each scored REPLACE subset where REPLACE is not whole."""
  rows = dict(_rows(summary))
  if "REPLACE (macro)" in rows:
    rows = {k: v for k, v in rows.items() if k not in REPLACE}
  return {f"{name} {_SHORT[k]}": row[k] for name, row in rows.items()
          if name != "REPLACE (micro)"
          for k in ("original", "augmented", "brittleness")}


_COLUMNS = {"original": "Orig", "augmented": "Aug",
            "brittleness": "Brittle (lower is better)",
            "negative_on_top": "c_n on top", "ties": "ties"}
_SHORT = {"original": "Orig", "augmented": "Aug", "brittleness": "Brittle"}


def _rows(summary: dict) -> list[tuple[str, dict]]:
  subsets = summary["subsets"]
  rows = [(n, subsets[n]) for n in REPLACE if n in subsets]
  if "replace_macro" in summary:
    rows += [("REPLACE (macro)", summary["replace_macro"]),
             ("REPLACE (micro)", summary["replace_micro"])]
  return rows + [(n, subsets[n]) for n in subsets if n not in REPLACE]


def format_table(summary: dict) -> str:
  """A markdown table of `summary` (from `summarize`), metrics in percent."""
  return metrics.format_rows(_rows(summary), _COLUMNS)


def plot(summary: dict, path: str) -> None:
  """Writes a PNG: Orig vs Aug per subset, and Brittleness."""
  rows = _rows(summary)
  names = [n for n, _ in rows]
  fig = figure.Figure(figsize=(11, 4), layout="constrained")
  fig.suptitle(summary["eval"])
  left, right = fig.subplots(1, 2, width_ratios=(3, 2))
  plots.draw_bars(left, names, {_COLUMNS[k]: [r[k] for _, r in rows]
                                for k in ("original", "augmented")},
                  rotation=20)
  left.set_title("Accuracy with and without hard positives")
  plots.draw_bars(right, names, {"brittleness": [r["brittleness"]
                                                 for _, r in rows]},
                  rotation=20, color="tab:red")
  right.set_title("Brittleness (lower is better)")
  fig.savefig(path, format="png", dpi=100)
