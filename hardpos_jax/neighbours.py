"""`python -m hardpos_jax.neighbours`: each training image's nearest images.

  python -m hardpos_jax.neighbours --model=ViT-B-32.pt \
      --dataset=coco_hard_pos_neg/coco --split=train --data_dir=DIR \
      --k=3 --out=neighbours.npz
  python -m hardpos_jax.neighbours --workdir=runs/pos_neg [--step=N] ...

NegCLIP trains each image next to one of its nearest images, the "hard-negative
image". For a dataset without released neighbours, this embeds every image of
the split with the model's image tower (OpenAI's eval transform) and writes
each example's k nearest by cosine similarity as a neighbours file (format:
`hardpos_jax.data.neighbours_file`), for `config.input.neighbours`.

The training datasets hold one example per image. Any other split (a
benchmark's items) is grouped into images by `image_id`, so the nearest
"image" is never another example of the same one: each image is encoded
once, and an example's neighbours are its image's k nearest other images,
each named by the first example (lowest index) that shows it.

`--model` is anything `hardpos_jax.load` reads; `--workdir` uses a training
workdir's checkpoint at `--step`, by default the latest. On several hosts,
run the same command on each with `--distributed`; process 0 writes.

From Python or a notebook:

    found = compute(hardpos_jax.load("ViT-B-32.pt"), "coco_hard_pos_neg/coco")
    neighbours_file.save("neighbours.npz", **found.save_kwargs())

Legend: N examples, M images, D embedding width, k neighbours, B batch rows.
"""

from collections.abc import Sequence
import dataclasses
import functools
import math
import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

import hardpos_jax
from hardpos_jax import console
from hardpos_jax import sharding
from hardpos_jax.data import input_pipeline
from hardpos_jax.data import neighbours_file
from hardpos_jax.evals import encoding
from hardpos_jax.evals import scoring

# A stage says how far it is about this many times.
_PROGRESS_LINES = 20
# Every host computes the same; one prints.
_say = functools.partial(console.say, lead_only=True)


