"""The neighbours file: each training image's nearest images, for NegCLIP.

NegCLIP (Yuksekgonul et al., ICLR 2023) trains each image next to one of its
nearest COCO images, the "hard-negative image". Its TSVs carry the
neighbours (`neg_image`, stored by the `negclip` builder config); for the
`coco` config, `python -m hardpos_jax.neighbours` computes them from a
model's image embeddings and writes this file, which the input pipeline
reads (`config.input.neighbours`).

Format: a NumPy .npz with
  neighbours  int32 [N, k]  example indices into the split, nearest first,
                            never the example itself;
  similarity  float32 [N, k] their cosine similarities;
  image_ids   str [N]       each example's `image_id`, checked as it is read;
  dataset     str []        the TFDS dataset's full name, with its version;
  split       str []        the split.
"""

import dataclasses

import numpy as np

from hardpos_jax import atomic
from tfds_builders import common

KEYS = ("neighbours", "similarity", "image_ids", "dataset", "split")


@dataclasses.dataclass(frozen=True)
class Neighbours:
  """A loaded neighbours file; see the module docstring for the fields."""

  path: str
  neighbours: np.ndarray
  similarity: np.ndarray
  image_ids: np.ndarray
  dataset: str
  split: str

  def check_image_id(self, index: int, image_id: str) -> None:
    """Raises DataError unless example `index` has the file's image id."""
    if str(self.image_ids[index]) != image_id:
      raise common.DataError(
          f"{self.path}, row {index}: image_id {str(self.image_ids[index])!r},"
          " but"
          f" example {index} of {self.dataset}/{self.split} is {image_id!r};"
          " the file was made for another build of the dataset")


def save(path: str, *, neighbours: np.ndarray, similarity: np.ndarray,
         image_ids: list[str], dataset: str, split: str) -> None:
  """Writes a neighbours file atomically.

  Args:
    path: where, usually ending in .npz.
    neighbours: int [N, k] example indices, nearest first.
    similarity: float [N, k] their similarities.
    image_ids: the N examples' image ids.
    dataset: the dataset's full name (`builder.info.full_name`).
    split: the split.
  """

  def write(tmp):
    with open(tmp, "wb") as f:
      np.savez(f, neighbours=np.asarray(neighbours, np.int32),
               similarity=np.asarray(similarity, np.float32),
               image_ids=np.asarray(image_ids, str),
               dataset=np.asarray(dataset), split=np.asarray(split))

  atomic.write_atomically(path, write)


def load(path: str, *, dataset: str, split: str,
         num_examples: int) -> Neighbours:
  """Reads and checks a neighbours file against the split it is used with.

  Args:
    path: the file.
    dataset: the training dataset's full name (`info.full_name`).
    split: the training split.
    num_examples: N, the split's size.

  Returns:
    The `Neighbours`.

  Raises:
    DataError: the file is missing or unreadable, lacks a key, was made for
      another dataset or split, has the wrong length, or holds an index out
      of range or an example's own index; the message names the row.
  """
  try:
    with np.load(path, allow_pickle=False) as f:
      missing = [k for k in KEYS if k not in f]
      if missing:
        raise common.DataError(f"{path} lacks {missing}; is it a neighbours "
                               "file (python -m hardpos_jax.neighbours)?")
      data = {k: f[k] for k in KEYS}
  except (OSError, ValueError) as e:
    raise common.DataError(f"{path} cannot be read as .npz: {e}") from e
  made_for = f"{data['dataset']}/{data['split']}"
  if (str(data["dataset"]), str(data["split"])) != (dataset, split):
    raise common.DataError(
        f"{path} holds the neighbours of {made_for}, not {dataset}/{split}")
  near = data["neighbours"]
  if near.ndim != 2 or near.shape[1] < 1 or len(near) != num_examples:
    raise common.DataError(
        f"{path}: neighbours has shape {near.shape}, but {dataset}/{split} "
        f"has {num_examples} examples: it needs [{num_examples}, k >= 1]")
  for key in ("similarity", "image_ids"):
    if data[key].shape[:1] != (num_examples,):
      raise common.DataError(f"{path}: {key} has shape {data[key].shape}, "
                             f"not [{num_examples}, ...]")
  bad = (near < 0) | (near >= num_examples)
  own = near == np.arange(num_examples)[:, None]
  for problem, what in ((bad, "out of range"), (own, "the example itself")):
    if problem.any():
      row, col = np.argwhere(problem)[0]
      raise common.DataError(
          f"{path}, row {row}: neighbour {col} is {near[row, col]}, {what} "
          f"(examples are 0..{num_examples - 1})")
  return Neighbours(path=path, neighbours=near.astype(np.int64),
                    similarity=data["similarity"], image_ids=data["image_ids"],
                    dataset=dataset, split=split)
