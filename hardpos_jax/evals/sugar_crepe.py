"""SugarCrepe (Hsieh et al., NeurIPS 2023): summary and report.

Each item scores its image against its caption c and hard negative c_n
(`metrics.accuracy`); the seven subsets are averaged (macro) and pooled
(micro).
"""

from collections.abc import Mapping

from hardpos_jax.evals import metrics
from hardpos_jax.evals import plots
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
  return metrics.summarize_subsets(scores, lambda s: metrics.accuracy(*s.T))


def headline(summary: dict) -> dict[str, float]:
  """Accuracy per subset and the macro mean over them."""
  return {name: row["accuracy"] for name, row in metrics.subset_rows(summary)
          if name != "micro"}


def format_table(summary: dict) -> str:
  """A markdown table of `summary` (from `summarize`), accuracy in percent."""
  return metrics.format_rows(metrics.subset_rows(summary),
                             {"accuracy": "accuracy"})


def plot(summary: dict, path: str) -> None:
  """Writes a PNG of the accuracy per subset, macro and micro."""
  rows = metrics.subset_rows(summary)
  plots.bars(path, summary["eval"], [n for n, _ in rows],
             {"accuracy": [r["accuracy"] for _, r in rows]},
             ylabel="accuracy (%)", rotation=20)
