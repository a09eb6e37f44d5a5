"""What the hardpos_jax builders share: input checks, images, skipping.

Every problem with a manual_dir file raises `DataError` with a message that
names the file and the row (or key, or line). Problems with one example are
raised inside `ManualDataBuilder._generate_examples`, which either stops the
build (the default) or, with `skip_bad_examples=True`, skips the example, logs
it and counts it in `info.metadata["skipped"]`. Problems with a whole file (a
missing file, a JSON syntax error, files that do not line up) always stop the
build.
"""

from __future__ import annotations

import inspect
import io
import json
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from absl import logging
from etils import epath
from PIL import Image
import numpy as np
import tensorflow_datasets as tfds

# tf.image.encode_jpeg's default, used when an image must be re-encoded (a
# crop, or a greyscale/CMYK/non-JPEG source).
JPEG_QUALITY = 95

# How many skip reasons `info.metadata` keeps per split; the count is exact.
MAX_SKIP_REASONS = 100

Key = int | str
Example = dict[str, Any]


class DataError(ValueError):
  """Bad input in a manual_dir file; the message names file and row."""


class MissingDataError(DataError):
  """A dataset's released files are not there to build it from."""


def _check_exists(path: pathlib.Path) -> None:
  if not path.is_file():
    raise MissingDataError(
        f"{path} is missing: manual_dir must hold it (see docs/data.md)."
    )


def read_json(path: pathlib.Path) -> Any:
  """Returns the parsed JSON file at `path`; any problem names the file."""
  _check_exists(path)
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise DataError(
        f"{path}: malformed JSON at line {e.lineno}, column {e.colno}: {e.msg}"
    ) from e
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path} cannot be read: {e}") from e


def read_json_list(path: pathlib.Path, what: str = "rows") -> list[Any]:
  """Returns the JSON list at `path`; `what` names its items in the error."""
  items = read_json(path)
  if not isinstance(items, list):
    raise DataError(
        f"{path}: expected a JSON list of {what}, got {type(items).__name__}")
  return items


def check_present(what: str, files: Iterable[pathlib.Path] = (),
                  dirs: Iterable[pathlib.Path] = ()) -> None:
  """Raises one MissingDataError that lists every file and folder missing.

  Called before a build writes anything, so that an incomplete download
  stops it at once, and is reported whole rather than a file per attempt.

  Args:
    what: what needs them, e.g. "vl_checklist/relation".
    files: files that must exist.
    dirs: folders that must exist.
  """
  missing = sorted({str(f) for f in files if not f.is_file()}
                   | {str(d) for d in dirs if not d.is_dir()})
  if missing:
    raise MissingDataError(
        f"{what} needs these, missing from manual_dir: {', '.join(missing)}"
        " (see docs/data.md)")


def read_lines(path: pathlib.Path) -> list[str]:
  """Returns the lines of a JSONL file; parse each with `parse_json_line`."""
  _check_exists(path)
  try:
    return path.read_text(encoding="utf-8").splitlines()
  except (OSError, UnicodeDecodeError) as e:
    raise DataError(f"{path} cannot be read: {e}") from e


def parse_json_line(path: pathlib.Path, index: int, line: str) -> Any:
  """Parses line `index` (0-based) of the JSONL file `path`."""
  try:
    return json.loads(line)
  except json.JSONDecodeError as e:
    raise DataError(
        f"{path}, line {index + 1}: malformed JSON at column {e.colno}: {e.msg}"
    ) from e


def as_object(value: Any, what: str) -> Mapping[str, Any]:
  """Returns `value` if it is a JSON object; `what` names it in the error."""
  if not isinstance(value, Mapping):
    raise DataError(f"{what} is not a JSON object: {value!r:.200}")
  return value


def field(row: Any, key: str, kind: type | tuple[type, ...]) -> Any:
  """Returns `row[key]`, checking that `row` is an object and the type."""
  row = as_object(row, "the row")
  if key not in row:
    raise DataError(f"missing key {key!r}")
  value = row[key]
  # bool is an int in Python but never a valid number or id here.
  if isinstance(value, bool) or not isinstance(value, kind):
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = " or ".join(k.__name__ for k in kinds)
    raise DataError(f"{key!r} is {value!r}, not of type {names}")
  return value


def text(row: Any, key: str) -> str:
  """Returns the string `row[key]`, which must not be empty or blank."""
  return check_text(field(row, key, str), key)


