"""TFDS -> tf.data -> per-host shards (-> global arrays: global_batches.py).

Shapes: B global batch (units drawn per step), b = the rows one process
holds, S image side, L tokens, K hard negatives per image, P hard positives
per image.

Which (image, caption) pairs a step reads, and with what randomness, is
`sampling`'s: a pure function of (seed, step), so `start_step=s` yields
exactly the batch an uninterrupted run sees at step s, and there is no
iterator state to checkpoint. Each process reads and preprocesses only its
rows of each batch (`sharding.host_rows`), and decodes each image once per draw.

Hard-negative images (NegCLIP): with `input.hard_images`, each drawn pair
brings its partner (`sampling.HardImages`) as the next row, so batches have
2B rows [x_1, x_1', x_2, x_2', ...]. The loss over those rows, with one HN
column per row, is NegCLIP's: images [I; I'], texts [T; T'; T-; T'-] (see
`losses`).

Input config keys (`config.x`):
  dataset, data_dir: the TFDS dataset ("synthetic_shapes/tiny") and directory.
  split: the training split.
  epoch_unit: "pairs" (every (image, caption) once) or "images".
  image_size: S. text_length: L.
  num_hard_negatives, num_hard_positives: K and P.
  hard_negative_fraction: fraction of pairs that keep their HNs.
  hard_positive_kinds: "swap", "replace" or "both".
  hard_images: each pair brings a hard-negative image (NegCLIP).
  neighbours: a neighbours file for `hard_images`; None: the dataset's
    `neg_images`.
  crop_scale, crop_ratio: random resized crop's area and aspect ranges.
  antialias: resize the crop as PIL does (True) or as big_vision (False).
  prefetch: host batches tf.data prepares ahead.
"""

from collections.abc import Iterator, Sequence
import dataclasses
import itertools
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from hardpos_jax import sharding as sharding_lib
from hardpos_jax.data import global_batches
from hardpos_jax.data import neighbours_file
from hardpos_jax.data import preprocess
from hardpos_jax.data import sampling
from tfds_builders import common
from tfds_builders import registered  # pylint: disable=unused-import  # registers the builders

HARD_POSITIVE_KINDS = {
    "swap": ("swap",),
    "replace": ("replace",),
    "both": ("swap", "replace"),
}


