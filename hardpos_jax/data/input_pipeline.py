"""TFDS -> tf.data -> per-host shards -> global jax.Arrays.

Shapes: B global batch, b = the rows one process holds, S image side, L
tokens, K hard negatives per image, P hard positives per image.

Order and resume. Examples are read by index from an array_record source
(`as_data_source`). With e, k = divmod(s, N // B), step s reads entries
[k B, (k + 1) B) of a permutation of the N examples drawn from (seed, e); the
last N mod B of each epoch's permutation are left out. Everything random
about an example (which hard negatives and positives, the crop) is drawn from
(seed, epoch, index) or its position, so each batch is a pure function of
(seed, step): `start_step=s` yields exactly the batch an uninterrupted run
sees at step s, and there is no iterator state to checkpoint. Each process
reads and preprocesses only its rows of each batch (`host_rows`).

Input config keys (`config.x`):
  dataset, data_dir: the TFDS dataset ("synthetic_shapes/tiny") and directory.
  split: the training split.
  image_size: S. text_length: L.
  num_hard_negatives, num_hard_positives: K and P.
  hard_negative_fraction: fraction of examples that keep their HNs.
  hard_positive_kinds: "swap", "replace" or "both".
  crop_scale, crop_ratio: random resized crop's area and aspect ranges.
  prefetch: host batches tf.data prepares ahead.
"""

from collections.abc import Iterator, Sequence
import dataclasses
import functools
import itertools
import math
from typing import Any
import weakref

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from hardpos_jax.data import eval_transform
from hardpos_jax.data import preprocess
import tfds_builders  # pylint: disable=unused-import  # registers the builders

HARD_POSITIVE_KINDS = {
    "swap": ("swap",),
    "replace": ("replace",),
    "both": ("swap", "replace"),
}
# Benchmark text fields, in the order they are tokenized.
EVAL_TEXT_KEYS = ("caption", "hard_negative", "hard_positive")
# Salt of the generator that picks the examples keeping their hard negatives.
_HN_SUBSET_SALT = 1


def data_source(dataset: str, split: str, data_dir: str | None) -> Any:
  """Random-access source of a TFDS split; images stay encoded bytes.

  A single process prepares a missing dataset (seconds for synthetic_shapes;
  manual datasets need their manual_dir); multi-host runs must find it
  prepared, since every host would otherwise write it.

  Args:
    dataset: TFDS name with config, e.g. "synthetic_shapes/tiny".
    split: the split's name.
    data_dir: TFDS data directory; None means TFDS's default.

  Returns:
    A sequence of example dicts (numpy values, text as bytes).
  """
  builder = tfds.builder(dataset, data_dir=data_dir)
  if not builder.is_prepared():
    if jax.process_count() > 1:
      raise FileNotFoundError(
          f"{dataset} is not prepared in {builder.data_dir}; prepare it once "
          "(tfds.builder(...).download_and_prepare()) before a multi-host run")
    logging.info("Preparing %s in %s", dataset, builder.data_dir)
    builder.download_and_prepare()
  if split not in builder.info.splits:
    raise ValueError(f"{dataset} has no split {split!r}; choices: "
                     f"{sorted(builder.info.splits)}")
  return builder.as_data_source(
      split, decoders={"image": tfds.decode.SkipDecoding()})


def host_rows(sharding: jax.sharding.Sharding,
              global_batch_size: int) -> tuple[int, int]:
  """Rows [start, stop) of each global batch held by this process's devices."""
  slices = sharding.addressable_devices_indices_map((global_batch_size,))
  spans = sorted({s[0].indices(global_batch_size)[:2] for s in slices.values()})
  for (_, stop), (start, _) in zip(spans, spans[1:]):
    if stop != start:
      raise ValueError(f"This process's rows {spans} of the batch are not "
                       "contiguous; order the mesh's devices by process")
  return spans[0][0], spans[-1][1]