def check_text(value: Any, what: str) -> str:
  """Returns `value` unchanged if it is a non-blank string."""
  if not isinstance(value, str):
    raise DataError(f"{what} is {value!r}, not a string")
  if not value.strip():
    raise DataError(f"{what} is empty: {value!r}")
  return value


def manual_path(root: pathlib.Path, relative: str) -> pathlib.Path:
  """Returns `root / relative`; `relative` must stay inside `root`."""
  path = pathlib.PurePosixPath(relative)
  if path.is_absolute() or ".." in path.parts:
    raise DataError(f"path {relative!r} must be relative to {root}")
  return root / path


def read_image(
    path: pathlib.Path,
    box: tuple[float, float, float, float] | None = None,
    shorter_side: int | None = None,
    as_released: bool = False,
) -> bytes:
  """Returns the image at `path` as RGB JPEG bytes, optionally cropped.

  An RGB JPEG that needs no crop or resize is returned byte for byte, so
  models see exactly the source pixels. Anything else is decoded, converted
  to RGB (greyscale and CMYK included), cropped, resized and re-encoded at
  `JPEG_QUALITY`, unless `as_released`.

  Args:
    path: the image file.
    box: `(x, y, w, h)` in pixels, cropped as ARO's VG_Attribution does, with
      PIL `image.crop((x, y, x + w, y + h))`; it must lie inside the image.
    shorter_side: if the image's shorter side is longer, it is resized
      (PIL bicubic, antialiased, aspect kept) to this; never enlarged.
    as_released: return the file's bytes, in any format and mode, once PIL
      has decoded the whole image (no box or shorter_side).

  Returns:
    JPEG bytes of an RGB image, or the file's bytes if `as_released`.

  Raises:
    DataError: the file is missing, empty or not a readable image, or the box
      is empty or reaches outside the image.
  """
  if as_released and (box is not None or shorter_side is not None):
    raise ValueError("An image read as released cannot be cropped or resized")
  try:
    data = path.read_bytes()
  except FileNotFoundError as e:
    raise DataError(f"image {path} does not exist") from e
  except OSError as e:
    raise DataError(f"image {path} cannot be read: {e}") from e
  if not data:
    raise DataError(f"image {path} is empty (0 bytes)")
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # Decodes everything, so truncated files fail here.
      size = _resized(image.size, shorter_side)
      if as_released or (box is None and size == image.size
                         and image.format == "JPEG" and image.mode == "RGB"):
        return data
      image = image.convert("RGB")
  except Image.UnidentifiedImageError as e:
    raise DataError(f"image {path} is in no format PIL can read") from e
  # PIL reports undecodable data as OSError, SyntaxError or ValueError, and
  # huge images as DecompressionBombError.
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"image {path} is not a readable image: {e}") from e
  if box is not None:
    image = image.crop(_crop_box(path, image.size, box))
  size = _resized(image.size, shorter_side)
  if size != image.size:
    image = image.resize(size, Image.Resampling.BICUBIC)
  out = io.BytesIO()
  image.save(out, format="JPEG", quality=JPEG_QUALITY)
  return out.getvalue()


def _resized(size: tuple[int, int],
             shorter_side: int | None) -> tuple[int, int]:
  """(width, height) with the shorter side cut to `shorter_side` if longer."""
  if shorter_side is None or min(size) <= shorter_side:
    return size
  scale = shorter_side / min(size)
  return tuple(max(1, round(v * scale)) for v in size)


def _crop_box(
    path: pathlib.Path,
    size: tuple[int, int],
    box: tuple[float, float, float, float],
) -> tuple[int, int, int, int]:
  """Returns the crop rectangle of `box`; errors if it is not in the image."""
  x, y, w, h = box
  # PIL rounds crop coordinates like this (Image._crop); checking the rounded
  # box tests exactly the pixels that the crop takes.
  left, top, right, bottom = (round(v) for v in (x, y, x + w, y + h))
  width, height = size
  if not (0 <= left < right <= width and 0 <= top < bottom <= height):
    raise DataError(
        f"bbox (x, y, w, h) = {box} is empty or outside the {width}x{height}"
        f" image {path}"
    )
  return left, top, right, bottom


