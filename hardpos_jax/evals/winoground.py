"""Winoground (Thrush et al., CVPR 2022): scores, summary and report.

Each item has two images i0, i1 and two captions c0, c1 (c0 describes i0),
and four scores s(c, i): cosine similarity of unit embeddings, as in
`scoring`. The paper's metrics, as its authors' CLIP notebook computes them
(`text_correct`, `image_correct`, `group_correct`; linked from the dataset
card, huggingface.co/datasets/facebook/winoground), each comparison strict so
that a tie fails:

  text   s(c0, i0) > s(c1, i0) and s(c1, i1) > s(c0, i1)   each image picks
                                                            its caption
  image  s(c0, i0) > s(c0, i1) and s(c1, i1) > s(c1, i0)   each caption picks
                                                            its image
  group  text and image

Chance is 25 %, 25 % and 16.7 %. They are reported over all items and per
`collapsed_tag` (Object, Relation, Both: what the captions swap).

Every unique image (by bytes, over both image features) and caption is
encoded once with `encoding.encode_images` / `encode_texts`.

Legend: N items, M unique images, U unique texts, D embedding width.
"""

from collections.abc import Callable, Mapping, Sequence
import dataclasses
from typing import Any

import numpy as np

from hardpos_jax import sharding as sharding_lib
from hardpos_jax.evals import encoding
from hardpos_jax.evals import metrics
from hardpos_jax.evals import plots
from hardpos_jax.evals import scoring

IMAGE_KEYS = ("image_0", "image_1")
CAPTION_KEYS = ("caption_0", "caption_1")
INDEX_KEY = "id"
TAG_KEY = "collapsed_tag"
# Columns of the scores CSV: s(c_j, i_k), image by image.
SCORE_COLUMNS = ("s_c0_i0", "s_c1_i0", "s_c0_i1", "s_c1_i1")
METRICS = ("text", "image", "group")
# The paper's order of the collapsed tags.
TAGS = ("Object", "Relation", "Both")


def benchmark_splits() -> dict[str, tuple[str, str]]:
  """{subset: (TFDS dataset, split)} of the released benchmark."""
  return {"test": ("winoground", "test")}


@dataclasses.dataclass(frozen=True)
class WinogroundScores(scoring.SplitScores):
  """`SplitScores` with K = 4 columns (SCORE_COLUMNS) and each item's tag.

  Attributes:
    tags: str [N] each item's `collapsed_tag`, in `index` order.
  """

  tags: np.ndarray


@dataclasses.dataclass(frozen=True)
class Items:
  """A split's items as indices into its unique images and captions.

  Attributes:
    index: int64 [N] item ids, ascending.
    image: int64 [N, 2] each item's rows in `images`, in IMAGE_KEYS order.
    text: int64 [N, 2] each item's rows in `texts`, in CAPTION_KEYS order.
    images: the M unique images as (source position, image feature).
    texts: the U unique captions.
    tags: str [N] each item's collapsed tag.
  """

  index: np.ndarray
  image: np.ndarray
  text: np.ndarray
  images: list[tuple[int, str]]
  texts: list[str]
  tags: np.ndarray


def read_items(source: Any, before_chunk: Callable[[], None] = lambda: None
               ) -> Items:
  """Reads a split's ids, captions and tags and finds its unique images.

  Args:
    source: a random-access split of Winoground records (encoded images).
    before_chunk: see `scoring.read_records`.

  Returns:
    The `Items`, sorted by id.
  """
  images, texts = scoring.ImageIndex(), {}
  index, image, text, tags = [], [], [], []
  for position, record in scoring.read_records(source, before_chunk):
    image.append([images.row(record[k], (position, k)) for k in IMAGE_KEYS])
    text.append([texts.setdefault(scoring.as_text(record[k]), len(texts))
                 for k in CAPTION_KEYS])
    index.append(int(record[INDEX_KEY]))
    tags.append(scoring.as_text(record[TAG_KEY]))
  order, index = scoring.id_order(index, INDEX_KEY)
  return Items(index=index,
               image=np.asarray(image, np.int64).reshape(-1, 2)[order],
               text=np.asarray(text, np.int64).reshape(-1, 2)[order],
               images=images.places, texts=list(texts),
               tags=np.asarray(tags, dtype=str)[order])


class _UniqueImages:
  """A split's unique images as a source of `{"image": bytes}` records, the
  layout `encoding.encode_images` reads."""

  def __init__(self, source: Any, places: Sequence[tuple[int, str]]):
    self._source = source
    self._places = places

  def __len__(self) -> int:
    return len(self._places)

  def __getitems__(self, rows: Sequence[int]) -> list[dict]:
    records = self._source.__getitems__([self._places[r][0] for r in rows])
    return [{"image": record[self._places[r][1]]}
            for r, record in zip(rows, records)]


