"""The bootstrap over seeds and items (hardpos_jax/stats.py)."""

import numpy as np
import pytest

from hardpos_jax import stats


def test_score_is_the_macro_mean_of_seed_and_item_means():
  a = [np.array([[1, 0, 1, 1], [1, 1, 0, 1]]), np.array([[0, 0], [1, 0]])]
  assert stats.score(a) == pytest.approx((6 / 8 + 1 / 4) / 2)


def test_identical_variants_differ_by_exactly_zero():
  """Seeds that agree item by item: every replicate of a - a is 0, as items
  are drawn jointly for both sides."""
  rows = np.random.default_rng(0).random((1, 50)) < 0.6
  a = [np.repeat(rows, 3, axis=0)]
  reps = stats.bootstrap(a, a, reps=200)
  assert reps.shape == (200,)
  np.testing.assert_allclose(reps, 0.0, atol=1e-12)


def test_single_seed_standard_error_is_the_binomial_one():
  """One seed: only items are resampled; s.e. ~ sqrt(p (1 - p) / n)."""
  n, p = 400, 0.3
  a = [np.arange(n)[None] < p * n]  # exactly 120 successes of 400
  se = np.std(stats.bootstrap(a, reps=4000, seed=1))
  assert se == pytest.approx(np.sqrt(p * (1 - p) / n), rel=0.05)


def test_pairing_over_items_removes_item_noise():
  """One run each, b = a but failing on a fixed 10 % of items: the paired
  interval is tight around the true difference, far tighter than an
  unpaired one (about 4 s.e. of either score)."""
  rng = np.random.default_rng(2)
  a = rng.random((1, 1000)) < 0.5
  b = a.copy()
  b[:, :100] = False  # b loses exactly the a-successes among items 0..99
  diff = stats.score([a]) - stats.score([b])
  lo, hi = stats.interval(stats.bootstrap([a], [b], reps=2000))
  assert lo <= diff <= hi
  assert hi - lo < 0.5 * 4 * np.std(stats.bootstrap([a], reps=2000))
  assert lo > 0


def test_seed_noise_widens_the_interval():
  """Seeds whose scores differ make a wider interval than seeds that agree."""
  u = np.random.default_rng(3).random(500)
  agree = [np.stack([u < 0.5] * 3)]
  disagree = [np.stack([u < 0.3, u < 0.5, u < 0.7])]
  width = lambda a: np.subtract(*stats.interval(stats.bootstrap(a))[::-1])
  assert width(disagree) > 2 * width(agree)


@pytest.mark.parametrize("bad, match", [
    ([], "No subsets"),
    ([np.zeros(5)], r"\[seeds, items\]"),
])
def test_bad_input_is_named(bad, match):
  with pytest.raises(ValueError, match=match):
    stats.bootstrap(bad)


def test_unpaired_items_are_refused():
  with pytest.raises(ValueError, match="same items"):
    stats.bootstrap([np.zeros((2, 5))], [np.zeros((2, 6))])
