"""Training captions with hard negatives and hard positives, as TFDS.

Config `coco`: COCO train2017, one example per caption, with the hard
positives that Kamath et al. (ECCV 2024) released for fine-tuning
(`hard_positives_ft/{swap,replace}_hp.jsonl`) and hard negatives from
`hard_negatives/hard_negatives.jsonl`. All three JSONL files have one line
per entry of `annotations` in `captions_train2017.json`, in that order: the
HP files a JSON string per line (`"None"` when the caption has no hard
positive of that kind), the HN file a JSON list of strings per line (`[]`
when it has none).

Config `negclip`: NegCLIP's COCO 2014 TSVs (Yuksekgonul et al., ICLR 2023),
with the hard negatives of column `neg_caption` and no hard positives.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import functools
import pathlib
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders import common

CAPTIONS_FILE = "annotations/captions_train2017.json"
IMAGE_DIR = "train2017"
HARD_POSITIVE_FILES = {
    "swap": "hard_positives_ft/swap_hp.jsonl",
    "replace": "hard_positives_ft/replace_hp.jsonl",
}
HARD_NEGATIVE_FILE = "hard_negatives/hard_negatives.jsonl"
# How the released HP files mark a caption without a hard positive.
NO_HARD_POSITIVE = "None"

NEGCLIP_FILES = {
    "train": "train_neg_clip.tsv",
    "validation": "valid_neg_clip.tsv",
}
_NEGCLIP_COLUMNS = ("title", "filepath", "neg_caption")

_MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
coco: manual_dir holds `{CAPTIONS_FILE}` and `{IMAGE_DIR}/` from COCO 2017,
`{HARD_POSITIVE_FILES["swap"]}` and `{HARD_POSITIVE_FILES["replace"]}` from
github.com/amitakamath/hard_positives, and `{HARD_NEGATIVE_FILE}`.
negclip: manual_dir holds `{NEGCLIP_FILES["train"]}` and/or
`{NEGCLIP_FILES["validation"]}` from NegCLIP, and the images at the paths of
their `filepath` column (`coco/train2014/...`, `coco/val2014/...`).
See docs/data.md.
"""


class CocoHardPosNeg(common.ManualDataBuilder):
  """Image-caption pairs with hard negatives and hard positives."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name="coco",
          description="COCO train2017 with released HPs and CREPE-style HNs.",
      ),
      tfds.core.BuilderConfig(
          name="negclip",
          description="NegCLIP's COCO 2014 TSVs; no hard positives.",
      ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info(
        description=__doc__,
        features=common.training_features(),
        homepage="https://github.com/amitakamath/hard_positives",
        citation="Kamath et al., The Hard Positive Truth about "
        "Vision-Language Compositionality, ECCV 2024.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    if self.builder_config.name == "coco":
      inputs = _read_coco(manual_dir)
      items = ((f"annotations[{i}]", i) for i in range(len(inputs.annotations)))
      make_example = functools.partial(_coco_example, inputs)
      return {
          "train": self._generate_examples(
              "train", inputs.captions_path, items, make_example
          )
      }
    paths = {
        split: manual_dir / name
        for split, name in NEGCLIP_FILES.items()
        if (manual_dir / name).is_file()
    }
    if not paths:
      raise common.DataError(
          f"{manual_dir} holds neither {' nor '.join(NEGCLIP_FILES.values())}"
      )
    splits = {}
    for split, path in paths.items():
      header, rows = read_negclip_tsv(path)
      items = (
          (f"row {i} (line {line})", (i, values))
          for i, (line, values) in enumerate(rows)
      )
      make_example = functools.partial(_negclip_example, manual_dir, header)
      splits[split] = self._generate_examples(split, path, items, make_example)
    return splits


@dataclasses.dataclass(frozen=True)
class _CocoInputs:
  """The parsed `coco` inputs; JSONL files as (path, lines)."""

  manual_dir: pathlib.Path
  captions_path: pathlib.Path
  annotations: list[Any]
  images_by_id: dict[Any, Any]
  hard_negatives: tuple[pathlib.Path, list[str]]
  hard_positives: dict[str, tuple[pathlib.Path, list[str]]]


def _read_coco(manual_dir: pathlib.Path) -> _CocoInputs:
  """Reads the `coco` files and checks that their lengths agree."""
  captions_path = manual_dir / CAPTIONS_FILE
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

  return _CocoInputs(
      manual_dir=manual_dir,
      captions_path=captions_path,
      annotations=annotations,
      # Entries are checked when a caption uses them, so that a bad one stops
      # (or is skipped with) only the captions of its image.
      images_by_id={
          image.get("id"): image for image in images if isinstance(image, dict)
      },
      hard_negatives=aligned_lines(HARD_NEGATIVE_FILE),
      hard_positives={
          kind: aligned_lines(name)
          for kind, name in HARD_POSITIVE_FILES.items()
      },
  )


def _coco_example(
    inputs: _CocoInputs, index: int
) -> tuple[int, common.Example]:
  """Returns the example of annotation `index` and line `index + 1`."""
  annotation = inputs.annotations[index]
  caption_id = common.field(annotation, "id", int)
  image_id = common.field(annotation, "image_id", int)
  if image_id not in inputs.images_by_id:
    raise common.DataError(f"image_id {image_id} is not in 'images'")
  try:
    file_name = common.text(inputs.images_by_id[image_id], "file_name")
  except common.DataError as e:
    raise common.DataError(f"'images' entry {image_id}: {e}") from e
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
    if hard_positive != NO_HARD_POSITIVE:
      hard_positives.append(hard_positive)
      kinds.append(kind)
  image_path = common.manual_path(inputs.manual_dir / IMAGE_DIR, file_name)
  return caption_id, {
      "image": common.read_image(image_path),
      "caption": common.text(annotation, "caption"),
      "hard_negatives": hard_negatives,
      "hard_positives": hard_positives,
      "hard_positive_kinds": kinds,
      "image_id": str(image_id),
      "caption_id": caption_id,
  }


def _negclip_example(
    manual_dir: pathlib.Path, header: list[str], item: tuple[int, list[str]]
) -> tuple[int, common.Example]:
  """Returns the example of TSV row `index` (0-based, header excluded)."""
  index, values = item
  if len(values) != len(header):
    raise common.DataError(
        f"has {len(values)} fields but the header has {len(header)}"
    )
  row = dict(zip(header, values))
  filepath = common.check_text(row["filepath"], "filepath")
  return index, {
      "image": common.read_image(common.manual_path(manual_dir, filepath)),
      "caption": common.check_text(row["title"], "title"),
      "hard_negatives": parse_negclip_list(row["neg_caption"]),
      "hard_positives": [],
      "hard_positive_kinds": [],
      # NegCLIP names images by path; these paths are unique per image.
      "image_id": filepath,
      "caption_id": index,
  }


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