@dataclasses.dataclass(frozen=True)
class TrainOrder:
  """Which examples each step reads: a pure function of (seed, step)."""

  num_examples: int
  global_batch_size: int
  seed: int

  def __post_init__(self):
    if not 0 < self.global_batch_size <= self.num_examples:
      raise ValueError(f"Batch size {self.global_batch_size} must be in "
                       f"[1, {self.num_examples}] (the split's size)")

  @property
  def steps_per_epoch(self) -> int:
    return self.num_examples // self.global_batch_size

  @functools.lru_cache(maxsize=2)
  def _permutation(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(
        self.num_examples)

  def indices(self, step: int, rows: tuple[int, int]) -> tuple[int, np.ndarray]:
    """The epoch of `step` and the example indices of its rows [start, stop)."""
    epoch, k = divmod(step, self.steps_per_epoch)
    first = k * self.global_batch_size
    return epoch, self._permutation(epoch)[first + rows[0]:first + rows[1]]


def hard_negative_subset(num_examples: int, fraction: float,
                         seed: int) -> np.ndarray:
  """bool [N]: exactly round(fraction * N) examples, fixed by the seed."""
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(
        f"hard_negative_fraction must be in [0, 1], got {fraction}")
  order = np.random.default_rng([seed, _HN_SUBSET_SALT]).permutation(
      num_examples)
  keep = np.zeros(num_examples, bool)
  keep[order[:round(fraction * num_examples)]] = True
  return keep


class TextEncoder:
  """Tokenizes to L tokens, counting texts that are cut (warns once)."""

  def __init__(self, tokenizer: Any, length: int):
    self.tokenizer = tokenizer
    self.length = length
    self.num_texts = 0
    self.num_truncated = 0

  def __call__(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """N strings -> (int32 [N, L] ids, bool [N] whether each was cut)."""
    ids, truncated = self.tokenizer.tokenize_with_truncation(
        list(texts), context_length=self.length)
    self.num_texts += len(texts)
    if truncated.any() and not self.num_truncated:
      logging.warning(
          "Texts longer than %d tokens are cut, e.g. %r; the train metric "
          "`texts_cut` counts them per step.", self.length,
          texts[int(np.argmax(truncated))])
    self.num_truncated += int(truncated.sum())
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
  order: TrainOrder
  rows: tuple[int, int]
  encode: TextEncoder
  keep_hard_negatives: np.ndarray  # bool [N]
  num_hard_negatives: int
  num_hard_positives: int
  hard_positive_kinds: tuple[str, ...]

  def example(self, record: dict[str, Any], index: int,
              epoch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([self.order.seed, epoch, index])
    caption_id = int(record["caption_id"])
    negatives = [_text(t) for t in record["hard_negatives"]]
    if not self.keep_hard_negatives[index]:
      negatives = []
    positives = [_text(t) for t in record["hard_positives"]]
    kinds = [_text(k) for k in record["hard_positive_kinds"]]
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
    ids, cut = self.encode([_text(record["caption"])] + negatives + positives)
    hn, hn_mask = _rows_of(ids[1:1 + len(negatives)], self.num_hard_negatives)
    hp, hp_mask = _rows_of(ids[1 + len(negatives):], self.num_hard_positives)
    return {"image": record["image"], "text": ids[0], "hard_negatives": hn,
            "hard_negative_mask": hn_mask, "hard_positives": hp,
            "hard_positive_mask": hp_mask, "caption_id": np.int32(caption_id),
            "texts_cut": np.int32(cut.sum())}

  def __call__(self, start_step: int) -> Iterator[dict[str, np.ndarray]]:
    """This process's examples of steps start_step, start_step + 1, ..."""
    batch = self.order.global_batch_size
    for step in itertools.count(start_step):
      epoch, indices = self.order.indices(step, self.rows)
      records = self.source.__getitems__(indices.tolist())
      for row, (index, record) in enumerate(zip(indices, records)):
        # The crop's seed is the example's position in the data order.
        seed = np.array([self.order.seed, step * batch + self.rows[0] + row])
        yield {**self.example(record, int(index), epoch), "seed": seed}


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
                                     config.crop_ratio),
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
    global_batch_size: B.
    seed: the data order's seed.
    start_step: the first step to yield.
    rows: this process's rows of each global batch.

  Returns:
    A dataset of host batches of b = stop - start rows, with the keys and
    shapes of `create_train_iterator`'s batches.
  """
  if config.hard_positive_kinds not in HARD_POSITIVE_KINDS:
    raise ValueError(f"Unknown hard_positive_kinds "
                     f"{config.hard_positive_kinds!r}; choices: "
                     f"{tuple(HARD_POSITIVE_KINDS)}")
  order = TrainOrder(len(source), global_batch_size, seed)
  examples = _TrainExamples(
      source=source, order=order, rows=rows, encode=text_encoder,
      keep_hard_negatives=hard_negative_subset(
          len(source), config.hard_negative_fraction, seed),
      num_hard_negatives=config.num_hard_negatives,
      num_hard_positives=config.num_hard_positives,
      hard_positive_kinds=HARD_POSITIVE_KINDS[config.hard_positive_kinds])
  ds = tf.data.Dataset.from_generator(
      lambda: examples(start_step),
      output_signature=_train_signature(config.text_length,
                                        config.num_hard_negatives,
                                        config.num_hard_positives))
  ds = ds.map(train_image_op(config), num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  # Every step contributes exactly stop - start examples, so batches are steps.
  ds = ds.batch(rows[1] - rows[0], drop_remainder=True)
  return ds.prefetch(config.prefetch)


class GlobalBatches(Iterator[dict[str, jax.Array]]):
  """Host batches turned into global arrays sharded over the batch axis.

  Attributes:
    text_encoder: the `TextEncoder`, with its counts of cut texts.
  """

  def __init__(self, host_batches: tf.data.Dataset,
               sharding: jax.sharding.Sharding, global_batch_size: int,
               text_encoder: TextEncoder, num_batches: int | None = None):
    self._sharding = sharding
    self._global_batch_size = global_batch_size
    self._num_batches = num_batches
    self.text_encoder = text_encoder
    # tf.data threads running a Python generator while the interpreter shuts
    # down can hang the process at exit, so the pipeline is dropped first:
    # `weakref.finalize` runs at exit, on `close` or when this is collected.
    self._pipeline = [iter(host_batches)]
    self._stop = weakref.finalize(self, self._pipeline.clear)

  def close(self) -> None:
    """Stops the tf.data pipeline."""
    self._stop()

  def __enter__(self) -> "GlobalBatches":
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()

  def __next__(self) -> dict[str, jax.Array]:
    if not self._pipeline:
      raise StopIteration
    try:
      local = next(self._pipeline[0])
    except StopIteration:
      self.close()
      raise
    local = jax.tree.map(np.asarray, local)
    return {
        k: jax.make_array_from_process_local_data(
            self._sharding, v, (self._global_batch_size, *v.shape[1:]))
        for k, v in local.items()
    }

  def __len__(self) -> int:
    if self._num_batches is None:
      raise TypeError("The training iterator is endless")
    return self._num_batches


def batch_sharding(mesh: jax.sharding.Mesh,
                   global_batch_size: int) -> jax.sharding.NamedSharding:
  """Sharding of a batch over the mesh's "data" axis (checked to divide B)."""
  if "data" not in mesh.axis_names:
    raise ValueError(f"The mesh needs a 'data' axis; it has {mesh.axis_names}")
  if global_batch_size % mesh.shape["data"]:
    raise ValueError(f"Global batch size {global_batch_size} is not divisible "
                     f"by the {mesh.shape['data']} devices of the data axis")
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))


