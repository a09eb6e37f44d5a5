"""Training images with their captions, hard negatives and hard positives.

One example per image: the image once (by default resized so its shorter
side is 256 pixels), all its captions, and per caption its hard negatives,
hard positives and NegCLIP hard-negative images. Examples are stored in the
order of the source (`images` of COCO, first appearance in NegCLIP's TSV),
and `info.metadata["caption_ids"][split]` lists each example's caption ids,
so the input pipeline enumerates (image, caption) pairs without reading
images.

Configs `coco*`: COCO train2017 with the hard positives that Kamath et al.
(ECCV 2024) released for fine-tuning (`hard_positives_ft/{swap,replace}_hp
.jsonl`) and hard negatives from `hard_negatives/hard_negatives.jsonl`. All
three JSONL files have one line per entry of `annotations` in
`captions_train2017.json`, in that order: the HP files a JSON string per line
(`"None"` when the caption has no hard positive of that kind), the HN file a
JSON list of strings per line (`[]` when it has none). Hard-negative images:
`python -m hardpos_jax.neighbours` computes them from a model.

Configs `negclip*`: NegCLIP's COCO 2014 TSVs (Yuksekgonul et al., ICLR 2023),
one row per caption: hard negatives from column `neg_caption`, hard-negative
images from `neg_image` (row numbers of the same TSV, whose caption and image
NegCLIP's `CsvDataset.__getitem__` trains next to the row's), no hard
positives. A row's caption id is its row number.

Suffixes: none, shorter side 256 (224-pixel models); `_384`, shorter side
384 (336-pixel models such as L/14@336); `_original`, the source bytes.
Resized images are PIL bicubic (antialiased) re-encoded as JPEG quality 95.
"""

from __future__ import annotations

import ast
import collections
import csv
import dataclasses
import functools
import pathlib
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders import common
from tfds_builders.coco_hard_pos_neg import layout

_NEGCLIP_COLUMNS = ("title", "filepath", "neg_caption")
# Optional: without it, no hard-negative images.
_NEGCLIP_NEG_IMAGE = "neg_image"

_MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
coco: manual_dir holds `{layout.CAPTIONS_FILE}` and `{layout.IMAGE_DIR}/`
from COCO 2017, `{layout.HARD_POSITIVE_FILES["swap"]}` and
`{layout.HARD_POSITIVE_FILES["replace"]}` from
github.com/amitakamath/hard_positives, and `{layout.HARD_NEGATIVE_FILE}`.
negclip: manual_dir holds `{layout.NEGCLIP_FILES["train"]}` and/or
`{layout.NEGCLIP_FILES["validation"]}` from NegCLIP, and the images at the
paths of their `filepath` column (`coco/train2014/...`, `coco/val2014/...`).
See docs/data.md.
"""


@dataclasses.dataclass(eq=False)
class CocoConfig(tfds.core.BuilderConfig):
  """A source and an image size.

  Attributes:
    source: "coco" (train2017 + released HPs) or "negclip" (NegCLIP's TSVs).
    shorter_side: images whose shorter side is longer are resized to it;
      None keeps the source bytes.
  """

  source: str = "coco"
  shorter_side: int | None = 256


def _configs() -> list[CocoConfig]:
  sizes = {"": 256, "_384": 384, "_original": None}
  about = {"coco": "COCO train2017 with released HPs and CREPE-style HNs",
           "negclip": "NegCLIP's COCO 2014 TSVs; no hard positives"}
  return [
      CocoConfig(name=source + suffix, source=source, shorter_side=side,
                 description=f"{text}; images "
                 + (f"with shorter side {side}" if side else "as released"))
      for source, text in about.items() for suffix, side in sizes.items()
  ]


class CocoHardPosNeg(common.ManualDataBuilder):
  """Images with captions, hard negatives and hard positives."""

  VERSION = tfds.core.Version("2.0.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "2.0.0": "One example per image (all its captions); images resized at "
               "build time (configs by size); NegCLIP's neg_image kept.",
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = _configs()

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self,
        in_key_order=True,
        description=__doc__,
        features=common.training_features(),
        homepage="https://github.com/amitakamath/hard_positives",
        citation="Kamath et al., The Hard Positive Truth about "
        "Vision-Language Compositionality, ECCV 2024.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    side = self.builder_config.shorter_side
    if self.builder_config.source == "coco":
      inputs = _read_coco(manual_dir)
      items = (
          (f"images[{k}] (id {image_id})", (k, image_id))
          for k, image_id in enumerate(inputs.image_ids)
      )
      make_example = functools.partial(_coco_example, inputs, side)
      return {"train": self._indexed("train", self._generate_examples(
          "train", inputs.captions_path, items, make_example))}
    paths = {
        split: manual_dir / name
        for split, name in layout.NEGCLIP_FILES.items()
        if (manual_dir / name).is_file()
    }
    if not paths:
      raise common.DataError(
          f"{manual_dir} holds neither"
          f" {' nor '.join(layout.NEGCLIP_FILES.values())}"
      )
    splits = {}
    for split, path in paths.items():
      tsv = _read_negclip(path)
      items = (
          (f"rows {rows} (image {filepath})", (k, filepath, rows))
          for k, (filepath, rows) in enumerate(tsv.images.items())
      )
      make_example = functools.partial(_negclip_example, manual_dir, tsv, side)
      splits[split] = self._indexed(split, self._generate_examples(
          split, path, items, make_example,
          check_skipped=functools.partial(_check_neg_images, tsv)))
    return splits

  def _indexed(self, split, examples):
    return common.record_caption_ids(self.info, split, examples)


@dataclasses.dataclass(frozen=True)
class _CocoInputs:
  """The parsed `coco` inputs; JSONL files as (path, lines)."""

  manual_dir: pathlib.Path
  captions_path: pathlib.Path
  annotations: list[Any]
  # `images` entries in file order, and each one's annotation indices.
  image_ids: list[int]
  images_by_id: dict[int, Any]
  annotations_of: dict[int, list[int]]
  hard_negatives: tuple[pathlib.Path, list[str]]
  hard_positives: dict[str, tuple[pathlib.Path, list[str]]]


def _read_coco(manual_dir: pathlib.Path) -> _CocoInputs:
  """Reads the `coco` files; checks lengths and that annotations have images.

  Raises:
    DataError: a file is missing or malformed, the JSONL files do not align
      with `annotations`, an annotation's image is not in `images`, or an
      image id is given twice.
  """
  captions_path = manual_dir / layout.CAPTIONS_FILE
  coco = common.read_json(captions_path)
  try:
    images = common.field(coco, "images", list)
    annotations = common.field(coco, "annotations", list)
  except common.DataError as e:
    raise common.DataError(f"{captions_path}: {e}") from e

  def aligned_lines(name):
    path = manual_dir / name
    lines = common.read_lines(path)
    if len(lines) != len(annotations):
      raise common.DataError(
          f"{path} has {len(lines)} lines but {captions_path} has"
          f" {len(annotations)} annotations; they must align line by line."
      )
    return path, lines

  images_by_id = {}
  for k, image in enumerate(images):
    try:
      image_id = common.field(image, "id", int)
    except common.DataError as e:
      raise common.DataError(f"{captions_path}, images[{k}]: {e}") from e
    if image_id in images_by_id:
      raise common.DataError(
          f"{captions_path}, images[{k}]: id {image_id} is given twice")
    images_by_id[image_id] = image
  annotations_of = collections.defaultdict(list)
  for i, annotation in enumerate(annotations):
    try:
      image_id = common.field(annotation, "image_id", int)
      if image_id not in images_by_id:
        raise common.DataError(f"image_id {image_id} is not in 'images'")
    except common.DataError as e:
      raise common.DataError(f"{captions_path}, annotations[{i}]: {e}") from e
    annotations_of[image_id].append(i)
  return _CocoInputs(
      manual_dir=manual_dir,
      captions_path=captions_path,
      annotations=annotations,
      image_ids=list(images_by_id),
      images_by_id=images_by_id,
      annotations_of=dict(annotations_of),
      hard_negatives=aligned_lines(layout.HARD_NEGATIVE_FILE),
      hard_positives={
          kind: aligned_lines(name)
          for kind, name in layout.HARD_POSITIVE_FILES.items()
      },
  )


def _coco_caption(inputs: _CocoInputs, index: int) -> common.Example:
  """The caption entry of annotation `index` and JSONL line `index + 1`."""
  annotation = inputs.annotations[index]
  hn_path, hn_lines = inputs.hard_negatives
  where = f"{hn_path}, line {index + 1}"
  hard_negatives = common.parse_json_line(hn_path, index, hn_lines[index])
  if not isinstance(hard_negatives, list):
    raise common.DataError(f"{where}: not a JSON list: {hard_negatives!r}")
  for hard_negative in hard_negatives:
    common.check_text(hard_negative, f"{where}: an entry")
  hard_positives, kinds = [], []
  for kind, (path, lines) in inputs.hard_positives.items():
    hard_positive = common.parse_json_line(path, index, lines[index])
    common.check_text(hard_positive, f"{path}, line {index + 1}")
    if hard_positive != layout.NO_HARD_POSITIVE:
      hard_positives.append(hard_positive)
      kinds.append(kind)
  return {
      "caption": common.text(annotation, "caption"),
      "caption_id": common.field(annotation, "id", int),
      "hard_negatives": hard_negatives,
      "hard_positives": hard_positives,
      "hard_positive_kinds": kinds,
      "neg_images": [],
  }


def _coco_example(inputs: _CocoInputs, shorter_side: int | None,
                  item: tuple[int, int]) -> tuple[int, common.Example]:
  """Returns the example of entry `k` of `images`, with all its captions."""
  k, image_id = item
  indices = inputs.annotations_of.get(image_id)
  if not indices:
    raise common.DataError("the image has no caption in 'annotations'")
  captions = []
  for index in indices:
    try:
      captions.append(_coco_caption(inputs, index))
    except common.DataError as e:
      raise common.DataError(f"annotations[{index}]: {e}") from e
  file_name = common.text(inputs.images_by_id[image_id], "file_name")
  image_path = common.manual_path(inputs.manual_dir / layout.IMAGE_DIR,
                                  file_name)
  return k, {
      "image": common.read_image(image_path, shorter_side=shorter_side),
      "image_id": str(image_id),
      "captions": captions,
  }


@dataclasses.dataclass(frozen=True)
class _NegclipTsv:
  """A parsed NegCLIP TSV, rows grouped by image.

  Attributes:
    path: the file.
    header: its header.
    rows: per row, the line where it ends and its fields.
    images: each image's `filepath` -> its row numbers, in first-appearance
      order.
  """

  path: pathlib.Path
  header: list[str]
  rows: list[tuple[int, list[str]]]
  images: dict[str, list[int]]

  def where(self, row: int) -> str:
    return f"row {row} (line {self.rows[row][0]})"


def _read_negclip(path: pathlib.Path) -> _NegclipTsv:
  """Reads a TSV, groups its rows by image and checks every `neg_image`.

  Raises:
    DataError: as `read_negclip_tsv`, or a row has the wrong field count, or
      a `neg_image` cell is not a list of row numbers of this file.
  """
  header, rows = read_negclip_tsv(path)
  tsv = _NegclipTsv(path=path, header=header, rows=rows, images={})
  for row, (_, values) in enumerate(rows):
    if len(values) != len(header):
      raise common.DataError(
          f"{path}, {tsv.where(row)}: has {len(values)} fields but the header"
          f" has {len(header)}")
    filepath = dict(zip(header, values))["filepath"]
    tsv.images.setdefault(filepath, []).append(row)
  for row in range(len(rows)):
    try:
      _neg_images(tsv, row)
    except common.DataError as e:
      raise common.DataError(f"{path}, {tsv.where(row)}: {e}") from e
  return tsv


def _neg_images(tsv: _NegclipTsv, row: int) -> list[int]:
  """The `neg_image` row numbers of `row`; [] without the column."""
  if _NEGCLIP_NEG_IMAGE not in tsv.header:
    return []
  value = tsv.rows[row][1][tsv.header.index(_NEGCLIP_NEG_IMAGE)]
  try:
    rows = ast.literal_eval(value)  # Literals only, never code.
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
    raise common.DataError(
        f"neg_image is not a Python list literal: {value!r:.200}") from e
  if not isinstance(rows, list) or not all(
      isinstance(r, int) and not isinstance(r, bool) for r in rows):
    raise common.DataError(f"neg_image is not a list of row numbers: "
                           f"{value!r:.200}")
  for r in rows:
    if not 0 <= r < len(tsv.rows):
      raise common.DataError(
          f"neg_image {r} is out of range: the file has rows 0.."
          f"{len(tsv.rows) - 1}")
  return rows


def _negclip_example(
    manual_dir: pathlib.Path, tsv: _NegclipTsv, shorter_side: int | None,
    item: tuple[int, str, list[int]]) -> tuple[int, common.Example]:
  """Returns the example of image number `k` with its rows' captions."""
  k, filepath, rows = item
  captions = []
  for row in rows:
    values = dict(zip(tsv.header, tsv.rows[row][1]))
    try:
      captions.append({
          "caption": common.check_text(values["title"], "title"),
          "caption_id": row,
          "hard_negatives": parse_negclip_list(values["neg_caption"]),
          "hard_positives": [],
          "hard_positive_kinds": [],
          "neg_images": _neg_images(tsv, row),
      })
    except common.DataError as e:
      raise common.DataError(f"{tsv.where(row)}: {e}") from e
  common.check_text(filepath, "filepath")
  image = common.read_image(common.manual_path(manual_dir, filepath),
                            shorter_side=shorter_side)
  # NegCLIP names images by path; these paths are unique per image.
  return k, {"image": image, "image_id": filepath, "captions": captions}


def _check_neg_images(tsv: _NegclipTsv,
                      skipped: list[tuple[Any, str]]) -> None:
  """Fails the build if a kept row's `neg_image` names a skipped row."""
  reasons = {}
  for (_, _, rows), reason in skipped:
    reasons.update(dict.fromkeys(rows, reason))
  if not reasons:
    return
  kept = (r for r in range(len(tsv.rows)) if r not in reasons)
  for row in kept:
    for target in _neg_images(tsv, row):
      if target in reasons:
        raise common.DataError(
            f"{tsv.path}, {tsv.where(row)}: neg_image {target} points at a "
            f"skipped row ({reasons[target]}); fix that row or drop it from "
            "neg_image")


def read_negclip_tsv(
    path: pathlib.Path,
) -> tuple[list[str], list[tuple[int, list[str]]]]:
  """Reads a NegCLIP TSV as pandas.read_csv(sep="\\t") would split it.

  Args:
    path: the TSV; its first, unnamed column is pandas' row index.

  Returns:
    The header, and per row the line where it ends (1-based; quoted fields
    may span lines) and its fields.

  Raises:
    DataError: the file is missing or unreadable, lacks a needed column, or
      is not valid TSV.
  """
  if not path.is_file():
    raise common.DataError(f"{path} is missing (see docs/data.md).")
  try:
    with path.open(newline="", encoding="utf-8") as f:
      reader = csv.reader(f, delimiter="\t")
      header = next(reader, [])
      rows = [(reader.line_num, values) for values in reader]
  except (OSError, UnicodeDecodeError) as e:
    raise common.DataError(f"{path} cannot be read: {e}") from e
  except csv.Error as e:
    raise common.DataError(f"{path}, line {reader.line_num}: {e}") from e
  missing = [c for c in _NEGCLIP_COLUMNS if c not in header]
  if missing:
    raise common.DataError(f"{path}: the header {header} lacks {missing}")
  return header, rows


def parse_negclip_list(value: str) -> list[str]:
  """Parses a `neg_caption` cell: a Python list literal of captions.

  Args:
    value: the cell, e.g. `"['a dog on a cat', 'a cat on a dog']"`.

  Returns:
    The captions; an empty list means no hard negatives.

  Raises:
    DataError: the cell is not a list literal of non-blank strings.
  """
  try:
    # literal_eval evaluates literals only, never code.
    captions = ast.literal_eval(value)
  except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
    raise common.DataError(
        f"neg_caption is not a Python list literal: {value!r:.200}"
    ) from e
  if not isinstance(captions, list):
    raise common.DataError(f"neg_caption is not a list: {value!r:.200}")
  return [common.check_text(c, "a neg_caption entry") for c in captions]