def data_source(dataset: str, split: str, data_dir: str | None,
                manual_dir: str | None = None, download: bool = True) -> Any:
  """Random-access source of a TFDS split; images stay encoded bytes.

  A single process prepares a missing dataset (seconds for synthetic_shapes;
  manual datasets from `manual_dir`); multi-host runs must find it prepared,
  since every host would otherwise write it.

  Args:
    dataset: TFDS name with config, e.g. "synthetic_shapes/tiny".
    split: the split's name.
    data_dir: TFDS data directory; None means TFDS's default.
    manual_dir: where a manual dataset's files are, used only to prepare it:
      `<manual_dir>/<dataset name>/` if that folder exists (one root for
      several benchmarks), else `manual_dir` itself.
    download: whether a dataset that TFDS downloads may be downloaded, and a
      manual one prepared from `manual_dir` itself; without, an unprepared
      one is missing data unless its own folder is in `manual_dir`.

  Returns:
    A sequence of example dicts (numpy values, text as bytes).

  Raises:
    common.MissingDataError: the dataset is not prepared and cannot be: no
      manual_dir for a manual dataset, or its files are not there.
  """
  builder = tfds.builder(dataset, data_dir=data_dir)
  if not builder.is_prepared():
    manual = builder.MANUAL_DOWNLOAD_INSTRUCTIONS is not None
    if manual and manual_dir is not None:
      own = os.path.join(manual_dir, builder.name)
      # Without downloads (`suite`), only a dataset's own folder counts: a
      # shared root holds other benchmarks' files of the same names.
      manual_dir = own if os.path.isdir(own) or not download else manual_dir
    if (manual and (manual_dir is None or not os.path.isdir(manual_dir))
        or not (manual or download)):
      raise common.MissingDataError(
          f"{dataset} is not prepared in {builder.data_dir}, and "
          + (f"manual_dir {manual_dir} is not a folder" if manual_dir
             else "no manual_dir was given" if manual else
             "downloading was not asked for")
          + " (see docs/data.md)")
    if jax.process_count() > 1:
      raise FileNotFoundError(
          f"{dataset} is not prepared in {builder.data_dir}; prepare it once "
          "(tfds.builder(...).download_and_prepare()) before a multi-host run")
    logging.info("Preparing %s in %s", dataset, builder.data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  if split not in builder.info.splits:
    raise ValueError(f"{dataset} has no split {split!r}; choices: "
                     f"{sorted(builder.info.splits)}")
  # Image features of any name (two-image benchmarks) stay encoded bytes.
  images = [k for k, f in builder.info.features.items()
            if isinstance(f, tfds.features.Image)]
  return builder.as_data_source(
      split, decoders={k: tfds.decode.SkipDecoding() for k in images})


class TextEncoder:
  """Tokenizes to L tokens, flagging texts that are cut (warns once)."""

  def __init__(self, tokenizer: Any, length: int):
    self.tokenizer = tokenizer
    self.length = length
    self.warned = False

  def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """N strings -> (int32 [N, L] ids, bool [N] whether each was cut)."""
    ids, truncated = self.tokenizer.tokenize_with_truncation(
        list(texts), context_length=self.length)
    if truncated.any() and not self.warned:
      self.warned = True
      logging.warning(
          "Texts longer than %d tokens are cut, e.g. %r; the train metric "
          "`texts_cut` counts them per step.", self.length,
          texts[int(np.argmax(truncated))])
    return ids, truncated


def _text(value: bytes | str) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else value


def _rows_of(ids: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
  """int32 [m, L] -> ([n, L] zero-padded, bool [n] mask of the real rows)."""
  out = np.zeros((n, ids.shape[1]), np.int32)
  out[:len(ids)] = ids
  return out, np.arange(n) < len(ids)


@dataclasses.dataclass
class _TrainExamples:
  """Python side of the train pipeline: reading, HN/HP choice, tokens."""

  source: Any
  index: sampling.CaptionIndex
  order: sampling.TrainOrder
  epoch_unit: str
  rows: tuple[int, int]  # this process's units of each step
  encode: TextEncoder
  keep_hard_negatives: np.ndarray  # bool [M]
  num_hard_negatives: int
  num_hard_positives: int
  hard_positive_kinds: tuple[str, ...]
  hard_images: sampling.HardImages | None

  @property
  def rows_per_unit(self) -> int:
    return 1 if self.hard_images is None else 2

  def example(self, record: dict[str, Any], slot: int, pair: int,
              rng: np.random.Generator) -> dict[str, np.ndarray]:
    captions = record["captions"]
    caption_id = int(captions["caption_id"][slot])
    negatives = [_text(t) for t in captions["hard_negatives"][slot]]
    if not self.keep_hard_negatives[pair]:
      negatives = []
    positives = [_text(t) for t in captions["hard_positives"][slot]]
    kinds = [_text(k) for k in captions["hard_positive_kinds"][slot]]
    if len(kinds) != len(positives) or set(kinds) - {"swap", "replace"}:
      raise ValueError(
          f"caption_id {caption_id}: hard_positive_kinds {kinds} must be "
          f"'swap' or 'replace', one per hard positive ({len(positives)})")
    if not 0 <= caption_id <= np.iinfo(np.int32).max:
      raise ValueError(f"caption_id {caption_id} does not fit in int32")
    positives = [p for p, k in zip(positives, kinds)
                 if k in self.hard_positive_kinds]
    negatives = [negatives[i] for i in
                 rng.permutation(len(negatives))[:self.num_hard_negatives]]
    positives = [positives[i] for i in
                 rng.permutation(len(positives))[:self.num_hard_positives]]
    ids, cut = self.encode([_text(captions["caption"][slot])] + negatives
                           + positives)
    hn, hn_mask = _rows_of(ids[1:1 + len(negatives)], self.num_hard_negatives)
    hp, hp_mask = _rows_of(ids[1 + len(negatives):], self.num_hard_positives)
    return {"image": record["image"], "text": ids[0], "hard_negatives": hn,
            "hard_negative_mask": hn_mask, "hard_positives": hp,
            "hard_positive_mask": hp_mask, "caption_id": np.int32(caption_id),
            "texts_cut": np.int32(cut.sum())}

  def _pairs(self, units: np.ndarray,
             rngs: list[np.random.Generator]) -> np.ndarray:
    """int64 [n] pair indices of the drawn units."""
    if self.epoch_unit == "pairs":
      return units
    return np.array([self.index.pair(int(u), int(rng.integers(
        self.index.num_captions(int(u))))) for u, rng in zip(units, rngs)],
                    np.int64)

  def _read(self, pairs: np.ndarray) -> list[tuple[int, int, int, dict]]:
    """(pair, image, slot, record) of each pair; one read for them all."""
    images, slots = self.index.image_and_slot(pairs)
    records = self.source.__getitems__(images.tolist())
    return list(zip(pairs.tolist(), images.tolist(), slots.tolist(), records))

  def _partners(self, drawn: list[tuple[int, int, int, dict]],
                rngs: list[np.random.Generator]) -> np.ndarray:
    """int64 [n] pair indices of the drawn pairs' hard-negative images."""
    name = self.source.dataset_info.full_name
    return np.array([
        self.hard_images.draw(rng, image, record, slot, f"{name} caption "
                              f"{int(record['captions']['caption_id'][slot])}")
        for rng, (_, image, slot, record) in zip(rngs, drawn)], np.int64)

  def __call__(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of steps start_step, start_step + 1, ..."""
    per_step = self.order.global_batch_size * self.rows_per_unit
    first_row = self.rows[0] * self.rows_per_unit
    for step in itertools.count(start_step):
      epoch, units = self.order.indices(step, self.rows)
      rngs = [np.random.default_rng([self.order.seed, epoch, int(u)])
              for u in units]
      drawn = self._read(self._pairs(units, rngs))
      partners = [None] * len(drawn)
      if self.hard_images is not None:
        partners = self._read(self._partners(drawn, rngs))
      out = []
      for rng, *rows in zip(rngs, drawn, partners):
        for pair, _, slot, record in filter(None, rows):
          out.append(self.example(record, slot, pair, rng))
      for row, example in enumerate(out):
        # The crop's seed is the row's position in the data order.
        seed = np.array([self.order.seed, step * per_step + first_row + row])
        yield {**example, "seed": seed}


def _train_signature(length: int, k: int, p: int) -> dict[str, tf.TensorSpec]:
  return {
      "image": tf.TensorSpec([], tf.string),
      "seed": tf.TensorSpec([2], tf.int64),
      "text": tf.TensorSpec([length], tf.int32),
      "hard_negatives": tf.TensorSpec([k, length], tf.int32),
      "hard_negative_mask": tf.TensorSpec([k], tf.bool),
      "hard_positives": tf.TensorSpec([p, length], tf.int32),
      "hard_positive_mask": tf.TensorSpec([p], tf.bool),
      "caption_id": tf.TensorSpec([], tf.int32),
      "texts_cut": tf.TensorSpec([], tf.int32),
  }


def train_image_op(config: ml_collections.ConfigDict) -> preprocess.Op:
  """Decode, random resized crop to S, CLIP normalisation; drops the seed."""
  ops = preprocess.compose([
      preprocess.decode(),
      preprocess.random_resized_crop(config.image_size, config.crop_scale,
                                     config.crop_ratio, config.antialias),
      preprocess.normalize(),
  ])
  return lambda data: {k: v for k, v in ops(data).items() if k != "seed"}


def host_train_dataset(config: ml_collections.ConfigDict, source: Any, *,
                       text_encoder: TextEncoder, global_batch_size: int,
                       seed: int, start_step: int,
                       rows: tuple[int, int]) -> tf.data.Dataset:
  """tf.data of one process's rows [start, stop) of each training batch.

  Args:
    config: the input config (see the module docstring).
    source: the training split's `data_source`.
    text_encoder: tokenizes to L tokens.
    global_batch_size: B, units drawn per step.
    seed: the data order's seed.
    start_step: the first step to yield.
    rows: this process's rows of each global batch of `batch_rows(config,
      B)` rows; with hard images, a row pair per unit.

  Returns:
    A dataset of host batches of stop - start rows, with the keys and shapes
    of `create_train_iterator`'s batches.
  """
  if config.hard_positive_kinds not in HARD_POSITIVE_KINDS:
    raise ValueError(f"Unknown hard_positive_kinds "
                     f"{config.hard_positive_kinds!r}; choices: "
                     f"{tuple(HARD_POSITIVE_KINDS)}")
  per_unit = 2 if config.hard_images else 1
  if rows[0] % per_unit or rows[1] % per_unit:
    raise ValueError(f"This process's rows {rows} split a hard-image pair")
  index = sampling.CaptionIndex.of(source, config.split)
  hard_images = None
  if config.hard_images:
    neighbours = None
    if config.neighbours:
      neighbours = neighbours_file.load(
          config.neighbours, dataset=source.dataset_info.full_name,
          split=config.split, num_examples=len(source))
    hard_images = sampling.HardImages(index, neighbours)
    hard_images.check(source)
  examples = _TrainExamples(
      source=source, index=index,
      order=sampling.TrainOrder(
          sampling.num_units(index, config.epoch_unit), global_batch_size,
          seed),
      epoch_unit=config.epoch_unit,
      rows=(rows[0] // per_unit, rows[1] // per_unit), encode=text_encoder,
      keep_hard_negatives=sampling.hard_negative_subset(
          index.num_pairs, config.hard_negative_fraction, seed),
      num_hard_negatives=config.num_hard_negatives,
      num_hard_positives=config.num_hard_positives,
      hard_positive_kinds=HARD_POSITIVE_KINDS[config.hard_positive_kinds],
      hard_images=hard_images)
  ds = tf.data.Dataset.from_generator(
      lambda: examples(start_step),
      output_signature=_train_signature(config.text_length,
                                        config.num_hard_negatives,
                                        config.num_hard_positives))
  ds = ds.map(train_image_op(config), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  # Every step contributes exactly stop - start rows, so batches are steps.
  ds = ds.batch(rows[1] - rows[0], drop_remainder=True)
  return ds.prefetch(config.prefetch)


def steps_per_epoch(config: ml_collections.ConfigDict, source: Any,
                    global_batch_size: int) -> int:
  """U // B for the training split `source` (see `sampling`)."""
  index = sampling.CaptionIndex.of(source, config.split)
  return sampling.TrainOrder(sampling.num_units(index, config.epoch_unit),
                             global_batch_size, 0).steps_per_epoch


def batch_rows(config: ml_collections.ConfigDict,
               global_batch_size: int) -> int:
  """Rows of a global batch: B, or 2B with hard-negative images."""
  return global_batch_size * (2 if config.hard_images else 1)


def create_train_iterator(config: ml_collections.ConfigDict, *,
                          tokenizer: Any, mesh: jax.sharding.Mesh,
                          global_batch_size: int, seed: int,
                          start_step: int = 0,
                          text_bucket: int | None = None
                          ) -> global_batches.GlobalBatches:
  """Endless training batches from step `start_step` on.

  Args:
    config: the input config (see the module docstring).
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    mesh: the device mesh; batches are sharded over its "data" axis.
    global_batch_size: B, units drawn per step across all processes.
    seed: the data order's seed.
    start_step: the step of the first batch (the position to resume at).
    text_bucket: cut each batch's texts to a multiple of this
      (`global_batches.cut_texts`;
      `clip.text_bucket(model)` where exact), or None: L as configured.

  Returns:
    An iterator of dicts of global arrays of R = `batch_rows(config, B)`
    rows (B, or 2B with hard images, each pair's partner after it): `image`
    float32 [R, S, S, 3], `text` int32 [R, L], `hard_negatives` int32
    [R, K, L], `hard_negative_mask` bool [R, K], `hard_positives` int32
    [R, P, L], `hard_positive_mask` bool [R, P], `caption_id` int32 [R],
    `texts_cut` int32 [R] (each row's texts longer than L, cut). Missing
    hard negatives/positives are masked out and their ids are 0. With
    `text_bucket`, L is each batch's own.
  """
  sharding = sharding_lib.batch_sharding(mesh, global_batch_size)
  rows = batch_rows(config, global_batch_size)
  ds = host_train_dataset(
      config, data_source(config.dataset, config.split, config.data_dir),
      text_encoder=TextEncoder(tokenizer, config.text_length),
      global_batch_size=global_batch_size, seed=seed, start_step=start_step,
      rows=sharding_lib.host_rows(sharding, rows))
  return global_batches.GlobalBatches(ds, sharding, rows, text_bucket)