def score_split(encoders: encoding.Encoders, params: Any, tokenizer: Any,
                source: Any, subset: str) -> WinogroundScores:
  """Scores every item's two captions against its two images.

  Args:
    encoders: the towers and mesh.
    params: the model params (any placement; replicated onto the mesh).
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    source: the split (features IMAGE_KEYS, CAPTION_KEYS, INDEX_KEY,
      TAG_KEY).
    subset: unused; every subset has the same features.

  Returns:
    The `WinogroundScores`; `scores` is float32 [N, 4] in SCORE_COLUMNS
    order.
  """
  del subset
  items = read_items(source, encoders.before_batch)
  params = sharding_lib.replicate(params, encoders.mesh)
  images = _UniqueImages(source, items.images)
  zimg = encoding.encode_images(encoders, params, images,
                                np.arange(len(images)))
  ztxt, length, truncated = encoding.encode_texts(encoders, params, tokenizer,
                                                  items.texts)
  # [N, image k, caption j] -> s_cj_ik in SCORE_COLUMNS order.
  scores = np.einsum("nkd,njd->nkj", zimg[items.image], ztxt[items.text])
  return WinogroundScores(
      index=items.index, scores=scores.reshape(-1, 4).astype(np.float32),
      num_images=len(zimg), num_texts=len(ztxt), text_length=length,
      num_truncated=truncated, tags=items.tags)


def winoground_flags(scores: np.ndarray) -> dict[str, np.ndarray]:
  """Per-item outcomes of the paper's metrics.

  Args:
    scores: float32 [N, 4], columns SCORE_COLUMNS.

  Returns:
    {name: bool [N]} for each name in METRICS.
  """
  c0_i0, c1_i0, c0_i1, c1_i1 = metrics.check_scores(scores,
                                                     SCORE_COLUMNS).T
  text = (c0_i0 > c1_i0) & (c1_i1 > c0_i1)
  image = (c0_i0 > c0_i1) & (c1_i1 > c1_i0)
  return {"text": text, "image": image, "group": text & image}


def winoground_metrics(scores: np.ndarray) -> dict[str, float]:
  """Means of `winoground_flags` over [N, 4] scores, plus `count` (N)."""
  return metrics.rates(winoground_flags(scores))


def summarize(scores: Mapping[str, WinogroundScores]) -> dict:
  """The metrics over every item (subsets pooled) and per collapsed tag.

  Args:
    scores: {subset: its scores}.

  Returns:
    {"count", "text", "image", "group", "images", "texts", "text_length",
    "truncated", "tags": {tag: {"count", "text", "image", "group"}}}, the
    tags in the paper's order, then any others; items with an empty tag
    count only in the whole.
  """
  pooled = np.concatenate([s.scores for s in scores.values()])
  tags = np.concatenate([s.tags for s in scores.values()])
  present = set(tags) - {""}
  order = [t for t in TAGS if t in present] + sorted(present - set(TAGS))
  return {
      **winoground_metrics(pooled),
      "images": sum(s.num_images for s in scores.values()),
      "texts": sum(s.num_texts for s in scores.values()),
      "text_length": max(s.text_length for s in scores.values()),
      "truncated": sum(s.num_truncated for s in scores.values()),
      "tags": {t: winoground_metrics(pooled[tags == t]) for t in order},
  }


def headline(summary: dict) -> dict[str, float]:
  """The paper's three numbers over all items."""
  return {k: summary[k] for k in METRICS}


def _rows(summary: dict) -> list[tuple[str, dict]]:
  return [("all", summary), *summary["tags"].items()]


def format_table(summary: dict) -> str:
  """A markdown table of `summary` (from `summarize`), scores in percent."""
  lines = ["| tag | items | text | image | group |",
           "|---|---|---|---|---|"]
  for name, row in _rows(summary):
    lines.append(f"| {name} | {row['count']} | " + " | ".join(
        f"{100 * row[k]:.1f}" for k in METRICS) + " |")
  lines.append(f"\n{summary['images']} images and {summary['texts']} "
               "captions encoded; chance is 25.0 / 25.0 / 16.7.")
  return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
  """Writes a PNG: text, image and group score, overall and per tag."""
  rows = _rows(summary)
  plots.bars(path, summary["eval"], [f"{n} ({r['count']})" for n, r in rows],
             {key: [r[key] for _, r in rows] for key in METRICS},
             chance=1 / 6, chance_label="group chance")
