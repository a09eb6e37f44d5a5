"""Benchmark metrics from per-item scores, as the paper's run_eval.py.

Each item has an image and captions scored by cosine similarity s: its
caption c, a hard negative c_n and (hard-positive benchmark) a hard positive
c_p. Every comparison is strict, so a tie counts as a failure, and ties are
reported on their own. Values are fractions in [0, 1]; N is the item count.

Also what the kinds with subsets share: score checks, per-subset summaries
with their macro and micro, and their markdown table.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

# Metric names of `hard_positive_metrics`, in table order.
HARD_POSITIVE_METRICS = (
    "original",  # s(c) > s(c_n)
    "augmented",  # s(c) > s(c_n) and s(c_p) > s(c_n)
    "brittleness",  # s(c) > s(c_n) > s(c_p) or s(c_p) > s(c_n) > s(c)
    "negative_on_top",  # s(c_n) > s(c) and s(c_n) > s(c_p)
    "ties",  # s(c_n) == s(c) or s(c_n) == s(c_p)
)


def check_scores(scores: np.ndarray, columns: Sequence[str]) -> np.ndarray:
  """Returns `scores` as an array once it is [N > 0, C] and finite.

  Args:
    scores: per-item scores, a column per comparison.
    columns: the C column names, which errors name.

  Raises:
    ValueError: another shape, no items, or a NaN or infinite score (NaN
      compares False everywhere and would pass as a silent failure).
  """
  scores = np.asarray(scores)
  expected = (f"scores of shape [N > 0, {len(columns)}] (columns "
              f"{', '.join(columns)})")
  if scores.ndim != 2 or scores.shape[1] != len(columns):
    raise ValueError(f"Expected {expected}, got {scores.shape}")
  if not len(scores):
    raise ValueError(f"No items to score: expected {expected}")
  bad = (~np.isfinite(scores)).sum(axis=0)
  if bad.any():
    raise ValueError("Scores are not finite: " + ", ".join(
        f"{name} has {int(n)} non-finite scores"
        for name, n in zip(columns, bad) if n))
  return scores


def _check(**scores: np.ndarray) -> list[np.ndarray]:
  """The named [N] arrays, checked as the columns of `check_scores`."""
  arrays = [np.asarray(s) for s in scores.values()]
  shapes = {a.shape for a in arrays}
  if len(shapes) != 1 or arrays[0].ndim != 1:
    raise ValueError("Scores must be 1-D arrays of one length [N], got "
                     f"{ {k: a.shape for k, a in zip(scores, arrays)} }")
  check_scores(np.stack(arrays, axis=1), list(scores))
  return arrays


def rates(flags: Mapping[str, np.ndarray]) -> dict[str, float]:
  """The mean of each of the bool [N] `flags`, after `count` (N)."""
  return {"count": len(next(iter(flags.values()))),
          **{k: float(v.mean()) for k, v in flags.items()}}


def hard_positive_flags(s_c: np.ndarray, s_n: np.ndarray,
                        s_p: np.ndarray) -> dict[str, np.ndarray]:
  """Per-item outcomes of the hard-positive benchmark.

  Args:
    s_c: [N] scores of the captions.
    s_n: [N] scores of the hard negatives.
    s_p: [N] scores of the hard positives.

  Returns:
    {name: bool [N]} for each name in HARD_POSITIVE_METRICS.
  """
  c, n, p = _check(s_c=s_c, s_n=s_n, s_p=s_p)
  return {
      "original": c > n,
      "augmented": (c > n) & (p > n),
      "brittleness": ((c > n) & (n > p)) | ((p > n) & (n > c)),
      "negative_on_top": (n > c) & (n > p),
      "ties": (n == c) | (n == p),
  }


def hard_positive_metrics(s_c: np.ndarray, s_n: np.ndarray,
                          s_p: np.ndarray) -> dict[str, float]:
  """Means of `hard_positive_flags` over [N] items, plus `count` (N)."""
  return rates(hard_positive_flags(s_c, s_n, s_p))


def accuracy(s_c: np.ndarray, s_n: np.ndarray) -> dict[str, float]:
  """SugarCrepe's accuracy: mean[s(c) > s(c_n)] over [N] items, and count."""
  c, n = _check(s_c=s_c, s_n=s_n)
  return {"count": len(c), "accuracy": float((c > n).mean())}


def macro(results: Sequence[Mapping[str, float]]) -> dict[str, float]:
  """Unweighted mean of each metric over subsets; `count` is their sum.

  Args:
    results: per-subset dicts from `hard_positive_metrics` or `accuracy`.

  Returns:
    One dict with the same keys.
  """
  if not results:
    raise ValueError("No subsets to average")
  return {k: (sum(r[k] for r in results) if k == "count" else
              float(np.mean([r[k] for r in results]))) for k in results[0]}


def summarize_subsets(scores: Mapping[str, Any],
                      score_metrics: Callable[[np.ndarray], dict[str, float]]
                      ) -> dict:
  """Metrics per subset, their macro and their micro.

  Args:
    scores: {subset: `scoring.SplitScores`}.
    score_metrics: [N, C] scores -> {"count", metric: fraction}.

  Returns:
    {"subsets": {subset: its metrics and `counts()`}, "macro": the mean over
    subsets (`macro`), "micro": the metrics of every item pooled}.
  """
  results = {name: score_metrics(s.scores) for name, s in scores.items()}
  pooled = np.concatenate([s.scores for s in scores.values()])
  return {"subsets": {name: {**result, **scores[name].counts()}
                      for name, result in results.items()},
          "macro": macro(list(results.values())),
          "micro": score_metrics(pooled)}


def subset_rows(summary: dict) -> list[tuple[str, dict]]:
  """A `summarize_subsets` summary's rows: the subsets, macro, micro."""
  return [*summary["subsets"].items(), ("macro", summary["macro"]),
          ("micro", summary["micro"])]


def format_rows(rows: Sequence[tuple[str, Mapping[str, Any]]],
                columns: Mapping[str, str]) -> str:
  """A markdown table: per (name, row), its items, images and texts (blank
  where the row has none, as macro and micro), then `columns` ({metric:
  heading}) in percent."""
  lines = ["| subset | items | images | texts | "
           + " | ".join(columns.values()) + " |",
           "|---" * (4 + len(columns)) + "|"]
  for name, row in rows:
    counts = [row["count"], row.get("images", ""), row.get("texts", "")]
    lines.append(f"| {name} | " + " | ".join(map(str, counts)) + " | "
                 + " | ".join(f"{100 * row[k]:.1f}" for k in columns) + " |")
  return "\n".join(lines)
