"""TFDS builders of the synthetic compositional world (nothing to download).

TFDS gives one schema per dataset, so the world is two datasets with the same
configs (`default`, `tiny`):
  * `synthetic_shapes`, splits `pretrain` and `train`, in the training schema
    of `coco_hard_pos_neg` (a caption with its hard negatives and hard
    positives; `pretrain` leaves both empty);
  * `synthetic_shapes_benchmark`, splits `test_replace_att`,
    `test_replace_rel` and `test_swap`, in the schema of `hard_positives` (one
    hard negative and one hard positive per item).
Every example is a pure function of its split and scene index, so rebuilding
gives the same bytes; `world.scene_from_image_id` recovers an example's scene.
"""

import abc
from collections.abc import Iterator, Mapping
import dataclasses
import inspect
from typing import Any

from etils import epath

import numpy as np
import tensorflow_datasets as tfds

from tfds_builders.synthetic_shapes import world


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
  """Sizes of a build.

  Attributes:
    image_size: side of the square images in pixels.
    captions_per_scene: examples (captions or benchmark items) per image.
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


class _SyntheticBuilder(tfds.core.GeneratorBasedBuilder,
                        skip_registration=True):
  """Writes the splits in `SPLITS`, as array_record unless told otherwise."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  SPLITS: tuple[str, ...] = ()

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9.10 looks for builders outside its tree with the
    # `importlib_resources` backport, which is not installed on Python >= 3.9;
    # this is TFDS's own fallback.
    return epath.Path(inspect.getfile(cls))

  def download_and_prepare(self, *, file_format: Any = None, **kwargs: Any):
    """As TFDS's, but writes array_record (read by index) by default.

    Set here rather than in `__init__` so that a dataset already prepared in
    another format still loads.

    Args:
      file_format: the record format; `None` means array_record.
      **kwargs: passed on to `download_and_prepare`.
    """
    super().download_and_prepare(
        file_format=file_format or tfds.core.FileFormat.ARRAY_RECORD, **kwargs)

  def _info_with(self, features: Mapping[str, Any]) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            # PNG keeps pixels exact, so tests can check them.
            "image": tfds.features.Image(encoding_format="png"),
            "caption": tfds.features.Text(),
            **features,
            "image_id": tfds.features.Text(),
        }),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # Nothing to download.
    missing = set(self.SPLITS) - set(self.builder_config.num_scenes)
    if missing:
      raise ValueError(f"Config {self.builder_config.name!r} lacks num_scenes "
                       f"for splits {sorted(missing)}")
    return {split: self._generate_examples(split) for split in self.SPLITS}

  def _generate_examples(self, split: str) -> Iterator[tuple[int, dict]]:
    config = self.builder_config
    for scene_index in range(config.num_scenes[split]):
      rng = world.scene_rng(split, scene_index)
      scene = world.sample_scene(rng)
      image = {"image": world.encode_png(world.draw(scene, config.image_size)),
               "image_id": world.scene_image_id(split, scene_index)}
      for j in range(config.captions_per_scene):
        # Captions come from the scene's generator after the scene, so one
        # scene's examples never depend on another's.
        key = scene_index * config.captions_per_scene + j
        yield key, {**image, **self._texts(split, scene, rng, key)}

  @abc.abstractmethod
  def _texts(self, split: str, scene: world.Scene, rng: np.random.Generator,
             key: int) -> dict[str, Any]:
    """The text features and id of example `key` of a scene."""


class SyntheticShapes(_SyntheticBuilder):
  """Scenes of 2-3 coloured shapes; captions with hard negatives/positives."""

  SPLITS = ("pretrain", "train")
  BUILDER_CONFIGS = _configs(default={"pretrain": 4000, "train": 4000},
                             tiny={"pretrain": 12, "train": 16})

  def _info(self) -> tfds.core.DatasetInfo:
    return self._info_with({
        "hard_negatives": tfds.features.Sequence(tfds.features.Text()),
        "hard_positives": tfds.features.Sequence(tfds.features.Text()),
        # "swap" or "replace", one per hard positive.
        "hard_positive_kinds": tfds.features.Sequence(tfds.features.Text()),
        "caption_id": tfds.features.Scalar(dtype=np.int64),
    })

  def _texts(self, split, scene, rng, key) -> dict[str, Any]:
    texts = world.train_example(scene, rng, with_hard=split == "train")
    return {**texts, "caption_id": key}


class SyntheticShapesBenchmark(_SyntheticBuilder):
  """Benchmark items (caption, one hard negative, one hard positive)."""

  SPLITS = ("test_replace_att", "test_replace_rel", "test_swap")
  BUILDER_CONFIGS = _configs(
      default=dict.fromkeys(SPLITS, 500), tiny=dict.fromkeys(SPLITS, 10))

  def _info(self) -> tfds.core.DatasetInfo:
    return self._info_with({
        "hard_negative": tfds.features.Text(),
        "hard_positive": tfds.features.Text(),
        "index": tfds.features.Scalar(dtype=np.int64),
    })

  def _texts(self, split, scene, rng, key) -> dict[str, Any]:
    return {**world.benchmark_item(split, scene, rng), "index": key}
