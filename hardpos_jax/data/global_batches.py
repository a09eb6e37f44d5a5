"""Host batches -> global jax.Arrays sharded over the batch axis.

Each process's rows of a step (from `input_pipeline.host_train_dataset`)
become global arrays; with a text bucket, the batch's texts are first cut to
the shortest length that holds every EOT of the global batch, which the
processes agree on (`cut_texts`).
"""

from collections.abc import Iterable, Iterator
from typing import Any
import weakref

import jax
import numpy as np

from hardpos_jax import sharding as sharding_lib
from hardpos_jax import tokenizer as tokenizer_lib


TEXT_KEYS = ("text", "hard_negatives", "hard_positives")


def cut_texts(batch: dict[str, np.ndarray], bucket: int
              ) -> dict[str, np.ndarray]:
  """`batch` with its texts [..., L] cut to the shortest multiple of
  `bucket` holding every EOT of the global batch (all processes agree).

  Exact with a causal mask and EOT pooling (see `clip.text_bucket`).
  """
  length = batch["text"].shape[-1]
  ids = np.concatenate([batch[k].reshape(-1, length) for k in TEXT_KEYS])
  used = sharding_lib.process_max(tokenizer_lib.used_length(ids, bucket))
  return {k: v[..., :used] if k in TEXT_KEYS else v
          for k, v in batch.items()}


class GlobalBatches(Iterator[dict[str, jax.Array]]):
  """Host batches turned into global arrays sharded over the batch axis;
  with `text_bucket`, their texts cut by `cut_texts`."""

  def __init__(self, host_batches: Iterable[dict[str, Any]],
               sharding: jax.sharding.Sharding, global_rows: int,
               text_bucket: int | None = None):
    self._sharding = sharding
    self._global_rows = global_rows
    self._text_bucket = text_bucket
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
    if self._text_bucket:
      local = cut_texts(local, self._text_bucket)
    return {
        k: jax.make_array_from_process_local_data(
            self._sharding, v, (self._global_rows, *v.shape[1:]))
        for k, v in local.items()
    }
