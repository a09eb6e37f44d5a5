"""Scores benchmark items, encoding each unique image and caption once.

The paper's run_eval.py encodes an item's image and captions anew for every
item. Here a split's items are first reduced to indices into its unique
images and unique caption strings. Images are told apart by their encoded
bytes, not by `image_id`: SWAP items crop one Visual Genome image to
different boxes under one id. Each unique image and text is encoded once, in
fixed-size batches of B rows sharded over the mesh's "data" axis (the last
batch padded, its padding dropped), and an item's score against each of its
K texts is the float32 dot product of the gathered unit embeddings: cosine
similarity without the logit scale.

`rank_gallery` ranks a gallery (captions, images, classes) for each query
embedding blockwise on the mesh: retrieval and zero-shot classification.

Multi-host: every process reads the split's texts and ids and tokenizes all
texts (for one shared text length), but reads, decodes and encodes only its
own rows of each batch. The jitted towers return replicated embeddings, so
every process ends with the same scores.

Legend: N items, K texts per item, M unique images, U unique texts, B batch
rows, S image side, L tokens, D embedding width, Q queries, G gallery items.
"""

import collections
from collections.abc import Callable, Iterator, Sequence
import concurrent.futures
import dataclasses
import functools
import hashlib
import os
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from hardpos_jax import sharding as sharding_lib
from hardpos_jax.data import eval_transform
from hardpos_jax.models import clip

# Records read per call when collecting a split's ids, texts and labels.
_READ_CHUNK = 1024
# Host batches prepared ahead of the one being encoded.
_PREFETCH = 2


@dataclasses.dataclass(frozen=True)
class Encoders:
  """Jitted towers of one model config, batches sharded over a mesh.

  Build with `create_encoders`; one instance serves every evaluation of the
  model (the trainer keeps one and passes its current params each time).

  Attributes:
    mesh: the device mesh; batches are split over its "data" axis.
    batch_size: B rows per call, images or texts, across all processes.
    image_size: S.
    context_length: C, the longest text the text tower takes.
    model_config: the model's config dict (its text length rule).
    embed_dim: D.
    precision: `jax.default_matmul_precision` of the towers' matmuls.
    image_fn: (params, float32 [B, S, S, 3]) -> float32 [B, D], replicated.
    text_fn: (params, int32 [B, L]) -> float32 [B, D], replicated.
    before_batch: called on every process before each batch is dispatched
      and each chunk of records is read; raising stops the evaluation there
      (the trainer's preemption check).
  """

  mesh: jax.sharding.Mesh
  batch_size: int
  image_size: int
  context_length: int
  model_config: dict
  embed_dim: int
  precision: str
  image_fn: Callable[[Any, jax.Array], jax.Array]
  text_fn: Callable[[Any, jax.Array], jax.Array]
  before_batch: Callable[[], None]

  @property
  def batch_sharding(self) -> jax.sharding.NamedSharding:
    return sharding_lib.batch_sharding(self.mesh, self.batch_size)

  @property
  def replicated(self) -> jax.sharding.NamedSharding:
    return sharding_lib.replicated(self.mesh)


def create_encoders(model_config: dict, mesh: jax.sharding.Mesh,
                    batch_size: int, precision: str = "highest",
                    before_batch: Callable[[], None] | None = None
                    ) -> Encoders:
  """Jitted image and text towers for `CLIP(**model_config)` on `mesh`.

  Args:
    model_config: the model's config dict.
    mesh: a mesh with a "data" axis; its devices must be ordered by process.
    batch_size: B, divisible by the size of the "data" axis.
    precision: matmul precision; "highest" keeps float32 models in float32
      on TPU, whose default runs float32 matmuls in one bfloat16 pass.
    before_batch: see `Encoders`, e.g. a `preemption.Clock`'s `check`.

  Returns:
    The `Encoders`.
  """
  sharding_lib.batch_sharding(mesh, batch_size)  # Checks B and the mesh.
  image_fn, text_fn = clip.towers(model_config, precision,
                                  sharding_lib.replicated(mesh))
  text = model_config["text"]
  return Encoders(
      mesh=mesh, batch_size=batch_size, image_size=model_config["image_size"],
      context_length=text["context_length"],
      model_config=dict(model_config),
      embed_dim=model_config["embed_dim"], precision=precision,
      image_fn=image_fn, text_fn=text_fn,
      before_batch=before_batch or (lambda: None))