def create_train_iterator(config: ml_collections.ConfigDict, *,
                          tokenizer: Any, mesh: jax.sharding.Mesh,
                          global_batch_size: int, seed: int,
                          start_step: int = 0) -> GlobalBatches:
  """Endless training batches from step `start_step` on.

  Args:
    config: the input config (see the module docstring).
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    mesh: the device mesh; batches are sharded over its "data" axis.
    global_batch_size: B, across all processes.
    seed: the data order's seed.
    start_step: the step of the first batch (the position to resume at).

  Returns:
    An iterator of dicts of global arrays: `image` float32 [B, S, S, 3],
    `text` int32 [B, L], `hard_negatives` int32 [B, K, L],
    `hard_negative_mask` bool [B, K], `hard_positives` int32 [B, P, L],
    `hard_positive_mask` bool [B, P], `caption_id` int32 [B], `texts_cut`
    int32 [B] (each example's texts longer than L, cut). Missing hard
    negatives/positives are masked out and their ids are 0.
  """
  sharding = batch_sharding(mesh, global_batch_size)
  text_encoder = TextEncoder(tokenizer, config.text_length)
  ds = host_train_dataset(
      config, data_source(config.dataset, config.split, config.data_dir),
      text_encoder=text_encoder, global_batch_size=global_batch_size,
      seed=seed, start_step=start_step,
      rows=host_rows(sharding, global_batch_size))
  return GlobalBatches(ds, sharding, global_batch_size, text_encoder)


