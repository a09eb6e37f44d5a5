r"""Training input pipeline throughput, in examples per second per core.

Times `create_train_iterator` (read, choose HNs/HPs, tokenize, decode, random
resized crop, normalise, assemble global arrays) on one host, for
`synthetic_shapes` and for one COCO-format fixture (COCO-sized 640x480
JPEGs, 5 captions per image, one HN and two HPs per caption) built by each
`coco_hard_pos_neg` image-size config:
  coco_original  the source bytes: what every draw decoded in the old
                 one-example-per-caption layout (1.0.0);
  coco           shorter side 256 (the default);
  coco_384       shorter side 384;
  coco+fast      shorter side 256, resized without antialiasing.
The process is pinned to --cores CPU cores, so "per core" is measured, not
divided. Datasets are built in --data_dir first (once); their sizes on disk
are printed.

  .venv/bin/python benchmarks/input_pipeline_speed.py --data_dir /tmp/bench
"""

import json
import os
import pathlib
import sys
import time

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.photos import photo_like
from hardpos_jax.data import input_pipeline
from hardpos_jax.tokenizer import Tokenizer
from tfds_builders.coco_hard_pos_neg import layout

_DATASETS = flags.DEFINE_multi_string(
    "dataset", ["synthetic", "coco_original", "coco", "coco_384", "coco+fast"],
    "Which to time: synthetic or a coco_hard_pos_neg image-size config; "
    "+fast resizes without antialiasing (input.antialias=False).")
_CORES = flags.DEFINE_integer("cores", 1, "CPU cores to pin the process to.")
_STEP_IMAGES_PER_S = flags.DEFINE_float(
    "step_images_per_s", 2700.0,
    "Images/s the train step consumes, for the cores-needed column: about "
    "one H200 at B/32 (benchmarks/results).")
_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/hardpos_bench",
                                "TFDS data dir (and the COCO fixture).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed batches (after 3 warm-up).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "S.")
_COCO_IMAGES = flags.DEFINE_integer("coco_images", 300, "Fixture images.")

_CAPTIONS_PER_IMAGE = 5  # as COCO


def write_coco_fixture(manual_dir: pathlib.Path, num_images: int) -> None:
  """COCO train2017 layout with photo-like 640x480 JPEGs, 5 captions each."""
  rng = np.random.default_rng(0)
  (manual_dir / layout.IMAGE_DIR).mkdir(parents=True, exist_ok=True)
  images, annotations = [], []
  for image_id in range(num_images):
    name = f"{image_id:012d}.jpg"
    Image.fromarray(photo_like(rng)).save(
        manual_dir / layout.IMAGE_DIR / name, quality=90)
    images.append({"id": image_id, "file_name": name})
    for k in range(_CAPTIONS_PER_IMAGE):
      annotations.append({"id": len(annotations), "image_id": image_id,
                          "caption": f"a dog and a cat on a sofa number {k}"})
  files = {
      layout.CAPTIONS_FILE: [json.dumps(
          {"images": images, "annotations": annotations})],
      layout.HARD_NEGATIVE_FILE: [
          json.dumps(["a cat and a dog under a sofa"])] * len(annotations),
      layout.HARD_POSITIVE_FILES["swap"]: [
          json.dumps("a cat and a dog on a sofa")] * len(annotations),
      layout.HARD_POSITIVE_FILES["replace"]: [
          json.dumps("a hound and a cat on a couch")] * len(annotations),
  }
  for name, lines in files.items():
    (manual_dir / name).parent.mkdir(parents=True, exist_ok=True)
    (manual_dir / name).write_text("\n".join(lines) + "\n")


def prepare(name: str, data_dir: pathlib.Path) -> str:
  """Builds the dataset if needed; returns its TFDS name."""
  if name == "synthetic":
    dataset = "synthetic_shapes"
    tfds.builder(dataset, data_dir=str(data_dir)).download_and_prepare()
    return dataset
  dataset = f"coco_hard_pos_neg/{name}"
  builder = tfds.builder(dataset, data_dir=str(data_dir))
  if not builder.is_prepared():
    manual_dir = data_dir / "coco_manual"
    if not manual_dir.exists():
      write_coco_fixture(manual_dir, _COCO_IMAGES.value)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=str(manual_dir)))
  return dataset


def stored_bytes(dataset: str, data_dir: pathlib.Path) -> int:
  """Bytes of the built dataset's record files."""
  folder = pathlib.Path(tfds.builder(dataset, data_dir=str(data_dir)).data_dir)
  return sum(f.stat().st_size for f in folder.glob("*array_record*"))


def examples_per_second(dataset: str, data_dir: pathlib.Path,
                        antialias: bool) -> float:
  config = ml_collections.ConfigDict(dict(
      dataset=dataset, data_dir=str(data_dir), split="train",
      image_size=_IMAGE_SIZE.value, text_length=77, num_hard_negatives=1,
      num_hard_positives=2, hard_negative_fraction=1.0,
      hard_positive_kinds="both", crop_scale=(0.9, 1.0),
      crop_ratio=(3 / 4, 4 / 3), prefetch=2, epoch_unit="pairs",
      hard_images=False, neighbours=None, antialias=antialias))
  mesh = jax.make_mesh((jax.device_count(),), ("data",))
  batches = input_pipeline.create_train_iterator(
      config, tokenizer=Tokenizer(), mesh=mesh,
      global_batch_size=_BATCH.value, seed=0)
  for _ in range(3):
    jax.block_until_ready(next(batches))
  start = time.perf_counter()
  for _ in range(_STEPS.value):
    jax.block_until_ready(next(batches))
  return _STEPS.value * _BATCH.value / (time.perf_counter() - start)


def main(argv):
  del argv
  os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:_CORES.value]))
  tf.config.set_visible_devices([], "GPU")
  tfds.disable_progress_bar()
  data_dir = pathlib.Path(_DATA_DIR.value)
  cores = len(os.sched_getaffinity(0))
  print(f"batch {_BATCH.value}, S={_IMAGE_SIZE.value}, L=77, K=1, P=2, "
        f"{cores} core(s); cores needed to feed "
        f"{_STEP_IMAGES_PER_S.value:.0f} images/s")
  print("| dataset | stored MB | examples/s | per core | cores needed |")
  print("|---|---|---|---|---|")
  for name in _DATASETS.value:
    dataset = prepare(name.removesuffix("+fast"), data_dir)
    rate = examples_per_second(dataset, data_dir,
                               antialias=not name.endswith("+fast"))
    print(f"| {name} | {stored_bytes(dataset, data_dir) / 1e6:.1f} | "
          f"{rate:.0f} | {rate / cores:.0f} | "
          f"{_STEP_IMAGES_PER_S.value / (rate / cores):.0f} |", flush=True)


if __name__ == "__main__":
  app.run(main)
