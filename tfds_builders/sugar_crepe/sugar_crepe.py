"""SugarCrepe (Hsieh et al., NeurIPS 2023) as a TFDS dataset.

Each item is a COCO val2017 image with its caption and one hard negative. The
released files (github.com/RAIVNLab/sugar-crepe, `data/<subset>.json`) map an
id to `{"filename", "caption", "negative_caption"}`; ids are not contiguous
(swap_obj skips one), so the id is kept as a feature.
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders import common

SUBSETS = (
    "add_att",
    "add_obj",
    "replace_att",
    "replace_obj",
    "replace_rel",
    "swap_att",
    "swap_obj",
)


class SugarCrepe(common.ManualDataBuilder):
  """SugarCrepe's seven subsets, one config each."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.file_instructions(
      "RAIVNLab/sugar-crepe")
  BUILDER_CONFIGS = common.file_configs(SUBSETS)

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self,
        description=__doc__,
        # `id`: the key of the item in the released JSON file.
        features=common.item_features(("caption", "hard_negative"), "id",
                                      filename=tfds.features.Text()),
        homepage="https://github.com/RAIVNLab/sugar-crepe",
        citation="Hsieh et al., SugarCrepe: Fixing Hackable Benchmarks for "
        "Vision-Language Compositionality, NeurIPS 2023.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    path, items = common.read_config_file(manual_dir, self.builder_config)
    if not isinstance(items, dict):
      raise common.DataError(
          f"{path}: expected a JSON object of id -> item, got"
          f" {type(items).__name__}"
      )
    items_with_keys = (
        (f"key {key!r}", (key, value)) for key, value in items.items()
    )
    make_example = functools.partial(_make_example, manual_dir)
    return self._test_split(path, items_with_keys, make_example)


def _make_example(
    manual_dir: pathlib.Path, item: tuple[str, Any]
) -> tuple[int, common.Example]:
  key, value = item
  if not (key.isascii() and key.isdigit()):
    raise common.DataError("the key is not a non-negative integer")
  filename = common.text(value, "filename")
  return int(key), {
      "image": common.read_image(
          common.manual_path(manual_dir / "val2017", filename)
      ),
      "caption": common.text(value, "caption"),
      "hard_negative": common.text(value, "negative_caption"),
      "id": int(key),
      "filename": filename,
  }