@dataclasses.dataclass
class _EvalExamples:
  """Python side of the eval pipeline: items in order, padded at the end."""

  source: Any
  text_keys: tuple[str, ...]
  global_batch_size: int
  rows: tuple[int, int]
  encode: TextEncoder

  def __call__(self) -> Iterator[dict[str, np.ndarray]]:
    n = len(self.source)
    for first in range(0, n, self.global_batch_size):
      positions = range(first + self.rows[0], first + self.rows[1])
      records = self.source.__getitems__([p for p in positions if p < n])
      for position in positions:
        if position >= n:  # Padding: no image, no text, masked out.
          yield {"image": b"", "position": np.int32(position), "mask": False,
                 **{k: np.zeros(self.encode.length, np.int32)
                    for k in self.text_keys}}
          continue
        record = records[position - first - self.rows[0]]
        ids, _ = self.encode([_text(record[k]) for k in self.text_keys])
        yield {"image": record["image"], "position": np.int32(position),
               "mask": True, **dict(zip(self.text_keys, ids))}


def _eval_image(data: bytes, size: int) -> np.ndarray:
  if not data:
    return np.zeros((size, size, 3), np.float32)
  return eval_transform.clip_eval_image(eval_transform.decode_rgb(data), size)


def host_eval_dataset(config: ml_collections.ConfigDict, source: Any, *,
                      text_encoder: TextEncoder, global_batch_size: int,
                      rows: tuple[int, int]) -> tf.data.Dataset:
  """tf.data of one process's rows of each eval batch.

  Args:
    config: the input config; reads image_size, text_length and prefetch.
    source: the benchmark split's `data_source`.
    text_encoder: tokenizes to L tokens.
    global_batch_size: B.
    rows: this process's rows [start, stop) of each global batch.

  Returns:
    A dataset of host batches of stop - start rows, with the keys and shapes
    of `create_eval_iterator`'s batches.
  """
  features = source.dataset_info.features
  text_keys = tuple(k for k in EVAL_TEXT_KEYS if k in features)
  if "caption" not in text_keys:
    raise ValueError(f"{source.dataset_info.full_name} has no 'caption' "
                     f"feature: {list(features)}")
  examples = _EvalExamples(source, text_keys, global_batch_size, rows,
                           text_encoder)
  size = config.image_size
  signature = {"image": tf.TensorSpec([], tf.string),
               "position": tf.TensorSpec([], tf.int32),
               "mask": tf.TensorSpec([], tf.bool),
               **{k: tf.TensorSpec([config.text_length], tf.int32)
                  for k in text_keys}}

  def image_op(data):
    # PIL, not TF, decodes and resizes: that is what OpenAI's preprocess does.
    image = tf.numpy_function(lambda b: _eval_image(b, size), [data["image"]],
                              tf.float32, stateful=False)
    return {**data, "image": tf.ensure_shape(image, [size, size, 3])}

  ds = tf.data.Dataset.from_generator(examples, output_signature=signature)
  ds = ds.map(image_op, num_parallel_calls=tf.data.AUTOTUNE,
              deterministic=True)
  return ds.batch(rows[1] - rows[0]).prefetch(config.prefetch)


def create_eval_iterator(config: ml_collections.ConfigDict, *, dataset: str,
                         split: str, tokenizer: Any, mesh: jax.sharding.Mesh,
                         global_batch_size: int) -> GlobalBatches:
  """One pass over a benchmark split, in order, with OpenAI's eval transform.

  Args:
    config: the input config; reads data_dir, image_size, text_length and
      prefetch.
    dataset: TFDS name with config, e.g. "hard_positives/swap".
    split: e.g. "test".
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    mesh: the device mesh; batches are sharded over its "data" axis.
    global_batch_size: B; the last batch is padded to B.

  Returns:
    A finite iterator (`len` = ceil(N / B) batches) of dicts of global arrays:
    `image` float32 [B, S, S, 3], int32 [B, L] token ids for each of
    `caption`, `hard_negative`, `hard_positive` that the dataset has,
    `position` int32 [B] (the item's index in the split's source) and `mask`
    bool [B] (False on padding rows, whose image and ids are zeros).
  """
  sharding = batch_sharding(mesh, global_batch_size)
  source = data_source(dataset, split, config.data_dir)
  text_encoder = TextEncoder(tokenizer, config.text_length)
  ds = host_eval_dataset(config, source, text_encoder=text_encoder,
                         global_batch_size=global_batch_size,
                         rows=host_rows(sharding, global_batch_size))
  return GlobalBatches(ds, sharding, global_batch_size, text_encoder,
                       math.ceil(len(source) / global_batch_size))
