"""SugarCrepe++ (Dumpala et al., NeurIPS 2024 D&B) as a TFDS dataset.

Each item is a COCO val2017 image with two captions that mean the same thing
in different words (SugarCrepe's caption and a second positive, `caption2`)
and SugarCrepe's hard negative. The released files (github.com/Sri-Harsha/
scpp, `data/<subset>.json`) are JSON lists of `{"filename", "caption",
"caption2", "negative_caption"}` (and an `id`, which the reference code does
not read). An item is identified, as the reference code reads it, by its
position in the list: the `index` feature. The subsets have 788
(replace_att), 1,652 (replace_obj), 1,406 (replace_rel), 666 (swap_att) and
245 (swap_obj) items (the repository's evaluate_ulms.py, DATA_SIZE).
"""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders import common

SUBSETS = (
    "replace_att",
    "replace_obj",
    "replace_rel",
    "swap_att",
    "swap_obj",
)


class SugarCrepePp(common.ManualDataBuilder):
  """SugarCrepe++'s five subsets, one config each."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = common.file_instructions("Sri-Harsha/scpp")
  BUILDER_CONFIGS = common.file_configs(SUBSETS)

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self,
        description=__doc__,
        # P1: SugarCrepe's positive caption; P2: the second positive, other
        # words, same meaning; N: `negative_caption`. `index`: the item's
        # position in the released JSON list.
        features=common.item_features(
            ("caption", "caption2", "hard_negative"),
            filename=tfds.features.Text()),
        homepage="https://github.com/Sri-Harsha/scpp",
        citation="Dumpala et al., SUGARCREPE++ Dataset: Vision-Language "
        "Model Sensitivity to Semantic and Lexical Alterations, NeurIPS 2024 "
        "Datasets and Benchmarks.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    path, items = common.read_config_file(manual_dir, self.builder_config)
    if isinstance(items, dict):
      # SugarCrepe's files have the same names: a root manual_dir holding
      # SugarCrepe lacks SugarCrepe++, which is not a bad SugarCrepe++ file.
      raise common.MissingDataError(
          f"{path} is a JSON object, SugarCrepe's format; SugarCrepe++'s"
          " files are lists. Put SugarCrepe++ in its own folder,"
          " <manual_dir>/sugar_crepe_pp/ (see docs/data.md).")
    if not isinstance(items, list):
      raise common.DataError(
          f"{path}: expected a JSON list of items, got {type(items).__name__}")
    rows = ((f"row {i}", (i, item)) for i, item in enumerate(items))
    make_example = functools.partial(_make_example, manual_dir / "val2017")
    return self._test_split(path, rows, make_example)


def _make_example(images_dir: pathlib.Path,
                  row: tuple[int, Any]) -> tuple[int, common.Example]:
  """The item at list position `index`, keyed by it."""
  index, item = row
  filename = common.text(item, "filename")
  example = {
      "image": common.read_image(common.manual_path(images_dir, filename)),
      "caption": common.text(item, "caption"),
      "caption2": common.text(item, "caption2"),
      "hard_negative": common.text(item, "negative_caption"),
      "index": index,
      "filename": filename,
  }
  return index, example
