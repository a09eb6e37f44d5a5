"""SugarCrepe++ (Dumpala et al., NeurIPS 2024 D&B): scores, summary, report.

Each item has an image I, two positive captions P1 (SugarCrepe's caption)
and P2 (other words, same meaning) and SugarCrepe's hard negative N. Scores
are cosine similarities of unit embeddings: s(I, ·) image-text, as in
`scoring`, and t(·, ·) text-text from the same text embeddings. The
reference code (github.com/Sri-Harsha/scpp, VLMs/test_Variants_CLIP.py,
lines 72-89 at a70a831: `cos = nn.CosineSimilarity(...)`, then
`correct_full`, `correct_img_p1`, `correct_img_p2`, `correct_text`) counts,
strictly, so that a tie fails:

  itt     s(I, P1) > s(I, N) and s(I, P2) > s(I, N)   image-to-text (ITT)
  tot     t(P1, P2) > t(P1, N) and t(P1, P2) > t(P2, N)   text-only (TOT)
  itt_p1  s(I, P1) > s(I, N)   (SugarCrepe's accuracy)
  itt_p2  s(I, P2) > s(I, N)

The five subsets are averaged (macro) and pooled (micro).

Legend: N items, D embedding width.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np

from hardpos_jax import sharding as sharding_lib
from hardpos_jax.evals import encoding
from hardpos_jax.evals import metrics
from hardpos_jax.evals import plots
from hardpos_jax.evals import scoring
from tfds_builders.sugar_crepe_pp.sugar_crepe_pp import SUBSETS

# Scored features: P1, P2, N.
TEXT_KEYS = ("caption", "caption2", "hard_negative")
INDEX_KEY = "index"
# Columns of the scores CSV: image-text s(I, .), then text-text t(., .).
SCORE_COLUMNS = ("s_p1", "s_p2", "s_n", "t_p1_p2", "t_p1_n", "t_p2_n")
METRICS = ("itt", "tot", "itt_p1", "itt_p2")
_NAMES = {"itt": "ITT", "tot": "TOT", "itt_p1": "ITT P1", "itt_p2": "ITT P2"}


def benchmark_splits() -> dict[str, tuple[str, str]]:
  """{subset: (TFDS dataset, split)} of the released benchmark."""
  return {s: (f"sugar_crepe_pp/{s}", "test") for s in SUBSETS}


def score_split(encoders: encoding.Encoders, params: Any, tokenizer: Any,
                source: Any, subset: str) -> scoring.SplitScores:
  """Scores every item's image against its three captions, and the
  captions against each other.

  Args:
    encoders: the towers and mesh.
    params: the model params (any placement; replicated onto the mesh).
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    source: the split (an encoded `image`, TEXT_KEYS and INDEX_KEY).
    subset: unused; every subset has the same features.

  Returns:
    The `SplitScores`; `scores` is float32 [N, 6] in SCORE_COLUMNS order.
  """
  del subset
  items = scoring.read_items(source, TEXT_KEYS, INDEX_KEY,
                             encoders.before_batch)
  params = sharding_lib.replicate(params, encoders.mesh)
  zimg = encoding.encode_images(encoders, params, source,
                                items.image_positions)
  ztxt, length, truncated = encoding.encode_texts(encoders, params, tokenizer,
                                                  items.texts)
  texts = ztxt[items.text]  # [N, 3, D]: P1, P2, N.
  image_text = np.einsum("nd,nkd->nk", zimg[items.image], texts)
  p1, p2, n = texts[:, 0], texts[:, 1], texts[:, 2]
  text_text = np.stack([np.einsum("nd,nd->n", a, b)
                        for a, b in ((p1, p2), (p1, n), (p2, n))], axis=1)
  return scoring.SplitScores(
      index=items.index,
      scores=np.concatenate([image_text, text_text], 1).astype(np.float32),
      num_images=len(zimg), num_texts=len(ztxt), text_length=length,
      num_truncated=truncated)


def sugar_crepe_pp_flags(scores: np.ndarray) -> dict[str, np.ndarray]:
  """Per-item outcomes of the reference code's counts.

  Args:
    scores: float32 [N, 6], columns SCORE_COLUMNS.

  Returns:
    {name: bool [N]} for each name in METRICS.
  """
  s_p1, s_p2, s_n, t_p1_p2, t_p1_n, t_p2_n = metrics.check_scores(
      scores, SCORE_COLUMNS).T
  return {"itt": (s_p1 > s_n) & (s_p2 > s_n),
          "tot": (t_p1_p2 > t_p1_n) & (t_p1_p2 > t_p2_n),
          "itt_p1": s_p1 > s_n,
          "itt_p2": s_p2 > s_n}


def sugar_crepe_pp_metrics(scores: np.ndarray) -> dict[str, float]:
  """Means of `sugar_crepe_pp_flags` over [N, 6] scores, plus `count`."""
  return metrics.rates(sugar_crepe_pp_flags(scores))


def summarize(scores: Mapping[str, scoring.SplitScores]) -> dict:
  """ITT and TOT per subset, macro and micro.

  Args:
    scores: {subset: its scores}, any of SUBSETS.

  Returns:
    {"subsets": {subset: metrics and counts}, "macro": metrics,
    "micro": metrics}.
  """
  return metrics.summarize_subsets(scores, sugar_crepe_pp_metrics)


def headline(summary: dict) -> dict[str, float]:
  """The paper's ITT and TOT per subset, and their macro means."""
  return {f"{name} {_NAMES[k]}": row[k]
          for name, row in metrics.subset_rows(summary)
          if name != "micro" for k in ("itt", "tot")}


def format_table(summary: dict) -> str:
  """A markdown table of `summary` (from `summarize`), in percent."""
  return metrics.format_rows(metrics.subset_rows(summary),
                             {k: _NAMES[k] for k in METRICS})


def plot(summary: dict, path: str) -> None:
  """Writes a PNG of ITT and TOT per subset, macro and micro."""
  rows = metrics.subset_rows(summary)
  plots.bars(path, summary["eval"], [n for n, _ in rows],
             {_NAMES[k]: [r[k] for _, r in rows] for k in ("itt", "tot")},
             ylabel="accuracy (%)", rotation=20)
