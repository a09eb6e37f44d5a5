"""The hard-positive benchmark of Kamath et al. (ECCV 2024) as a TFDS dataset.

Each item is an image with its caption `c`, a hard negative `c_n` and a hard
positive `c_p`. The released repository (github.com/amitakamath/hard_positives)
holds `data/<file>` with `(c, c_n)` and `swapped_data/<file>` with
`(c_p, c_n)`, aligned row by row; this builder joins them and checks the
alignment. Captions are kept exactly as released, broken ones included.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import tensorflow_datasets as tfds

from tfds_builders import common

# The file name that the paper's run_eval.py reads for SWAP through ARO's
# VG_Attribution(root_dir="data" / "swapped_data").
SWAP_FILE_NAME = "visual_genome_attribution.json"

_BBOX_KEYS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")


@dataclasses.dataclass(eq=False)
class HardPositivesConfig(tfds.core.BuilderConfig):
  """A benchmark subset.

  Attributes:
    file_name: the subset's file in `data/` and `swapped_data/`.
    crop_to_bbox: whether rows carry an ARO bbox to crop the image to; such
      images are read from `<manual_dir>/images/`, the others from
      `<manual_dir>/<image_path>`.
  """

  file_name: str = ""
  crop_to_bbox: bool = False


_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir holds the folders `data/` and `swapped_data/` of
github.com/amitakamath/hard_positives as released, with the Visual Genome
images that REPLACE rows name by `image_path` (e.g.
`<manual_dir>/data/VG_100K_2/3968.jpg`), and for SWAP ARO's
`visual_genome_attribution.json` in both folders and ARO's
`vgr_vga_images.zip` unzipped to `<manual_dir>/images/`. See docs/data.md.
"""


class HardPositives(common.ManualDataBuilder):
  """The REPLACE and SWAP subsets with hard negatives and hard positives."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      HardPositivesConfig(
          name="replace_att",
          description="VL-CheckList attributes; one word replaced.",
          file_name="vl_checklist_attributes.json",
      ),
      HardPositivesConfig(
          name="replace_rel",
          description="VL-CheckList relations; one word replaced.",
          file_name="vl_checklist_relations.json",
      ),
      HardPositivesConfig(
          name="swap",
          description="ARO VG-Attribution; images cropped to the bbox.",
          file_name=SWAP_FILE_NAME,
          crop_to_bbox=True,
      ),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return common.dataset_info(
        self,
        description=__doc__,
        features=common.benchmark_features(),
        homepage="https://github.com/amitakamath/hard_positives",
        citation="Kamath et al., The Hard Positive Truth about "
        "Vision-Language Compositionality, ECCV 2024.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    data_path = manual_dir / "data" / self.builder_config.file_name
    swapped_path = manual_dir / "swapped_data" / self.builder_config.file_name
    rows = _read_rows(data_path)
    swapped_rows = _read_rows(swapped_path)
    if len(rows) != len(swapped_rows):
      raise common.DataError(
          f"{data_path} has {len(rows)} rows but {swapped_path} has"
          f" {len(swapped_rows)}; they must align row by row."
      )
    make_example = functools.partial(
        _make_example, manual_dir, swapped_path, self.builder_config
    )
    items = (
        (f"row {i}", (i, row, swapped))
        for i, (row, swapped) in enumerate(zip(rows, swapped_rows))
    )
    return {
        "test": self._generate_examples("test", data_path, items, make_example)
    }


def _read_rows(path: pathlib.Path) -> list[Any]:
  rows = common.read_json(path)
  if not isinstance(rows, list):
    raise common.DataError(
        f"{path}: expected a JSON list of rows, got {type(rows).__name__}"
    )
  return rows


def _make_example(
    manual_dir: pathlib.Path,
    swapped_path: pathlib.Path,
    config: HardPositivesConfig,
    item: tuple[int, Any, Any],
) -> tuple[int, common.Example]:
  """Joins row `index` of the data file with that of the swapped file."""
  index, row, swapped = item
  row = common.as_object(row, "the row")
  swapped = common.as_object(swapped, f"{swapped_path} row {index}")
  # SWAP rows are told apart by image and bbox, REPLACE rows by image_id.
  align_keys = (
      ("image_path", *_BBOX_KEYS)
      if config.crop_to_bbox
      else ("image_id", "image_path")
  )
  for key in (*align_keys, "false_caption"):
    if row.get(key) != swapped.get(key):
      raise common.DataError(
          f"disagrees with {swapped_path} row {index} on {key!r}:"
          f" {row.get(key)!r} vs {swapped.get(key)!r}"
      )
  try:
    hard_positive = common.text(swapped, "true_caption")
  except common.DataError as e:
    raise common.DataError(f"{swapped_path} row {index}: {e}") from e
  image_path = common.text(row, "image_path")
  if config.crop_to_bbox:
    box = tuple(common.field(row, k, (int, float)) for k in _BBOX_KEYS)
    image = common.read_image(
        common.manual_path(manual_dir / "images", image_path), box
    )
    # ARO's images are named <Visual Genome image id>.jpg.
    image_id = pathlib.PurePosixPath(image_path).stem
  else:
    image = common.read_image(common.manual_path(manual_dir, image_path))
    image_id = common.text(row, "image_id")
  return index, {
      "image": image,
      "caption": common.text(row, "true_caption"),
      "hard_negative": common.text(row, "false_caption"),
      "hard_positive": hard_positive,
      "image_id": image_id,
      "index": index,
  }