def training_features(image_format: str = "jpeg") -> tfds.features.FeaturesDict:
  """The training schema of coco_hard_pos_neg and synthetic_shapes.

  One example per image, so each image is stored (and decoded per draw)
  once, with every caption of it and, per caption, its hard negatives and
  hard positives.
  """
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(encoding_format=image_format),
      "image_id": tfds.features.Text(),
      "captions": tfds.features.Sequence({
          "caption": tfds.features.Text(),
          # Unique within the split.
          "caption_id": tfds.features.Scalar(dtype=np.int64),
          "hard_negatives": tfds.features.Sequence(tfds.features.Text()),
          "hard_positives": tfds.features.Sequence(tfds.features.Text()),
          # "swap" or "replace", one per hard positive.
          "hard_positive_kinds": tfds.features.Sequence(tfds.features.Text()),
          # NegCLIP's hard-negative images: caption ids (same split), each a
          # caption of a neighbouring image; empty when the source has none.
          "neg_images": tfds.features.Sequence(
              tfds.features.Scalar(dtype=np.int64)),
      }),
  })


def dataset_info(builder: tfds.core.DatasetBuilder, *, in_key_order: bool = False,
                 **kwargs: Any) -> tfds.core.DatasetInfo:
  """DatasetInfo with metadata (skip counts, caption index).

  Args:
    builder: the builder.
    in_key_order: store examples sorted by their integer key instead of
      TFDS's hash order. The training datasets do, so that
      `record_caption_ids` can write, at build time, the caption ids of the
      example at each position: the input pipeline enumerates every (image,
      caption) pair from that index without reading an image.
    **kwargs: other `DatasetInfo` arguments (description, features, ...).

  Returns:
    The DatasetInfo.
  """
  return tfds.core.DatasetInfo(builder=builder, disable_shuffling=in_key_order,
                               metadata=tfds.core.MetadataDict(), **kwargs)


def record_caption_ids(info: tfds.core.DatasetInfo, split: str,
                       examples: Iterable[tuple[int, Example]]
                       ) -> Iterator[tuple[int, Example]]:
  """Yields `examples`, writing `info.metadata["caption_ids"][split]`.

  Args:
    info: a `dataset_info(..., in_key_order=True)`.
    split: the split being written.
    examples: `(key, example)` in the training schema, keys increasing (the
      storage order).

  Yields:
    The same pairs.

  Raises:
    ValueError: the keys do not increase (a builder bug: positions would not
      match the stored order).
  """
  ids, last = [], None
  for key, example in examples:
    if last is not None and key <= last:
      raise ValueError(f"{split}: key {key} after {last}; keys must increase")
    last = key
    ids.append([int(c["caption_id"]) for c in example["captions"]])
    yield key, example
  info.metadata.setdefault("caption_ids", {})[split] = ids


def item_features(
    texts: Sequence[str], index_key: str = "index", image_format: str = "jpeg",
    **more: tfds.features.FeatureConnector) -> tfds.features.FeaturesDict:
  """A benchmark item's schema: `image`, the `texts` (Text features), its id
  `index_key` (int64), then `more`, in this order.

  Args:
    texts: text features, e.g. caption, hard_negative.
    index_key: the int64 feature that identifies the item.
    image_format: how `image` is stored.
    **more: any other features.
  """
  return tfds.features.FeaturesDict({
      "image": tfds.features.Image(encoding_format=image_format),
      **{name: tfds.features.Text() for name in texts},
      index_key: tfds.features.Scalar(dtype=np.int64),
      **more,
  })


def benchmark_features(
    image_format: str = "jpeg") -> tfds.features.FeaturesDict:
  """The benchmark schema of hard_positives and synthetic_shapes_benchmark;
  `index` is the item's row in its source file (or its key, synthetic)."""
  return item_features(
      ("caption", "hard_negative", "hard_positive", "image_id"),
      image_format=image_format)


def file_configs(names: Sequence[str]) -> list[tfds.core.BuilderConfig]:
  """A config per released file `data/<name>.json`, named `name`: the
  benchmarks released as a JSON file per subset over the COCO 2017
  validation images (SugarCrepe, SugarCrepe++)."""
  return [tfds.core.BuilderConfig(name=name, description=f"data/{name}.json")
          for name in names]