def _text(value: bytes | str) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else value


@dataclasses.dataclass(frozen=True)
class Items:
  """A split's items as indices into its unique images and texts.

  Attributes:
    index: int64 [N] item ids (the split's index feature), ascending.
    image: int64 [N] each item's row in `image_positions`.
    text: int64 [N, K] each item's rows in `texts`, in `text_keys` order.
    image_positions: int64 [M] the source position of each unique image.
    texts: the U unique texts.
  """

  index: np.ndarray
  image: np.ndarray
  text: np.ndarray
  image_positions: np.ndarray
  texts: list[str]


def read_records(source: Any, before_chunk: Callable[[], None] = lambda: None
                 ) -> Iterator[tuple[int, dict]]:
  """(position, record) for a whole split, read in chunks.

  Args:
    source: a random-access split (`len`, `__getitems__`).
    before_chunk: called before each chunk is read, e.g. an `Encoders`'
      `before_batch`, so that a long read can be preempted too.
  """
  for first in range(0, len(source), _READ_CHUNK):
    before_chunk()
    positions = list(range(first, min(first + _READ_CHUNK, len(source))))
    yield from zip(positions, source.__getitems__(positions))


def read_items(source: Any, text_keys: Sequence[str], index_key: str,
               before_chunk: Callable[[], None] = lambda: None) -> Items:
  """Reads a split's ids and texts and finds its unique images and texts.

  Args:
    source: a random-access split (`len`, `__getitems__`) of dicts with
      encoded `image` bytes, the `text_keys` texts and `index_key`.
    text_keys: the K text features scored against the image.
    index_key: the feature that identifies an item.
    before_chunk: see `read_records`.

  Returns:
    The `Items`, sorted by id, so a rebuilt dataset scores in one order.
  """
  images, image_positions, texts = {}, [], {}
  index, image, text = [], [], []
  for position, record in read_records(source, before_chunk):
    digest = hashlib.blake2b(record["image"], digest_size=16).digest()
    if digest not in images:
      images[digest] = len(images)
      image_positions.append(position)
    image.append(images[digest])
    text.append([texts.setdefault(_text(record[k]), len(texts))
                 for k in text_keys])
    index.append(int(record[index_key]))
  order = np.argsort(index, kind="stable")
  index = np.asarray(index, np.int64)[order]
  if len(np.unique(index)) != len(index):
    raise ValueError(f"The split repeats {index_key} values, so its items "
                     "cannot be told apart")
  return Items(index=index, image=np.asarray(image, np.int64)[order],
               text=np.asarray(text, np.int64).reshape(-1, len(text_keys))[
                   order],
               image_positions=np.asarray(image_positions, np.int64),
               texts=list(texts))


def _encode(encoders: Encoders, fn: Callable, params: Any, count: int,
            load_rows: Callable[[list[int]], np.ndarray],
            row_shape: tuple[int, ...], dtype: Any) -> np.ndarray:
  """Embeds `count` rows in padded global batches; loads only this host's.

  Args:
    encoders: the towers and mesh.
    fn: `encoders.image_fn` or `encoders.text_fn`.
    params: the model params, replicated on the mesh.
    count: how many rows to embed.
    load_rows: row positions -> their [len(positions), *row_shape] inputs.
    row_shape: the shape of one input row.
    dtype: the inputs' dtype.

  Returns:
    float32 [count, D] embeddings, the same on every process.
  """
  batch = encoders.batch_size
  sharding = encoders.batch_sharding
  start, stop = sharding_lib.host_rows(sharding, batch)

  def host_batch(first: int) -> np.ndarray:
    rows = np.zeros((stop - start, *row_shape), dtype)
    positions = list(range(first + start, min(first + stop, count)))
    if positions:
      rows[:len(positions)] = load_rows(positions)
    return rows

  firsts = range(0, count, batch)
  embeddings, previous = [], None
  with concurrent.futures.ThreadPoolExecutor(1) as loader:
    queue = collections.deque(
        loader.submit(host_batch, f) for f in firsts[:_PREFETCH])
    for i in range(len(firsts)):
      encoders.before_batch()
      local = queue.popleft().result()
      if i + _PREFETCH < len(firsts):
        queue.append(loader.submit(host_batch, firsts[i + _PREFETCH]))
      inputs = jax.make_array_from_process_local_data(
          sharding, local, (batch, *row_shape))
      out = fn(params, inputs)
      # Fetching the previous batch only now keeps one call in flight.
      if previous is not None:
        embeddings.append(np.asarray(previous))
      previous = out
  if previous is not None:
    embeddings.append(np.asarray(previous))
  if not embeddings:
    return np.zeros((0, encoders.embed_dim), np.float32)
  return np.concatenate(embeddings)[:count]


