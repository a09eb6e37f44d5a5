"""The model's jitted towers on a mesh, and batched encoding with them.

`create_encoders` builds one `Encoders` per model config (the api's `Model`,
the evaluator, the trainer and the benchmarks use the same compiled towers,
precision and text-length rule, `clip.towers`). `encode_images` and
`encode_texts` embed U rows in fixed-size batches of B rows sharded over the
mesh's "data" axis (the last batch padded, its padding dropped), each
process loading only its own rows of each batch; the towers return
replicated embeddings, so every process ends with all of them.

Legend: B batch rows, S image side, L tokens, D embedding width, M images,
U texts.
"""

import collections
from collections.abc import Callable, Sequence
import concurrent.futures
import dataclasses
import os
from typing import Any

from absl import logging
import jax
import numpy as np

from hardpos_jax import sharding as sharding_lib
from hardpos_jax.data import eval_transform
from hardpos_jax.models import clip

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

