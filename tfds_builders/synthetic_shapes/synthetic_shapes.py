"""TFDS builders of the synthetic compositional world (nothing to download).

TFDS gives one schema per dataset, so the world is two datasets with the same
configs (`default`, `tiny`):
  * `synthetic_shapes`, splits `pretrain` and `train`, in the training schema
    of `coco_hard_pos_neg` (one example per scene, with its captions and
    their hard negatives and hard positives; `pretrain` leaves both empty);
  * `synthetic_shapes_benchmark`, splits `test_replace_att`,
    `test_replace_rel` and `test_swap`, in the schema of `hard_positives` (one
    hard negative and one hard positive per item).
Every example is a pure function of its split and scene index, so rebuilding
gives the same bytes; `world.scene_from_image_id` recovers an example's scene.
"""

import abc
from collections.abc import Iterator, Mapping
import dataclasses
from typing import Any


import numpy as np
import tensorflow_datasets as tfds

from tfds_builders import common
from tfds_builders.synthetic_shapes import world


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
  """Sizes of a build.

  Attributes:
    image_size: side of the square images in pixels.
    captions_per_scene: captions (training) or benchmark items per image.
    num_scenes: images per split.
  """

  image_size: int = 64
  captions_per_scene: int = 2
  num_scenes: Mapping[str, int] = dataclasses.field(default_factory=dict)


def _configs(default: Mapping[str, int],
             tiny: Mapping[str, int]) -> list[SyntheticShapesConfig]:
  return [
      SyntheticShapesConfig(
          name="default", num_scenes=default,
          description="Builds in seconds; for smoke runs and benchmarks."),
      SyntheticShapesConfig(
          name="tiny", num_scenes=tiny,
          description="A few dozen examples per split, for tests."),
  ]


class _SyntheticBuilder(common.ArrayRecordBuilder, skip_registration=True):
  """Writes the splits in `SPLITS`, as array_record unless told otherwise."""

  VERSION = tfds.core.Version("3.0.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "2.0.0": "Training captions follow the wording conventions (canonical "
               "words, left-to-right lists); benchmark hard positives break "
               "them; 16,000 pretraining scenes.",
      "3.0.0": "Training splits store one example per scene with all its "
               "captions (the texts are unchanged).",
  }
  SPLITS: tuple[str, ...] = ()

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    missing = set(self.SPLITS) - set(self.builder_config.num_scenes)
    if missing:
      raise ValueError(f"Config {self.builder_config.name!r} lacks num_scenes "
                       f"for splits {sorted(missing)}")
    return {split: self._generate_examples(split) for split in self.SPLITS}

  def _scenes(self, split: str) -> Iterator[tuple[int, dict, list[dict]]]:
    """(scene index, image features, texts of each caption) per scene."""
    config = self.builder_config
    for scene_index in range(config.num_scenes[split]):
      rng = world.scene_rng(split, scene_index)
      scene = world.sample_scene(rng)
      image = {"image": world.encode_png(world.draw(scene, config.image_size)),
               "image_id": world.scene_image_id(split, scene_index)}
      # Captions come from the scene's generator after the scene, so one
      # scene's examples never depend on another's.
      texts = [self._texts(split, scene, rng)
               for _ in range(config.captions_per_scene)]
      yield scene_index, image, texts

  @abc.abstractmethod
  def _texts(self, split: str, scene: world.Scene,
             rng: np.random.Generator) -> dict[str, Any]:
    """The text features of one caption (or benchmark item) of a scene."""


class SyntheticShapes(_SyntheticBuilder):
  """Scenes of 2-3 coloured shapes; captions with hard negatives/positives."""

  SPLITS = ("pretrain", "train")
  BUILDER_CONFIGS = _configs(default={"pretrain": 16000, "train": 4000},
                             tiny={"pretrain": 12, "train": 16})

  def _info(self) -> tfds.core.DatasetInfo:
    # PNG keeps pixels exact, so tests can check them.
    return common.dataset_info(self, in_key_order=True, description=__doc__,
                               features=common.training_features("png"))

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    per_scene = self.builder_config.captions_per_scene

    def examples():
      for scene_index, image, texts in self._scenes(split):
        captions = [{**t, "caption_id": scene_index * per_scene + j,
                     "neg_images": []} for j, t in enumerate(texts)]
        yield scene_index, {**image, "captions": captions}

    return common.record_caption_ids(self.info, split, examples())

  def _texts(self, split, scene, rng) -> dict[str, Any]:
    return world.train_example(scene, rng, with_hard=split == "train")


class SyntheticShapesBenchmark(_SyntheticBuilder):
  """Benchmark items (caption, one hard negative, one hard positive)."""

  SPLITS = ("test_replace_att", "test_replace_rel", "test_swap")
  BUILDER_CONFIGS = _configs(
      default=dict.fromkeys(SPLITS, 500), tiny=dict.fromkeys(SPLITS, 10))

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, description=__doc__,
                                 features=common.benchmark_features("png"))

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    per_scene = self.builder_config.captions_per_scene
    for scene_index, image, items in self._scenes(split):
      for j, item in enumerate(items):
        key = scene_index * per_scene + j
        yield key, {**image, **item, "index": key}

  def _texts(self, split, scene, rng) -> dict[str, Any]:
    return world.benchmark_item(split, scene, rng)