def encode_images(encoders: Encoders, params: Any, source: Any,
                  positions: np.ndarray) -> np.ndarray:
  """Embeds the images at source `positions` with OpenAI's eval transform.

  Args:
    encoders: the towers and mesh.
    params: the model params, replicated on the mesh.
    source: the split (records with encoded `image` bytes).
    positions: int [M] source positions, one per image.

  Returns:
    float32 [M, D] unit embeddings.
  """
  size = encoders.image_size
  with concurrent.futures.ThreadPoolExecutor(os.cpu_count()) as workers:

    def load_rows(rows: list[int]) -> np.ndarray:
      records = source.__getitems__([int(positions[r]) for r in rows])
      # PIL decodes and resizes with the GIL released: threads use all cores.
      return np.stack(list(workers.map(
          lambda r: eval_transform.clip_eval_image(
              eval_transform.decode_rgb(r["image"]), size), records)))

    return _encode(encoders, encoders.image_fn, params, len(positions),
                   load_rows, (size, size, 3), np.float32)


def encode_texts(encoders: Encoders, params: Any, tokenizer: Any,
                 texts: Sequence[str]) -> tuple[np.ndarray, int, int]:
  """Embeds U texts at the shortest exact length.

  Args:
    encoders: the towers and mesh.
    params: the model params, replicated on the mesh.
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    texts: the U texts.

  Returns:
    (float32 [U, D] unit embeddings, L, how many texts were cut to C tokens).
  """
  ids, truncated = tokenizer.tokenize_with_truncation(
      list(texts), context_length=encoders.context_length)
  if truncated.any():
    logging.warning("%d texts are longer than %d tokens and were cut, e.g. "
                    "%r", truncated.sum(), encoders.context_length,
                    texts[int(np.argmax(truncated))])
  length = clip.text_length(encoders.model_config, ids)
  ids = ids[:, :length]
  return (_encode(encoders, encoders.text_fn, params, len(texts),
                  lambda rows: ids[rows], (length,), np.int32),
          length, int(truncated.sum()))


@dataclasses.dataclass(frozen=True)
class SplitScores:
  """Scores of a split's items and what it took to compute them.

  Attributes:
    index: int64 [N] item ids, ascending.
    scores: float32 [N, K] cosine similarity of each item's image and texts.
    num_images: M, images encoded.
    num_texts: U, texts encoded.
    text_length: L.
    num_truncated: texts cut to the model's context.
  """

  index: np.ndarray
  scores: np.ndarray
  num_images: int
  num_texts: int
  text_length: int
  num_truncated: int


def score_split(encoders: Encoders, params: Any, tokenizer: Any, source: Any,
                text_keys: Sequence[str], index_key: str) -> SplitScores:
  """Scores every item of a split against its K texts.

  Args:
    encoders: the towers and mesh.
    params: the model params (any placement; replicated onto the mesh).
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    source: the split (see `read_items`).
    text_keys: the K text features, e.g. caption, hard_negative.
    index_key: the feature that identifies an item.

  Returns:
    The `SplitScores`.
  """
  items = read_items(source, text_keys, index_key, encoders.before_batch)
  params = sharding_lib.replicate(params, encoders.mesh)
  zimg = encode_images(encoders, params, source, items.image_positions)
  ztxt, length, truncated = encode_texts(encoders, params, tokenizer,
                                         items.texts)
  scores = np.einsum("nd,nkd->nk", zimg[items.image], ztxt[items.text])
  return SplitScores(index=items.index, scores=scores.astype(np.float32),
                     num_images=len(zimg), num_texts=len(ztxt),
                     text_length=length, num_truncated=truncated)


