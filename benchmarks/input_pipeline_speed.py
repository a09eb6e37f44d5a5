r"""Training input pipeline throughput, in examples per second.

Times `create_train_iterator` (read, choose HNs/HPs, tokenize, decode, random
resized crop, normalise, assemble global arrays) on one host, for
`synthetic_shapes` and for a COCO-format fixture built by
`coco_hard_pos_neg` (COCO-sized 640x480 JPEGs, one HN and two HPs per
caption). Datasets are built in --data_dir first (the COCO fixture once).

  .venv/bin/python benchmarks/input_pipeline_speed.py --data_dir /tmp/bench
"""

import json
import pathlib
import time

from absl import app
from absl import flags
import jax
import ml_collections
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from hardpos_jax.data import input_pipeline
from hardpos_jax.tokenizer import Tokenizer
from tfds_builders.coco_hard_pos_neg import coco_hard_pos_neg

_DATASETS = flags.DEFINE_multi_string(
    "dataset", ["synthetic", "coco"], "Which to time: synthetic, coco.")
_DATA_DIR = flags.DEFINE_string("data_dir", "/tmp/hardpos_bench",
                                "TFDS data dir (and the COCO fixture).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed batches (after 3 warm-up).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 224, "S.")
_COCO_IMAGES = flags.DEFINE_integer("coco_images", 300, "Fixture images.")

_CAPTIONS_PER_IMAGE = 5  # as COCO


def write_coco_fixture(manual_dir: pathlib.Path, num_images: int) -> None:
  """COCO train2017 layout with smooth 640x480 JPEGs and short captions."""
  rng = np.random.default_rng(0)
  (manual_dir / coco_hard_pos_neg.IMAGE_DIR).mkdir(parents=True, exist_ok=True)
  y, x = np.mgrid[0:480, 0:640]
  images, annotations = [], []
  for image_id in range(num_images):
    a, b, c = rng.uniform(0.005, 0.05, 3)
    pixels = np.stack([np.sin(a * x + b * y), np.cos(b * x - c * y),
                       np.sin(c * x * y / 640)], -1)
    pixels = ((pixels + 1) * 127.5).astype(np.uint8)
    name = f"{image_id:012d}.jpg"
    Image.fromarray(pixels).save(
        manual_dir / coco_hard_pos_neg.IMAGE_DIR / name, quality=90)
    images.append({"id": image_id, "file_name": name})
    for k in range(_CAPTIONS_PER_IMAGE):
      annotations.append({"id": len(annotations), "image_id": image_id,
                          "caption": f"a dog and a cat on a sofa number {k}"})
  files = {
      coco_hard_pos_neg.CAPTIONS_FILE: [json.dumps(
          {"images": images, "annotations": annotations})],
      coco_hard_pos_neg.HARD_NEGATIVE_FILE: [
          json.dumps(["a cat and a dog under a sofa"])] * len(annotations),
      coco_hard_pos_neg.HARD_POSITIVE_FILES["swap"]: [
          json.dumps("a cat and a dog on a sofa")] * len(annotations),
      coco_hard_pos_neg.HARD_POSITIVE_FILES["replace"]: [
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
  elif name == "coco":
    dataset = "coco_hard_pos_neg/coco"
    builder = tfds.builder(dataset, data_dir=str(data_dir))
    if not builder.is_prepared():
      manual_dir = data_dir / "coco_manual"
      write_coco_fixture(manual_dir, _COCO_IMAGES.value)
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=str(manual_dir)))
  else:
    raise ValueError(f"Unknown dataset {name!r}; choices: synthetic, coco")
  return dataset


def examples_per_second(dataset: str, data_dir: pathlib.Path) -> float:
  config = ml_collections.ConfigDict(dict(
      dataset=dataset, data_dir=str(data_dir), split="train",
      image_size=_IMAGE_SIZE.value, text_length=77, num_hard_negatives=1,
      num_hard_positives=2, hard_negative_fraction=1.0,
      hard_positive_kinds="both", crop_scale=(0.9, 1.0),
      crop_ratio=(3 / 4, 4 / 3), prefetch=2))
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
  tf.config.set_visible_devices([], "GPU")
  tfds.disable_progress_bar()
  data_dir = pathlib.Path(_DATA_DIR.value)
  for name in _DATASETS.value:
    rate = examples_per_second(prepare(name, data_dir), data_dir)
    print(f"{name}: {rate:.0f} examples/s (batch {_BATCH.value}, "
          f"S={_IMAGE_SIZE.value}, L=77, K=1, P=2, {jax.device_count()} "
          "device(s))")


if __name__ == "__main__":
  app.run(main)
