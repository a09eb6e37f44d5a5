"""Image-text retrieval, COCO 5k (Karpathy test): Recall@1/5/10 both ways.

Image->text: each image queries every caption of the split and is a hit at k
when one of its own captions is among the k best. Text->image: each caption
queries every image and is a hit at k when its image is among the k best.
Ranks come from `scoring.rank_gallery` (float32 cosine similarity, blockwise
on the mesh): a query's rank is the number of wrong items that score at
least as high as its best right one, so a tie counts against the model, as
the hard-positive metrics' strict comparisons do. Duplicate caption strings
(COCO has some) are encoded once and tie exactly.

Each image keeps its first CAPTIONS_PER_IMAGE captions in the dataset's
order: the usual 5,000 x 5 = 25,000 of the 5k protocol (Karpathy's test split
has 25,010 captions; a few images have six or seven). An image with fewer is
an error.

Datasets (DATASETS), images in the `image` feature:

| subset  | TFDS dataset       | split | image id   | captions            |
|---------|--------------------|-------|------------|---------------------|
| coco_5k | coco_captions/2014 | test  | `image/id` | `captions` / `text` |

TFDS's `coco_captions` is COCO 2014 with Karpathy's splits; building it
downloads COCO 2014 (about 20 GB) and Karpathy's split file. Another
captioned-image dataset with the same layout is one more DATASETS row.

Legend: M images, K captions per image, U unique caption texts, D width.
"""

from collections.abc import Callable, Mapping
import dataclasses
from typing import Any

import jax
import numpy as np

from hardpos_jax.evals import encoding
from hardpos_jax.evals import plots
from hardpos_jax.evals import scoring

CAPTIONS_PER_IMAGE = 5
RECALL_AT = (1, 5, 10)
# Columns of the scores CSV: the image's rank as a query, then its captions'.
SCORE_COLUMNS = ("image_to_text_rank", *(
    f"text_to_image_rank_{k}" for k in range(1, CAPTIONS_PER_IMAGE + 1)))


@dataclasses.dataclass(frozen=True)
class CaptionedImages:
  """Where a captioned-image split is and which features to read.

  Attributes:
    dataset: TFDS name with config.
    split: the split's name.
    id_key: the int feature that identifies an image.
    captions_key: the captions' Sequence feature.
    text_key: the caption text inside `captions_key`.
  """

  dataset: str
  split: str
  id_key: str
  captions_key: str
  text_key: str


DATASETS = {
    "coco_5k": CaptionedImages("coco_captions/2014", "test", "image/id",
                               "captions", "text"),
    # Karpathy's 5k validation images: what NegCLIP and the paper choose
    # their epoch by (model selection), never the test split.
    "coco_val": CaptionedImages("coco_captions/2014", "val", "image/id",
                                "captions", "text"),
}


def benchmark_splits(subset: str) -> dict[str, tuple[str, str]]:
  """{subset: (TFDS dataset, split)} of the DATASETS row `subset`."""
  if subset not in DATASETS:
    raise ValueError(f"Unknown retrieval dataset {subset!r}; choose from "
                     f"{sorted(DATASETS)}")
  return {subset: (DATASETS[subset].dataset, DATASETS[subset].split)}


@dataclasses.dataclass(frozen=True)
class Gallery:
  """A split's images and captions, sorted by image id.

  Attributes:
    index: int64 [M] image ids, ascending.
    image_positions: int64 [M] each image's source position.
    captions: int64 [M, K] each image's captions, as rows of `texts`.
    texts: the U unique caption texts.
  """

  index: np.ndarray
  image_positions: np.ndarray
  captions: np.ndarray
  texts: list[str]


def read_gallery(source: Any, spec: CaptionedImages,
                 before_chunk: Callable[[], None] = lambda: None) -> Gallery:
  """Reads a split's image ids and first K captions.

  Args:
    source: a random-access split (`len`, `__getitems__`).
    spec: its feature names.
    before_chunk: see `scoring.read_records`.

  Returns:
    The `Gallery`.
  """
  ids, positions, captions, texts = [], [], [], {}
  for position, record in scoring.read_records(source, before_chunk):
    own = record[spec.captions_key][spec.text_key]
    if len(own) < CAPTIONS_PER_IMAGE:
      raise ValueError(
          f"Image {spec.id_key}={int(record[spec.id_key])} has {len(own)} "
          f"captions; retrieval needs {CAPTIONS_PER_IMAGE} per image")
    ids.append(int(record[spec.id_key]))
    positions.append(position)
    captions.append([texts.setdefault(t.decode("utf-8"), len(texts))
                     for t in own[:CAPTIONS_PER_IMAGE]])
  order, index = scoring.id_order(ids, spec.id_key)
  return Gallery(
      index=index, image_positions=np.asarray(positions, np.int64)[order],
      captions=np.asarray(captions, np.int64).reshape(
          -1, CAPTIONS_PER_IMAGE)[order],
      texts=list(texts))


