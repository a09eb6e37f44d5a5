"""Which (image, caption) pairs each training step reads, and their partners.

Shapes: N images (the split's examples), M (image, caption) pairs, U units
of an epoch (M or N), B global batch.

An epoch's units (`input.epoch_unit`):
  "pairs": every (image, caption) pair once, as the paper and NegCLIP train
    (one epoch of COCO train2017 is its 591,753 captions);
  "images": every image once, with one of its captions drawn at random
    (open_clip's style).
With e, k = divmod(s, U // B), step s reads units [k B, (k + 1) B) of a
permutation of the U units drawn from (seed, e); the last U mod B units of
each epoch's permutation are left out. Everything random about a unit (its
caption in "images" mode, its hard negatives and positives, its
hard-negative image) is drawn from (seed, epoch, unit), so each batch is a
pure function of (seed, step) and exact resume needs no iterator state.

Pairs are found from `info.metadata["caption_ids"][split]`, which the
training builders write (examples stored in key order), so no image is read
to enumerate them.
"""

import dataclasses
import functools
from typing import Any

import numpy as np

from hardpos_jax.data import neighbours_file

EPOCH_UNITS = ("pairs", "images")
# Salt of the generator that picks the pairs keeping their hard negatives.
_HN_SUBSET_SALT = 1


@dataclasses.dataclass(frozen=True)
class CaptionIndex:
  """The (image, caption) pairs of a split, from its caption-id metadata.

  Attributes:
    offsets: int64 [N + 1]; image i's pairs are offsets[i] .. offsets[i + 1].
    caption_ids: int64 [M], pair by pair.
  """

  offsets: np.ndarray
  caption_ids: np.ndarray

  @classmethod
  def of(cls, source: Any, split: str) -> "CaptionIndex":
    """The index of a training split's `data_source`."""
    info = source.dataset_info
    ids = info.metadata.get("caption_ids", {}).get(split) if (
        info.metadata) else None
    if ids is None:
      raise ValueError(
          f"{info.full_name}/{split} has no caption index "
          "(metadata['caption_ids']): it is not in the per-image training "
          "schema; rebuild it with this version of tfds_builders")
    if len(ids) != len(source):
      raise ValueError(f"{info.full_name}/{split}: the caption index has "
                       f"{len(ids)} images but the split {len(source)}")
    counts = np.array([len(c) for c in ids], np.int64)
    if not counts.all():
      raise ValueError(f"{info.full_name}/{split}: example "
                       f"{int(np.argmin(counts))} has no caption")
    return cls(offsets=np.concatenate([[0], np.cumsum(counts)]),
               caption_ids=np.array([i for c in ids for i in c], np.int64))

  @property
  def num_images(self) -> int:
    return len(self.offsets) - 1

  @property
  def num_pairs(self) -> int:
    return len(self.caption_ids)

  def num_captions(self, image: int) -> int:
    return int(self.offsets[image + 1] - self.offsets[image])

  def pair(self, image: int, slot: int) -> int:
    """The pair index of caption `slot` of `image`."""
    return int(self.offsets[image]) + slot

  def image_and_slot(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int [n] pair indices -> (int64 [n] images, int64 [n] caption slots)."""
    images = np.searchsorted(self.offsets, pairs, side="right") - 1
    return images, pairs - self.offsets[images]

  @functools.cached_property
  def _by_caption_id(self) -> dict[int, int]:
    return {int(c): p for p, c in enumerate(self.caption_ids)}

  def find(self, caption_id: int) -> int:
    """The pair index of a caption id; KeyError if the split lacks it."""
    return self._by_caption_id[caption_id]


@dataclasses.dataclass(frozen=True)
class TrainOrder:
  """Which units each step reads: a pure function of (seed, step)."""

  num_units: int
  global_batch_size: int
  seed: int

  def __post_init__(self):
    if not 0 < self.global_batch_size <= self.num_units:
      raise ValueError(f"Batch size {self.global_batch_size} must be in "
                       f"[1, {self.num_units}] (the units of an epoch)")

  @property
  def steps_per_epoch(self) -> int:
    return self.num_units // self.global_batch_size

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(
        self.num_units)

  def indices(self, step: int, rows: tuple[int, int]) -> tuple[int, np.ndarray]:
    """The epoch of `step` and the units of its rows [start, stop)."""
    epoch, k = divmod(step, self.steps_per_epoch)
    first = k * self.global_batch_size
    return epoch, self._permutation(epoch)[first + rows[0]:first + rows[1]]


def num_units(index: CaptionIndex, epoch_unit: str) -> int:
  """U: the pairs or the images of the split."""
  if epoch_unit not in EPOCH_UNITS:
    raise ValueError(f"Unknown epoch_unit {epoch_unit!r}; choices: "
                     f"{EPOCH_UNITS}")
  return index.num_pairs if epoch_unit == "pairs" else index.num_images


def hard_negative_subset(num_pairs: int, fraction: float,
                         seed: int) -> np.ndarray:
  """bool [M]: exactly round(fraction * M) pairs, fixed by the seed."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(
        f"hard_negative_fraction must be in [0, 1], got {fraction}")
  order = np.random.default_rng([seed, _HN_SUBSET_SALT]).permutation(
      num_pairs)
  keep = np.zeros(num_pairs, bool)
  keep[order[:round(fraction * num_pairs)]] = True
  return keep


