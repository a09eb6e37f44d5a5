"""Metrics against hand-made scores: all 13 weak orderings of 3 values."""

import numpy as np
import pytest

from hardpos_jax.evals import metrics
from hardpos_jax.evals import hard_positives
from hardpos_jax.evals import scoring
from hardpos_jax.evals import sugar_crepe

# Every weak ordering of (c, c_n, c_p), highest first, with its outcomes
# worked out by hand: original, augmented, brittleness, negative_on_top, ties.
ORDERINGS = {
    "c>n>p": (1, 0, 1, 0, 0),
    "c>p>n": (1, 1, 0, 0, 0),
    "n>c>p": (0, 0, 0, 1, 0),
    "n>p>c": (0, 0, 0, 1, 0),
    "p>c>n": (1, 1, 0, 0, 0),
    "p>n>c": (0, 0, 1, 0, 0),
    "c=n>p": (0, 0, 0, 0, 1),
    "p>c=n": (0, 0, 0, 0, 1),
    "c=p>n": (1, 1, 0, 0, 0),
    "n>c=p": (0, 0, 0, 1, 0),
    "n=p>c": (0, 0, 0, 0, 1),
    "c>n=p": (1, 0, 0, 0, 1),
    "c=n=p": (0, 0, 0, 0, 1),
}


def scores_of(ordering, top=0.31, step=0.0625):
  """'c>n=p' -> {'c': top, 'n': top - step, 'p': top - step}."""
  values = {}
  for rank, group in enumerate(ordering.split(">")):
    for name in group.split("="):
      values[name] = np.float32(top - rank * step)
  return values


def test_thirteen_orderings_are_all_the_weak_orderings():
  seen = set()
  for ordering in ORDERINGS:
    v = scores_of(ordering)
    seen.add(tuple(np.sign([v["c"] - v["n"], v["c"] - v["p"],
                            v["n"] - v["p"]])))
  assert len(seen) == 13


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_flags_of_each_ordering(ordering):
  v = scores_of(ordering)
  flags = metrics.hard_positive_flags(np.array([v["c"]]), np.array([v["n"]]),
                                      np.array([v["p"]]))
  assert list(flags) == list(metrics.HARD_POSITIVE_METRICS)
  got = tuple(int(flags[k][0]) for k in metrics.HARD_POSITIVE_METRICS)
  assert got == ORDERINGS[ordering]


def test_means_over_all_orderings():
  # Each ordering 3 times, interleaved, at different score levels.
  names = list(ORDERINGS) * 3
  triples = [scores_of(o, top=0.9 - 0.1 * (i % 5)) for i, o in
             enumerate(names)]
  s_c, s_n, s_p = (np.array([t[k] for t in triples]) for k in "cnp")
  result = metrics.hard_positive_metrics(s_c, s_n, s_p)
  # Column sums of the table: original 5, augmented 3, brittleness 2,
  # negative on top 3, ties 5 of the 13 orderings.
  assert result == pytest.approx({"count": 39, "original": 5 / 13,
                                  "augmented": 3 / 13, "brittleness": 2 / 13,
                                  "negative_on_top": 3 / 13, "ties": 5 / 13})
  assert result["count"] == 39


def test_orderings_are_exhaustive_outcomes():
  # Except on ties, an item is exactly one of: augmented, brittle, c_n on top.
  for ordering, (_, aug, brittle, top, tie) in ORDERINGS.items():
    assert tie or aug + brittle + top == 1, ordering


def test_accuracy_is_strict():
  s_c = np.array([0.3, 0.2, 0.25, 0.1], np.float32)
  s_n = np.array([0.2, 0.3, 0.25, 0.0], np.float32)
  assert metrics.accuracy(s_c, s_n) == {"count": 4, "accuracy": 0.5}


def test_macro_averages_subsets_and_sums_counts():
  result = metrics.macro([{"count": 2, "accuracy": 1.0},
                          {"count": 6, "accuracy": 0.5}])
  assert result == {"count": 8, "accuracy": 0.75}


@pytest.mark.parametrize("s_c, s_n, s_p, match", [
    ([0.1, 0.2], [0.1], [0.1, 0.2], "one length"),
    ([[0.1]], [[0.1]], [[0.1]], "1-D"),
    ([], [], [], "No items"),
    ([0.1, np.nan], [0.1, 0.2], [0.1, 0.2], "s_c has 1 non-finite"),
])
def test_bad_scores_raise(s_c, s_n, s_p, match):
  with pytest.raises(ValueError, match=match):
    metrics.hard_positive_metrics(np.array(s_c), np.array(s_n), np.array(s_p))


def split_scores(rows):
  rows = np.asarray(rows, np.float32)
  return scoring.SplitScores(index=np.arange(len(rows)), scores=rows,
                             num_images=1, num_texts=3, text_length=8,
                             num_truncated=0)


def test_replace_macro_and_micro():
  # replace_att: 1 of 2 right; replace_rel: 4 of 4 right (orig and aug).
  right, wrong = (0.3, 0.1, 0.2), (0.1, 0.3, 0.2)
  summary = hard_positives.summarize({
      "replace_att": split_scores([right, wrong]),
      "replace_rel": split_scores([right] * 4),
      "swap": split_scores([wrong]),
  })
  assert summary["replace_macro"]["original"] == pytest.approx(0.75)
  assert summary["replace_micro"]["original"] == pytest.approx(5 / 6)
  assert summary["replace_macro"]["count"] == 6
  assert summary["replace_micro"]["count"] == 6
  assert summary["subsets"]["swap"]["negative_on_top"] == 1.0
  table = hard_positives.format_table(summary)
  assert "| REPLACE (macro) | 6 |  |  | 75.0 | 75.0 |" in table
  assert "| REPLACE (micro) | 6 |  |  | 83.3 | 83.3 |" in table


def test_sugar_crepe_macro_and_micro():
  summary = sugar_crepe.summarize({
      "add_att": split_scores([(0.3, 0.1)]),
      "swap_obj": split_scores([(0.3, 0.1), (0.1, 0.3), (0.1, 0.3)]),
  })
  assert summary["macro"] == pytest.approx({"count": 4, "accuracy": 2 / 3})
  assert summary["micro"] == pytest.approx({"count": 4, "accuracy": 0.5})
  assert "| swap_obj | 3 | 1 | 3 | 33.3 |" in sugar_crepe.format_table(summary)
