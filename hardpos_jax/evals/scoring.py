"""Scores benchmark items, encoding each unique image and caption once.

The paper's run_eval.py encodes an item's image and captions anew for every
item. Here a split's items are first reduced to indices into its unique
images and unique caption strings. Images are told apart by their encoded
bytes, not by `image_id`: SWAP items crop one Visual Genome image to
different boxes under one id. Each unique image and text is encoded once
(`encoders.encode_images`, `encoders.encode_texts`), and an item's score
against each of its K texts is the float32 dot product of the unit
embeddings: cosine similarity without the logit scale.

`rank_gallery` ranks a gallery (captions, images, classes) for each query
embedding blockwise on the mesh: retrieval and zero-shot classification.

Multi-host: every process reads the split's texts and ids and tokenizes all
texts (for one shared text length), but reads, decodes and encodes only its
own rows of each batch, and ends with the same scores.

Legend: N items, K texts per item, M unique images, U unique texts, B batch
rows, D embedding width, Q queries, G gallery items.
"""

from collections.abc import Callable, Iterator, Sequence
import dataclasses
import functools
import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hardpos_jax import sharding as sharding_lib
from hardpos_jax.evals.encoding import encode_images
from hardpos_jax.evals.encoding import encode_texts
from hardpos_jax.evals.encoding import Encoders

# Records read per call when collecting a split's ids, texts and labels.
_READ_CHUNK = 1024


def as_text(value: bytes | str) -> str:
  """A record's text feature (bytes from TFDS) as a string."""
  return value.decode("utf-8") if isinstance(value, bytes) else value


class ImageIndex:
  """Numbers a split's distinct images, told apart by their encoded bytes,
  in the order they are first seen.

  Attributes:
    places: each distinct image's place (what `row` was given), by row.
  """

  def __init__(self):
    self._rows: dict[bytes, int] = {}
    self.places: list[Any] = []

  def row(self, data: bytes, place: Any) -> int:
    """The row of the image `data`; an unseen image's `place` (where to
    read it again) is noted in `places`."""
    digest = hashlib.blake2b(data, digest_size=16).digest()
    if digest not in self._rows:
      self._rows[digest] = len(self._rows)
      self.places.append(place)
    return self._rows[digest]


def id_order(ids: Sequence[int], key: str) -> tuple[np.ndarray, np.ndarray]:
  """(order, ids[order]): the stable order that sorts `ids`, and the sorted
  ids, which must differ; `key` (their feature) names them in the error."""
  order = np.argsort(ids, kind="stable")
  index = np.asarray(ids, np.int64)[order]
  if len(np.unique(index)) != len(index):
    raise ValueError(f"The split repeats {key} values, so its items "
                     "cannot be told apart")
  return order, index


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
  images, texts = ImageIndex(), {}
  index, image, text = [], [], []
  for position, record in read_records(source, before_chunk):
    image.append(images.row(record["image"], position))
    text.append([texts.setdefault(as_text(record[k]), len(texts))
                 for k in text_keys])
    index.append(int(record[index_key]))
  order, index = id_order(index, index_key)
  return Items(index=index, image=np.asarray(image, np.int64)[order],
               text=np.asarray(text, np.int64).reshape(-1, len(text_keys))[
                   order],
               image_positions=np.asarray(images.places, np.int64),
               texts=list(texts))


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

  def counts(self) -> dict[str, int]:
    """What scoring took, as the kinds' summaries report it."""
    return {"images": self.num_images, "texts": self.num_texts,
            "text_length": self.text_length, "truncated": self.num_truncated}


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