@dataclasses.dataclass(frozen=True)
class HardImages:
  """Each pair's hard-negative-image candidates, as NegCLIP draws them.

  NegCLIP's `CsvDataset.__getitem__` (vinid/neg_clip, src/training/data.py)
  draws one of a row's `neg_image` rows at random and trains on that row's
  image, caption and a random one of its hard negatives next to the row's
  own. From the dataset, a caption's candidates are its `neg_images` caption
  ids; from a neighbours file, an image's k nearest images, each with one of
  its captions drawn at random.

  Attributes:
    index: the split's pairs.
    neighbours: a loaded neighbours file, or None to use `neg_images`.
  """

  index: CaptionIndex
  neighbours: neighbours_file.Neighbours | None = None

  def check(self, source: Any) -> None:
    """Fails before training on what example 0 shows is wrong.

    Every example is checked again as it is read; this turns the common
    mistakes into errors at start-up rather than inside tf.data.

    Args:
      source: the training split; its first example is read.

    Raises:
      DataError: the neighbours file's image id of example 0 differs.
      ValueError: no neighbours file, and example 0 has no `neg_images`.
    """
    first = source[0]
    if self.neighbours is not None:
      self.neighbours.check_image_id(0, _text(first["image_id"]))
    elif not any(
        len(n) for n in first["captions"]["neg_images"]):
      raise ValueError(
          f"{source.dataset_info.full_name} has no hard-negative images "
          "(neg_images, e.g. of its example 0, is empty); give "
          "input.neighbours (python -m hardpos_jax.neighbours) or turn "
          "input.hard_images off")

  def draw(self, rng: np.random.Generator, image: int, record: dict[str, Any],
           slot: int, describe: str) -> int:
    """The pair index of one hard-negative image of pair (image, slot).

    Args:
      rng: the unit's generator.
      image: the image's index in the split.
      record: its record (read anyway), for `neg_images` and `image_id`.
      slot: the caption.
      describe: names the pair in errors.

    Returns:
      The partner's pair index.

    Raises:
      ValueError: the pair has no candidate, or names a caption id that the
        split lacks.
    """
    if self.neighbours is not None:
      self.neighbours.check_image_id(image, _text(record["image_id"]))
      partner = int(rng.choice(self.neighbours.neighbours[image]))
      return self.index.pair(partner, int(
          rng.integers(self.index.num_captions(partner))))
    candidates = record["captions"]["neg_images"][slot]
    if not len(candidates):
      raise ValueError(
          f"{describe} has no hard-negative image (its neg_images is empty); "
          "give input.neighbours (python -m hardpos_jax.neighbours) or turn "
          "input.hard_images off")
    caption_id = int(rng.choice(candidates))
    try:
      return self.index.find(caption_id)
    except KeyError:
      raise ValueError(f"{describe}: neg_images names caption {caption_id}, "
                       "which the split does not have") from None


def _text(value: bytes | str) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else value