class _Progress:
  """Called once per unit of the current stage (as `Encoders.before_batch`
  for batches), says how far the stage is."""

  def __init__(self):
    self._stage, self._unit, self._total, self._done = "", "", 0, 0
    self._began = 0.0

  def start(self, stage: str, total: int, unit: str) -> None:
    self._stage, self._unit, self._total, self._done = stage, unit, total, 0
    self._began = time.perf_counter()

  def __call__(self) -> None:
    self._done += 1
    every = max(1, self._total // _PROGRESS_LINES)
    if self._done % every == 0 or self._done == self._total:
      _say(f"  {self._stage} {self._done}/{self._total} {self._unit} "
           f"({time.perf_counter() - self._began:.0f} s)")


def _check_k(k: int, count: int, what: str) -> None:
  if not 1 <= k < count:
    raise ValueError(f"k={k} nearest neighbours need 1 <= k < {count}, the "
                     f"number of {what}: none is its own neighbour")


@functools.cache
def _nearest_block_fn(mesh: jax.sharding.Mesh, k: int):
  """Jitted (queries [B, D], their rows [B], gallery [M, D]) -> top k."""

  def nearest_block(queries, rows, gallery):
    # HIGHEST keeps the similarities float32 on TPU, whose default is bf16.
    s = jnp.einsum("bd,md->bm", queries, gallery,
                   precision=jax.lax.Precision.HIGHEST)
    own = rows[:, None] == jnp.arange(gallery.shape[0])[None, :]
    return jax.lax.top_k(jnp.where(own, -jnp.inf, s), k)

  return jax.jit(nearest_block, out_shardings=sharding.replicated(mesh))


def nearest(encoders: encoding.Encoders, embeddings: np.ndarray,
            k: int) -> tuple[np.ndarray, np.ndarray]:
  """Each embedding's k most similar others, blockwise on the mesh.

  Blocks of B rows, sharded over the "data" axis (the last one padded), are
  scored in float32 against all M rows, replicated: each call holds B x M
  similarities, never M x M. A row's own column is masked out, so it is
  never its own neighbour, even when another row is identical to it.

  Args:
    encoders: the mesh and B; `before_batch` is called before each block.
    embeddings: float32 [M, D] unit embeddings.
    k: neighbours per row, 1 <= k < M.

  Returns:
    (int64 [M, k] row indices, nearest first; float32 [M, k] their cosine
    similarities, descending), the same on every process.

  Raises:
    ValueError: k is not in [1, M).
  """
  embeddings = np.asarray(embeddings, np.float32)
  count, width = embeddings.shape
  _check_k(k, count, "rows")

  put = sharding.put
  fn = _nearest_block_fn(encoders.mesh, k)
  gallery = put(embeddings, encoders.replicated)
  batch = encoders.batch_size
  blocks = []
  for first in range(0, count, batch):
    encoders.before_batch()
    rows = np.arange(first, first + batch, dtype=np.int32)
    block = np.zeros((batch, width), np.float32)
    block[:min(batch, count - first)] = embeddings[first:first + batch]
    blocks.append(fn(put(block, encoders.batch_sharding),
                     put(rows, encoders.batch_sharding), gallery))
  # Fetched once all blocks are dispatched, so the device never waits.
  similarity = np.concatenate([np.asarray(s) for s, _ in blocks])[:count]
  indices = np.concatenate([np.asarray(i) for _, i in blocks])[:count]
  return indices.astype(np.int64), similarity.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class SplitNeighbours:
  """A split's neighbours, as `neighbours_file` stores them.

  Attributes:
    neighbours: int64 [N, k] example indices, nearest first; never an example
      of the row's own image.
    similarity: float32 [N, k] their images' cosine similarities.
    image_ids: the N examples' `image_id`s.
    dataset: the dataset's full name, with its version.
    split: the split.
    num_images: M, the distinct images encoded.
  """

  neighbours: np.ndarray
  similarity: np.ndarray
  image_ids: list[str]
  dataset: str
  split: str
  num_images: int

  def save_kwargs(self) -> dict:
    """The keyword arguments of `neighbours_file.save`."""
    return dict(neighbours=self.neighbours, similarity=self.similarity,
                image_ids=self.image_ids, dataset=self.dataset,
                split=self.split)


def compute(model: hardpos_jax.Model, dataset: str, split: str = "train",
            data_dir: str | None = None, k: int = 3, batch_size: int = 256,
            mesh: jax.sharding.Mesh | None = None) -> SplitNeighbours:
  """Finds each example's k nearest other images by the model's embeddings.

  Args:
    model: a `hardpos_jax.Model` (only its image tower runs).
    dataset: TFDS name with config, e.g. "coco_hard_pos_neg/coco".
    split: the split.
    data_dir: TFDS data directory; None means TFDS's default.
    k: neighbours per example, fewer than the split's distinct images.
    batch_size: B, images per encoder call and rows per search block,
      divisible by the devices.
    mesh: a mesh with a "data" axis; default: every device, by process.

  Returns:
    The `SplitNeighbours`, the same on every process.

  Raises:
    ValueError: k is not in [1, M) for the split's M images.
  """
  began = time.perf_counter()
  progress = _Progress()
  encoders = encoding.create_encoders(
      model.config, mesh or sharding.create_mesh(), batch_size,
      before_batch=progress)
  source = input_pipeline.data_source(dataset, split, data_dir)
  full_name = source.dataset_info.full_name
  _say(f"Reading the image ids of {len(source)} examples of "
       f"{full_name} {split} ...")
  progress.start("read", len(source), "examples")
  image_ids, images, positions = [], {}, []
  for position, record in scoring.read_records(source):
    progress()
    image_id = record["image_id"].decode("utf-8")
    image_ids.append(image_id)
    if image_id not in images:
      images[image_id] = len(images)
      positions.append(position)
  image_of = np.asarray([images[i] for i in image_ids], np.int64)
  positions = np.asarray(positions, np.int64)
  # Checked before the long encoding, not after it in `nearest`.
  _check_k(k, len(positions), f"distinct images in {full_name} {split}")
  blocks = math.ceil(len(positions) / batch_size)
  _say(f"Encoding {len(positions)} images ({len(source)} examples) ...")
  progress.start("encoded", blocks, "batches")
  embeddings = encoding.encode_images(
      encoders, sharding.replicate(model.params, encoders.mesh), source,
      positions)
  _say(f"Searching the {k} nearest of {len(positions)} images ...")
  progress.start("searched", blocks, "blocks")
  near, similarity = nearest(encoders, embeddings, k)
  _say(f"Found in {time.perf_counter() - began:.0f} s")
  return SplitNeighbours(
      neighbours=positions[near[image_of]], similarity=similarity[image_of],
      image_ids=image_ids, dataset=full_name, split=split,
      num_images=len(positions))


def run(*, out: str, dataset: str, model: str | None = None,
        workdir: str | None = None, step: int | None = None,
        split: str = "train", data_dir: str | None = None, k: int = 3,
        batch_size: int = 256, tokenizer: str | None = None
        ) -> SplitNeighbours:
  """The command: neighbours by `model` (a path) or a workdir's checkpoint.

  Returns:
    The `SplitNeighbours`, written to `out` by process 0.
  """
  if (model is None) == (workdir is None):
    raise ValueError("Give exactly one of --model and --workdir")
  if model is not None and step is not None:
    raise ValueError("--model takes no --step")
  found = compute(hardpos_jax.load(model or workdir, tokenizer, step=step),
                  dataset, split, data_dir, k, batch_size)
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    neighbours_file.save(out, **found.save_kwargs())
    _say(f"Wrote {out}: {len(found.neighbours)} examples "
         f"({found.num_images} images) x {k} neighbours")
  return found


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  tf.config.set_visible_devices([], "GPU")
  f = flags.FLAGS
  console.log_to(os.path.dirname(os.path.abspath(f.out)), "neighbours")
  if f.distributed:
    sharding.initialize_distributed()
  try:
    run(out=f.out, dataset=f.dataset, model=f.model, workdir=f.workdir,
        step=f.step, split=f.split, data_dir=f.data_dir, k=f.k,
        batch_size=f.batch_size, tokenizer=f.tokenizer)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


if __name__ == "__main__":
  # Defined here, not at import, so the trainer and notebooks can import this.
  flags.DEFINE_string("model", None, "A checkpoint hardpos_jax.load reads.")
  flags.DEFINE_string("workdir", None, "A training workdir.")
  flags.DEFINE_integer("step", None,
                       "The workdir's step to use; default: the latest.")
  flags.DEFINE_string("dataset", None,
                      "TFDS name with config, e.g. coco_hard_pos_neg/coco.")
  flags.DEFINE_string("split", "train", "The split.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory.")
  flags.DEFINE_integer("k", 3, "Neighbours per image.")
  flags.DEFINE_integer("batch_size", 256,
                       "Images per encoder call and rows per search block, "
                       "all devices.")
  flags.DEFINE_string("out", None, "The neighbours file to write (.npz).")
  flags.DEFINE_string("tokenizer", None,
                      "BPE .txt.gz or HF tokenizer dir, only for loading a "
                      "model whose vocabulary is not the default; see "
                      "hardpos_jax.load's `vocab`.")
  flags.DEFINE_bool("distributed", False,
                    "Join the multi-host runtime (sharding.initialize_distributed).")
  flags.mark_flags_as_required(["dataset", "out"])
  app.run(main)
