"""Winoground (Thrush et al., CVPR 2022) as a TFDS dataset.

Each of the 400 items has two images and two captions made of the same words
in a different order; caption_0 describes image_0 and caption_1 image_1. The
release (huggingface.co/datasets/facebook/winoground) holds
`data/examples.jsonl`, one item per line: `{"id", "caption_0", "caption_1",
"image_0", "image_1", "tag", "secondary_tag", "num_main_preds",
"collapsed_tag"}`, where `image_0`/`image_1` name `data/images/<name>.png`
(inside `data/images.zip`). Images are stored as released, byte for byte (PNG,
not re-encoded), so models see the pixels the paper's models saw.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import common

# manual_dir is a clone of the Hugging Face dataset repository, with
# data/images.zip unzipped in data/ (which gives data/images/).
EXAMPLES_FILE = "data/examples.jsonl"
IMAGES_DIR = "data/images"
IMAGE_SUFFIX = ".png"  # The Hugging Face loading script's IMAGE_EXTENSION.

_MANUAL_DOWNLOAD_INSTRUCTIONS = f"""\
manual_dir is a clone of huggingface.co/datasets/facebook/winoground (gated:
accept its licence) with `data/images.zip` unzipped in `data/`, so that
`{EXAMPLES_FILE}` and `{IMAGES_DIR}/<name>.png` exist. See docs/data.md.
"""


class Winoground(common.ManualDataBuilder):
  """Winoground's 400 items, one `test` split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image_0": tfds.features.Image(encoding_format="png"),
            "image_1": tfds.features.Image(encoding_format="png"),
            "caption_0": tfds.features.Text(),
            "caption_1": tfds.features.Text(),
            # The item's `id` in examples.jsonl.
            "id": tfds.features.Scalar(dtype=np.int64),
            # The released image names, e.g. "ex_0_img_0".
            "image_0_name": tfds.features.Text(),
            "image_1_name": tfds.features.Text(),
            # The paper's linguistic tags, as released ("" where none).
            "tag": tfds.features.Text(),
            "secondary_tag": tfds.features.Text(),
            "num_main_preds": tfds.features.Scalar(dtype=np.int64),
            # "Object", "Relation" or "Both": the swap's kind (paper §3.1).
            "collapsed_tag": tfds.features.Text(),
        }),
        homepage="https://huggingface.co/datasets/facebook/winoground",
        citation="Thrush et al., Winoground: Probing Vision and Language "
        "Models for Visio-Linguistic Compositionality, CVPR 2022.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    path = manual_dir / EXAMPLES_FILE
    lines = common.read_lines(path)
    # A malformed line is a broken file, not a bad item: it stops the build.
    rows = ((f"line {i + 1}", common.parse_json_line(path, i, line))
            for i, line in enumerate(lines) if line.strip())
    make_example = functools.partial(_make_example, manual_dir / IMAGES_DIR,
                                     set())
    return self._test_split(path, rows, make_example)


def _make_example(images_dir: pathlib.Path, seen: set[int],
                  row: Any) -> tuple[int, common.Example]:
  """One item; `seen` holds the ids built so far."""
  item_id = common.field(row, "id", int)
  if item_id in seen:
    raise common.DataError(f"id {item_id} is given twice")
  names = [common.text(row, f"image_{i}") for i in (0, 1)]
  example = {
      "id": item_id,
      "caption_0": common.text(row, "caption_0"),
      "caption_1": common.text(row, "caption_1"),
      "tag": common.field(row, "tag", str),
      "secondary_tag": common.field(row, "secondary_tag", str),
      "num_main_preds": common.field(row, "num_main_preds", int),
      "collapsed_tag": common.field(row, "collapsed_tag", str),
  }
  for i, name in enumerate(names):
    example[f"image_{i}_name"] = name
    example[f"image_{i}"] = common.read_image(
        common.manual_path(images_dir, name + IMAGE_SUFFIX), as_released=True)
  seen.add(item_id)
  return item_id, example

