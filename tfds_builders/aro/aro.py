"""ARO (Yuksekgonul et al., ICLR 2023) as a TFDS dataset, one config a task.

Attribution, Relation and Order (github.com/mertyg/vision-language-models-
are-bows, dataset_zoo/aro_datasets.py). Every config has one `test` split.

  vg_relation     `visual_genome_relation.json`: a list of rows `{image_path,
                  bbox_x, bbox_y, bbox_w, bbox_h, true_caption, false_caption,
                  relation_name, ...}`; 23,937 items as released.
  vg_attribution  `visual_genome_attribution.json`: the same with
                  `attributes` (two words) for `relation_name`; 28,748 items.
  coco_order      `coco_karpathy_test.json`: rows `{image, caption: [...]}`,
                  5,000 images; an item per caption (25,010).
  flickr30k_order `flickr30k_test.json`, the same layout, 1,000 images; an
                  item per caption (5,000).

VG images are cropped to the row's bbox as ARO's `__getitem__` does
(aro_datasets.py L57, L148: PIL `crop((x, y, x + w, y + h))`). The caption
is `true_caption`, the hard negative `false_caption`.

An order item is one caption of one image with its four perturbations
(`perturbations.PERTURBATIONS`, made at build time from `seed`), every text
through ARO's `pre_caption` (aro_datasets.py L235-238); its `index` is
ARO's test-case position (images in file order, then their captions), its
`row` the image's row in the file. ARO tags nouns and adjectives with
spaCy; this builder uses a rule-based approximation: see `perturbations`.

The order configs store each image once per caption, as ARO's test cases
hold it; scoring encodes each distinct image once.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import common
from tfds_builders.aro import perturbations

_BBOX_KEYS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")


@dataclasses.dataclass(eq=False)
class AroConfig(tfds.core.BuilderConfig):
  """One ARO task.

  Attributes:
    file_name: the released JSON file in manual_dir.
    group_key: VG tasks: the row field ARO groups items by for its macro
      accuracy ("relation_name" or "attributes"); empty for the order tasks.
    seed: order tasks: the perturbations' seed (ARO's main_aro.py --seed
      default, L18).
  """

  file_name: str = ""
  group_key: str = ""
  seed: int = 1


_MANUAL_DOWNLOAD_INSTRUCTIONS = """\
manual_dir (or its folder `aro/`) holds, for the configs that read them:
  visual_genome_relation.json     vg_relation (ARO's Google Drive file
                                  1kX2iCHEv0CADL8dSO1nMdW-V0NqIAiP3)
  visual_genome_attribution.json  vg_attribution (Google Drive file
                                  13tWvOrNOLHxl3Rm9cR3geAdHx2qR3-Tw)
  images/                         both: ARO's vgr_vga_images.zip (Google
                                  Drive file 1qaPlrwhGNMrR3a11iopZUT_GPP_LrgP9)
                                  unzipped in manual_dir
  coco_karpathy_test.json         coco_order: storage.googleapis.com/
                                  sfr-vision-language-research/datasets/
                                  coco_karpathy_test.json
  val2014/                        coco_order: the COCO 2014 validation images
                                  (images.cocodataset.org/zips/val2014.zip)
  flickr30k_test.json             flickr30k_order: the same bucket's
                                  flickr30k_test.json
  flickr30k-images/               flickr30k_order: the Flickr30k images
                                  (on request, forms.illinois.edu/sec/229675)
