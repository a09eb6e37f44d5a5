"""Uncertainty of benchmark scores over training seeds and benchmark items.

A model variant trained with S seeds and scored on the N items of a subset
gives an [S, N] array of per-item outcomes (0/1 flags from
`metrics.hard_positive_flags`, or any per-item value). Its score is the mean
over seeds and items, and over several subsets the unweighted (macro) mean of
the subsets' scores, as the paper reports REPLACE.

`bootstrap` resamples both sources of noise: each variant's seeds with
replacement (independently per variant: they are separate runs), and the
items of each subset with replacement, the same draw for both variants of a
comparison (they are scored on the same items, so the comparison is paired
over items). With one seed only the items are resampled.
"""

from collections.abc import Sequence

import numpy as np

Outcomes = Sequence[np.ndarray]  # per subset, [S, N_k]


def score(a: Outcomes) -> float:
  """Macro mean over subsets of the mean over [S, N_k] seeds and items."""
  return float(np.mean([np.mean(x) for x in a]))


def _check(a: Outcomes, b: Outcomes | None) -> None:
  if not a:
    raise ValueError("No subsets to score")
  for k, x in enumerate(a):
    if np.ndim(x) != 2 or not np.size(x):
      raise ValueError(f"Subset {k}: want a non-empty [seeds, items] array, "
                       f"got shape {np.shape(x)}")
  if b is not None:
    if len(b) != len(a):
      raise ValueError(f"{len(a)} subsets against {len(b)}")
    for k, (x, y) in enumerate(zip(a, b)):
      if np.shape(x)[1] != np.shape(y)[1]:
        raise ValueError(f"Subset {k}: {np.shape(x)[1]} items against "
                         f"{np.shape(y)[1]}; a paired comparison needs the "
                         "same items")


def _weights(rng: np.random.Generator, n: int, reps: int) -> np.ndarray:
  """[reps, n] resampling weights (counts / n) of n things drawn n times."""
  return rng.multinomial(n, np.full(n, 1 / n), size=reps) / n


def bootstrap(a: Outcomes, b: Outcomes | None = None, *, reps: int = 2000,
              seed: int = 0) -> np.ndarray:
  """Bootstrap replicates of `score(a)`, or of `score(a) - score(b)`.

  Args:
    a: per subset, [S_a, N_k] per-item outcomes of S_a seeds.
    b: None, or per subset [S_b, N_k] outcomes of another variant on the same
      items.
    reps: number of replicates.
    seed: seed of the resampling.

  Returns:
    [reps] float replicates.
  """
  _check(a, b)
  rng = np.random.default_rng(seed)
  out = np.zeros(reps)
  for k, x in enumerate(a):
    x = np.asarray(x, np.float64)
    items = _weights(rng, x.shape[1], reps)  # [R, N_k], shared by a and b
    value = np.sum((_weights(rng, len(x), reps) @ x) * items, axis=1)
    if b is not None:
      y = np.asarray(b[k], np.float64)
      value -= np.sum((_weights(rng, len(y), reps) @ y) * items, axis=1)
    out += value / len(a)
  return out


def interval(replicates: np.ndarray, level: float = 0.95
             ) -> tuple[float, float]:
  """The percentile interval of [R] bootstrap replicates."""
  tail = 100 * (1 - level) / 2
  lo, hi = np.percentile(replicates, [tail, 100 - tail])
  return float(lo), float(hi)