def score_split(encoders: encoding.Encoders, params: Any, tokenizer: Any,
                source: Any, subset: str) -> scoring.SplitScores:
  """Ranks every image against every caption of a split, and back.

  Args:
    encoders: the towers and mesh.
    params: the model params (any placement).
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    source: the split.
    subset: its DATASETS row.

  Returns:
    The `SplitScores`; its `scores` are int64 [M, 1 + K] ranks per image
    (SCORE_COLUMNS): its rank among the captions, then each of its
    captions' ranks among the images.
  """
  gallery = read_gallery(source, DATASETS[subset], encoders.before_batch)
  params = jax.device_put(params, encoders.replicated)
  zimg = encoding.encode_images(encoders, params, source,
                               gallery.image_positions)
  ztxt, length, truncated = encoding.encode_texts(encoders, params, tokenizer,
                                                 gallery.texts)
  images = np.arange(len(zimg))
  owners = np.repeat(images, CAPTIONS_PER_IMAGE)  # [M * K] each's image
  zcap = ztxt[gallery.captions.reshape(-1)]
  i2t = scoring.rank_gallery(encoders, zimg, images, zcap, owners).rivals
  t2i = scoring.rank_gallery(encoders, zcap, owners, zimg, images).rivals
  return scoring.SplitScores(
      index=gallery.index,
      scores=np.column_stack([i2t, t2i.reshape(-1, CAPTIONS_PER_IMAGE)]),
      num_images=len(zimg), num_texts=len(ztxt), text_length=length,
      num_truncated=truncated)


def recall(ranks: np.ndarray) -> dict[str, float]:
  """{"recall@k": mean(ranks < k)} for k in RECALL_AT, over any shape."""
  return {f"recall@{k}": float((ranks < k).mean()) for k in RECALL_AT}


def summarize(scores: Mapping[str, scoring.SplitScores]) -> dict:
  """Recall@k both ways per subset.

  Args:
    scores: {subset: its scores}.

  Returns:
    {"subsets": {subset: {"image_to_text": recalls, "text_to_image":
    recalls, and counts}}}.
  """
  return {"subsets": {
      name: {"image_to_text": recall(s.scores[:, 0]),
             "text_to_image": recall(s.scores[:, 1:]),
             "images": s.num_images, "captions": s.scores[:, 1:].size,
             "texts": s.num_texts, "text_length": s.text_length,
             "truncated": s.num_truncated}
      for name, s in scores.items()}}


def headline(summary: dict) -> dict[str, float]:
  """Recall@1 and @5 both ways per subset."""
  return {f"{name} {short} R@{k}": row[d][f"recall@{k}"]
          for name, row in summary["subsets"].items()
          for d, short in (("image_to_text", "i2t"), ("text_to_image", "t2i"))
          for k in RECALL_AT[:2]}


_DIRECTIONS = {"image_to_text": "image→text", "text_to_image": "text→image"}


def format_table(summary: dict) -> str:
  """A markdown table of `summary` (from `summarize`), recalls in percent."""
  heads = [f"{arrow} R@{k}" for arrow in _DIRECTIONS.values()
           for k in RECALL_AT]
  lines = ["| subset | images | captions | " + " | ".join(heads) + " |",
           "|---" * (3 + len(heads)) + "|"]
  for name, row in summary["subsets"].items():
    recalls = [100 * row[d][f"recall@{k}"] for d in _DIRECTIONS
               for k in RECALL_AT]
    lines.append(f"| {name} | {row['images']} | {row['captions']} | "
                 + " | ".join(f"{r:.1f}" for r in recalls) + " |")
  return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
  """Writes a PNG: Recall@k per direction (and subset), grouped by k."""
  plots.bars(path, summary["eval"], [f"R@{k}" for k in RECALL_AT], {
      f"{name} {arrow}": [row[d][f"recall@{k}"] for k in RECALL_AT]
      for name, row in summary["subsets"].items()
      for d, arrow in _DIRECTIONS.items()}, ylabel="recall (%)",
             full_scale=True)