See docs/data.md.
"""


class Aro(common.ManualDataBuilder):
  """ARO's VG-Relation, VG-Attribution, COCO-Order and Flickr30k-Order."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  MANUAL_DOWNLOAD_INSTRUCTIONS = _MANUAL_DOWNLOAD_INSTRUCTIONS
  BUILDER_CONFIGS = [
      AroConfig(name="vg_relation", description="VG-Relation; bbox crops.",
                file_name="visual_genome_relation.json",
                group_key="relation_name"),
      AroConfig(name="vg_attribution",
                description="VG-Attribution; bbox crops.",
                file_name="visual_genome_attribution.json",
                group_key="attributes"),
      AroConfig(name="coco_order",
                description="COCO-Order: Karpathy test captions, shuffled.",
                file_name="coco_karpathy_test.json"),
      AroConfig(name="flickr30k_order",
                description="Flickr30k-Order: Karpathy test captions, "
                "shuffled.", file_name="flickr30k_test.json"),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    # `caption` is option 0, the true caption; `index` the item's row in the
    # file (VG) or ARO's test-case position (order); `image_path` as
    # released, relative to images/ (VG) or to manual_dir (order).
    features = {"image_path": tfds.features.Text()}
    if config.group_key == "relation_name":
      features["relation_name"] = tfds.features.Text()
    elif config.group_key == "attributes":
      features["attributes"] = tfds.features.Sequence(tfds.features.Text())
    if config.group_key:
      features["hard_negative"] = tfds.features.Text()
    else:
      features.update({name: tfds.features.Text()
                       for name in perturbations.PERTURBATIONS})
      features["row"] = tfds.features.Scalar(dtype=np.int64)
    return common.dataset_info(
        self,
        description=__doc__,
        features=common.item_features(("caption",), **features),
        homepage="https://github.com/mertyg/vision-language-models-are-bows",
        citation="Yuksekgonul et al., When and why vision-language models "
        "behave like bags-of-words, and what to do about it?, ICLR 2023.",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    manual_dir = pathlib.Path(dl_manager.manual_dir)
    config = self.builder_config
    path = manual_dir / config.file_name
    rows = common.read_json_list(path)
    if config.group_key:
      items = ((f"row {i}", (i, row)) for i, row in enumerate(rows))
      make_example = functools.partial(_vg_example, manual_dir / "images",
                                       config.group_key)
    else:
      items = _caption_items(path, rows)
      # An image's captions are consecutive items: read it once.
      read = functools.lru_cache(maxsize=1)(common.read_image)
      make_example = functools.partial(_order_example, manual_dir, read,
                                       config.seed)
    return self._test_split(path, items, make_example)


def _vg_example(image_dir: pathlib.Path, group_key: str,
                item: tuple[int, Any]) -> tuple[int, common.Example]:
  """Row `index` of a VG file: its bbox crop, captions and group."""
  index, row = item
  image_path = common.text(row, "image_path")
  box = tuple(common.field(row, k, (int, float)) for k in _BBOX_KEYS)
  example = {
      "image": common.read_image(common.manual_path(image_dir, image_path),
                                 box),
      "caption": common.text(row, "true_caption"),
      "hard_negative": common.text(row, "false_caption"),
      "index": index,
      "image_path": image_path,
  }
  if group_key == "attributes":
    # ARO groups by f"{attributes[0]}_{attributes[1]}" (aro_datasets.py
    # L138).
    attributes = common.field(row, "attributes", list)
    if len(attributes) != 2:
      raise common.DataError(f"'attributes' is {attributes!r}, not 2 words")
    example["attributes"] = [common.check_text(a, "an attribute")
                             for a in attributes]
  else:
    example[group_key] = common.text(row, group_key)
  return index, example


def _caption_items(path: pathlib.Path, rows: list[Any]
                   ) -> Iterator[tuple[str, tuple[int, int, Any, Any]]]:
  """(where, (index, row number, row, caption)) per caption, in ARO's order.

  A row without a caption list stops the build: the items after it could
  not keep ARO's positions.
  """
  index = 0
  for row_number, row in enumerate(rows):
    try:
      captions = common.field(row, "caption", list)
    except common.DataError as e:
      raise common.DataError(f"{path}, row {row_number}: {e}") from e
    for number, caption in enumerate(captions):
      yield (f"row {row_number}, caption {number}",
             (index, row_number, row, caption))
      index += 1


def _order_example(manual_dir: pathlib.Path, read: Callable[..., bytes],
                   seed: int, item: tuple[int, int, Any, Any]
                   ) -> tuple[int, common.Example]:
  """One caption of an image and its four perturbations."""
  index, row_number, row, caption = item
  image_path = common.text(row, "image")
  texts = perturbations.options(common.check_text(caption, "the caption"),
                                seed, index)
  names = ("caption", *perturbations.PERTURBATIONS)
  for name, text in zip(names, texts):
    common.check_text(text, f"{name} after ARO's pre_caption")
  return index, {
      "image": read(common.manual_path(manual_dir, image_path)),
      **dict(zip(names, texts)),
      "index": index,
      "row": row_number,
      "image_path": image_path,
  }
