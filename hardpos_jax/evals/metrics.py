"""Benchmark metrics from per-item scores, as the paper's run_eval.py.

Each item has an image and captions scored by cosine similarity s: its
caption c, a hard negative c_n and (hard-positive benchmark) a hard positive
c_p. Every comparison is strict, so a tie counts as a failure, and ties are
reported on their own. Values are fractions in [0, 1]; N is the item count.
"""

from collections.abc import Mapping, Sequence

import numpy as np

# Metric names of `hard_positive_metrics`, in table order.
HARD_POSITIVE_METRICS = (
    "original",  # s(c) > s(c_n)
    "augmented",  # s(c) > s(c_n) and s(c_p) > s(c_n)
    "brittleness",  # s(c) > s(c_n) > s(c_p) or s(c_p) > s(c_n) > s(c)
    "negative_on_top",  # s(c_n) > s(c) and s(c_n) > s(c_p)
    "ties",  # s(c_n) == s(c) or s(c_n) == s(c_p)
)


def _check(**scores: np.ndarray) -> list[np.ndarray]:
  arrays = [np.asarray(s) for s in scores.values()]
  shapes = {a.shape for a in arrays}
  if len(shapes) != 1 or arrays[0].ndim != 1:
    raise ValueError("Scores must be 1-D arrays of one length [N], got "
                     f"{ {k: a.shape for k, a in zip(scores, arrays)} }")
  if not arrays[0].size:
    raise ValueError("No items to score")
  for name, a in zip(scores, arrays):
    # NaN compares False everywhere and would pass as a silent failure.
    if not np.isfinite(a).all():
      raise ValueError(f"{name} has {int((~np.isfinite(a)).sum())} "
                       "non-finite scores")
  return arrays


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
  flags = hard_positive_flags(s_c, s_n, s_p)
  return {"count": len(s_c),
          **{k: float(v.mean()) for k, v in flags.items()}}


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