def file_instructions(repository: str) -> str:
  """MANUAL_DOWNLOAD_INSTRUCTIONS of `file_configs` builders whose files come
  from github.com/<repository>."""
  return f"""\
manual_dir holds `data/<subset>.json` from github.com/{repository} and the
COCO 2017 validation images in `val2017/` (unzipped
http://images.cocodataset.org/zips/val2017.zip). See docs/data.md.
"""


def read_config_file(
    manual_dir: pathlib.Path, config: tfds.core.BuilderConfig
) -> tuple[pathlib.Path, Any]:
  """(path, parsed JSON) of the `file_configs` config's file in manual_dir."""
  path = manual_dir / "data" / f"{config.name}.json"
  return path, read_json(path)


class ArrayRecordBuilder(
    tfds.core.GeneratorBasedBuilder, skip_registration=True
):
  """A builder outside TFDS's tree that writes array_record by default."""

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 finds builders outside its own tree through the
    # `importlib_resources` backport, which is not installed here; this is
    # the fallback TFDS itself uses.
    return epath.Path(inspect.getfile(cls))

  def download_and_prepare(self, *, file_format: Any = None, **kwargs: Any):
    """As TFDS's, but writes array_record unless told otherwise.

    The input pipeline reads examples by random access (`as_data_source`),
    which needs array_record. The default is set here rather than in
    `__init__` so that a dataset already prepared in another format still
    loads.

    Args:
      file_format: the record format; `None` means array_record.
      **kwargs: passed on to `download_and_prepare`.
    """
    super().download_and_prepare(
        file_format=file_format or tfds.core.FileFormat.ARRAY_RECORD, **kwargs
    )


class ManualDataBuilder(ArrayRecordBuilder, skip_registration=True):
  """A builder over files in manual_dir that can skip bad examples.

  Build arguments beyond TFDS's own:
    skip_bad_examples: skip (log and count) examples whose input is bad
      instead of stopping the build, e.g.
      `tfds.builder("sugar_crepe", config="add_att", skip_bad_examples=True)`.
      Skipped counts and the first reasons are stored in
      `info.metadata["skipped"][split]`. Examples are keyed by their id, so
      the order of the others does not change.
  """

  def __init__(self, *, skip_bad_examples: bool = False, **kwargs: Any):
    self._skip_bad_examples = skip_bad_examples
    super().__init__(**kwargs)

  def _test_split(
      self,
      source: pathlib.Path,
      rows: Iterable[tuple[str, Any]],
      make_example: Callable[[Any], tuple[Key, Example]],
  ) -> dict[str, Iterator[tuple[Key, Example]]]:
    """The split generators of a benchmark with one `test` split; see
    `_generate_examples`."""
    return {"test": self._generate_examples("test", source, rows,
                                            make_example)}

  def _generate_examples(
      self,
      split: str,
      source: pathlib.Path,
      rows: Iterable[tuple[str, Any]],
      make_example: Callable[[Any], tuple[Key, Example]],
      check_skipped: Callable[[list[tuple[Any, str]]], None] | None = None,
  ) -> Iterator[tuple[Key, Example]]:
    """Yields `make_example(row)` for each `(where, row)` of `rows`.

    A `DataError` from `make_example` becomes one naming `source` and
    `where` (e.g. "row 12"); it stops the build unless skipping is on.

    Args:
      split: the split being written, for the skip counts.
      source: the file the rows come from.
      rows: `(where, row)` pairs; `where` says where the row is in `source`.
      make_example: turns a row into `(key, example)`.
      check_skipped: called after the last row with the skipped `(row,
        reason)` pairs; raising a DataError there fails the build (TFDS then
        keeps nothing), e.g. when a kept example refers to a skipped one.

    Yields:
      `(key, example)` pairs for TFDS.
    """
    reasons, skipped_rows = [], []
    for where, row in rows:
      try:
        example = make_example(row)
      except DataError as e:
        error = DataError(f"{source}, {where}: {e}")
        if not self._skip_bad_examples:
          raise error from e
        logging.warning("Skipping a bad example: %s", error)
        reasons.append(str(error))
        skipped_rows.append((row, str(error)))
        continue
      yield example
    if check_skipped is not None:
      check_skipped(skipped_rows)
    if reasons:
      logging.warning(
          "%s/%s: skipped %d bad examples.", self.name, split, len(reasons)
      )
    skipped = self.info.metadata.setdefault("skipped", {})
    skipped[split] = {
        "count": len(reasons),
        "reasons": reasons[:MAX_SKIP_REASONS],
    }