@functools.cache
def _rank_block_fn(mesh: jax.sharding.Mesh) -> Callable:
  """Jitted (queries [B, D], labels [B], gallery [G, D], labels [G]) ranks."""

  def rank_block(queries, query_labels, gallery, gallery_labels):
    # HIGHEST keeps the similarities float32 on TPU, whose default is bf16.
    s = jnp.einsum("bd,gd->bg", queries, gallery,
                   precision=jax.lax.Precision.HIGHEST)
    right = query_labels[:, None] == gallery_labels[None, :]
    best = jnp.max(jnp.where(right, s, -jnp.inf), axis=1, keepdims=True)
    # Right and wrong items come from one product, so exact ties stay ties.
    return jnp.sum(~right & (s >= best), axis=1), jnp.argmax(s, axis=1)

  return jax.jit(rank_block, out_shardings=sharding_lib.replicated(mesh))


@dataclasses.dataclass(frozen=True)
class Ranks:
  """Where each query's right gallery items rank.

  Attributes:
    rivals: int64 [Q] the wrong gallery items that score at least as high as
      the query's best right one: its 0-based rank with ties counted against
      it. Recall@k and top-k accuracy are mean(rivals < k).
    top: int64 [Q] the highest-scoring gallery item (the first of ties).
  """

  rivals: np.ndarray
  top: np.ndarray


def rank_gallery(encoders: Encoders, queries: np.ndarray,
                 query_labels: np.ndarray, gallery: np.ndarray,
                 gallery_labels: np.ndarray) -> Ranks:
  """Ranks a gallery for each query by cosine similarity, on the mesh.

  A gallery item is right for a query when their labels are equal. Blocks of
  B queries, sharded over the "data" axis (the last one padded), are scored
  in float32 against the whole gallery, replicated: each call holds B x G
  similarities, never Q x G.

  Args:
    encoders: the mesh and B.
    queries: float32 [Q, D] unit embeddings.
    query_labels: int [Q].
    gallery: float32 [G, D] unit embeddings.
    gallery_labels: int [G]; every query label must be among them.

  Returns:
    The `Ranks`, the same on every process.
  """
  query_labels = np.asarray(query_labels, np.int32)
  gallery_labels = np.asarray(gallery_labels, np.int32)
  unmatched = np.setdiff1d(query_labels, gallery_labels)
  if unmatched.size:
    raise ValueError(f"{unmatched.size} query labels have no gallery item, "
                     f"e.g. {unmatched[0]}")

  fn = _rank_block_fn(encoders.mesh)
  put = sharding_lib.put
  gallery = put(np.asarray(gallery, np.float32), encoders.replicated)
  gallery_labels = put(gallery_labels, encoders.replicated)
  batch, width = encoders.batch_size, queries.shape[1]
  blocks = []
  for first in range(0, len(queries), batch):
    encoders.before_batch()
    count = min(batch, len(queries) - first)
    block = np.zeros((batch, width), np.float32)
    block[:count] = queries[first:first + count]
    labels = np.zeros(batch, np.int32)
    labels[:count] = query_labels[first:first + count]
    blocks.append((count, fn(put(block, encoders.batch_sharding),
                             put(labels, encoders.batch_sharding), gallery,
                             gallery_labels)))

  def fetch(output: int) -> np.ndarray:
    # Fetched once all blocks are dispatched, so the device never waits.
    return np.concatenate([np.zeros(0, np.int64)] + [
        np.asarray(out[output])[:count] for count, out in blocks]).astype(
            np.int64)

  return Ranks(rivals=fetch(0), top=fetch(1))


def item_scorer(text_keys: Sequence[str], index_key: str) -> Callable:
  """A kind's `score_split` for item benchmarks, whose subsets all have the
  same features: `(encoders, params, tokenizer, source, subset) ->
  SplitScores`."""

  def score(encoders: Encoders, params: Any, tokenizer: Any, source: Any,
            subset: str) -> SplitScores:
    del subset
    return score_split(encoders, params, tokenizer, source, text_keys,
                       index_key)

  return score
