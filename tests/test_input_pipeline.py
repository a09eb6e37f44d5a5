"""Tests of the preprocessing ops and the input pipeline (synthetic_shapes)."""

import io
import logging
import subprocess
import sys
import textwrap

import jax
import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from hardpos_jax.data import eval_transform
from hardpos_jax.data import global_batches
from hardpos_jax.data import input_pipeline
from hardpos_jax.data import neighbours_file
from hardpos_jax.data import preprocess
from hardpos_jax.data import sampling
from hardpos_jax.tokenizer import Tokenizer
import records
from tfds_builders import common

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

# Global batch; the tiny train split has 16 images of 2 captions: 32 pairs,
# 4 steps an epoch.
B = 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  for name in ("synthetic_shapes/tiny", "synthetic_shapes_benchmark/tiny"):
    tfds.builder(name, data_dir=str(path)).download_and_prepare()
  return str(path)


@pytest.fixture(scope="module")
def tokenizer():
  return Tokenizer()


@pytest.fixture(scope="module")
def mesh():
  return jax.make_mesh((8,), ("data",))


def make_config(data_dir, **overrides):
  config = ml_collections.ConfigDict(dict(
      dataset="synthetic_shapes/tiny", data_dir=data_dir, split="train",
      image_size=16, text_length=24, num_hard_negatives=5,
      num_hard_positives=3, hard_negative_fraction=1.0,
      hard_positive_kinds="both", crop_scale=(0.9, 1.0),
      crop_ratio=(3 / 4, 4 / 3), prefetch=2, epoch_unit="pairs",
      hard_images=False, neighbours=None, antialias=True))
  config.update(overrides)
  return config


def source(data_dir, split="train", dataset="synthetic_shapes/tiny"):
  return input_pipeline.data_source(dataset, split, data_dir)


def host_batches(config, tokenizer, rows, start_step=0, seed=0, steps=1,
                 data=None):
  ds = input_pipeline.host_train_dataset(
      config, data or source(config.data_dir),
      text_encoder=input_pipeline.TextEncoder(tokenizer, config.text_length),
      global_batch_size=B, seed=seed, start_step=start_step, rows=rows)
  return list(ds.take(steps).as_numpy_iterator())


def records_by_caption_id(data_dir):
  return {int(r["caption_id"]): r
          for r in records.caption_rows(source(data_dir))}


def text(value):
  return value.decode() if isinstance(value, bytes) else value


# ------------------------------------------------------- clip_eval_image ---


def normalised(pixels):
  """CLIP normalisation written out in float64."""
  mean = np.array([0.48145466, 0.4578275, 0.40821073])
  std = np.array([0.26862954, 0.26130258, 0.27577711])
  return (pixels / 255.0 - mean) / std


@pytest.mark.parametrize("width, left", [(4, 0), (5, 0), (6, 1), (7, 2),
                                         (9, 2)])
def test_clip_eval_crop_rounds_half_to_even(width, left):
  # Short side already S: no resize. torchvision's int(round((w - S) / 2)):
  # round(0.5) = 0, round(1.5) = 2, round(2.5) = 2.
  image = np.random.default_rng(width).integers(0, 256, (4, width, 3),
                                                np.uint8)
  out = eval_transform.clip_eval_image(image, 4)
  assert out.dtype == np.float32 and out.shape == (4, 4, 3)
  np.testing.assert_allclose(out, normalised(image[:, left:left + 4]),
                             atol=1e-6)


def test_clip_eval_normalisation_by_hand():
  image = np.zeros((3, 3, 3), np.uint8)
  image[0, 0] = (255, 0, 128)
  out = eval_transform.clip_eval_image(image, 3)
  np.testing.assert_allclose(
      out[0, 0], [(1 - 0.48145466) / 0.26862954, -0.4578275 / 0.26130258,
                  (128 / 255 - 0.40821073) / 0.27577711], rtol=1e-6)


@pytest.mark.parametrize("shape, size, resized, corner", [
    ((3, 5), 4, (4, 6), (0, 1)),  # int(4 * 5 / 3) = 6, left round(1.0) = 1
    ((9, 4), 2, (4, 2), (1, 0)),  # int(2 * 9 / 4) = 4, top round(1.0) = 1
    ((10, 30), 4, (4, 12), (0, 4)),  # left round(4.0) = 4
    ((7, 5), 3, (4, 3), (0, 0)),  # int(3 * 7 / 5) = 4, top round(0.5) = 0
])
def test_clip_eval_resize_then_crop(shape, size, resized, corner):
  image = np.random.default_rng(0).integers(0, 256, (*shape, 3), np.uint8)
  h, w = resized
  top, left = corner
  reference = np.asarray(Image.fromarray(image).resize((w, h),
                                                       Image.BICUBIC))
  out = eval_transform.clip_eval_image(image, size)
  np.testing.assert_allclose(
      out, normalised(reference[top:top + size, left:left + size]),
      atol=1e-6)


def test_clip_eval_constant_image_stays_constant():
  image = np.full((37, 53, 3), (10, 200, 90), np.uint8)
  out = eval_transform.clip_eval_image(image, 8)
  np.testing.assert_allclose(out, np.broadcast_to(
      normalised(np.array([10, 200, 90])), (8, 8, 3)), atol=1e-6)


@pytest.mark.parametrize("image", [
    np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8),
    np.zeros((4, 4, 3), np.float32)])
def test_clip_eval_rejects_bad_images(image):
  with pytest.raises(ValueError, match="uint8 \\[H, W, 3\\]"):
    eval_transform.clip_eval_image(image, 4)


# ------------------------------------------------------------ TF train ops ---


def png(pixels):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def train_op(size=12, scale=(0.9, 1.0), ratio=(3 / 4, 4 / 3)):
  return preprocess.compose([
      preprocess.decode(),
      preprocess.random_resized_crop(size, scale, ratio),
      preprocess.normalize(),
  ])


def example(pixels, seed):
  return {"image": tf.constant(png(pixels)),
          "seed": tf.constant([0, seed], tf.int64)}


def test_train_ops_eager_and_in_tf_data():
  pixels = np.random.default_rng(0).integers(0, 256, (24, 30, 3), np.uint8)
  op = train_op()
  eager = [op(example(pixels, s))["image"].numpy() for s in range(4)]
  assert all(x.shape == (12, 12, 3) and x.dtype == np.float32 for x in eager)
  # Same seed, same crop; another seed, another crop.
  np.testing.assert_array_equal(eager[0], op(example(pixels, 0))["image"])
  assert not np.array_equal(eager[0], eager[1])
  ds = tf.data.Dataset.from_tensor_slices({
      "image": [png(pixels)] * 4,
      "seed": [[0, s] for s in range(4)]}).map(op, num_parallel_calls=2)
  graph = [d["image"] for d in ds.as_numpy_iterator()]
  np.testing.assert_allclose(graph, eager, atol=1e-5)


def test_decode_and_normalize():
  pixels = np.random.default_rng(1).integers(0, 256, (5, 7, 3), np.uint8)
  decoded = preprocess.decode()({"image": tf.constant(png(pixels))})
  np.testing.assert_array_equal(decoded["image"], pixels)
  out = preprocess.normalize()({"image": tf.constant(pixels)})["image"]
  np.testing.assert_allclose(out, normalised(pixels), atol=1e-6)


def test_full_crop_is_the_whole_image():
  # Area 1 and the image's own aspect ratio leave one crop: the image.
  pixels = np.random.default_rng(2).integers(0, 256, (12, 18, 3), np.uint8)
  op = preprocess.random_resized_crop(12, (1.0, 1.0), (1.5, 1.5))
  out = op({"image": tf.constant(pixels), "seed": tf.constant([3, 4])})
  expected = tf.image.resize(pixels, [12, 12], "bicubic", antialias=True)
  np.testing.assert_allclose(out["image"], np.clip(expected, 0, 255),
                             atol=1e-3)


def test_crop_windows_follow_torchvision_rules():
  for seed in range(50):
    top, left, h, w = (int(v) for v in preprocess._crop_window(
        tf.constant(40), tf.constant(50), tf.constant([seed, 1]), (0.5, 1.0),
        (3 / 4, 4 / 3)))
    assert 0 <= top <= 40 - h and 0 <= left <= 50 - w
    assert 0.5 * 2000 - 60 <= h * w <= 2000  # rounding of h and w
    assert 3 / 4 - 0.05 <= w / h <= 4 / 3 + 0.05


def test_crop_falls_back_to_the_centre():
  # Too wide for any crop of >= 90 % area within the ratios: torchvision
  # takes the centred crop at the largest ratio, round(10 * 4/3) = 13 wide.
  pixels = np.random.default_rng(3).integers(0, 256, (10, 40, 3), np.uint8)
  op = preprocess.random_resized_crop(8, (0.9, 1.0), (3 / 4, 4 / 3))
  out = op({"image": tf.constant(pixels), "seed": tf.constant([0, 5])})
  expected = tf.image.resize(pixels[:, 13:26], [8, 8], "bicubic",
                             antialias=True)
  np.testing.assert_allclose(out["image"], np.clip(expected, 0, 255))


# ----------------------------------------------------------- train order ---


def test_train_order_is_a_permutation_per_epoch():
  order = sampling.TrainOrder(num_units=10, global_batch_size=3, seed=7)
  assert order.steps_per_epoch == 3
  for epoch in range(2):
    seen = np.concatenate([order.indices(epoch * 3 + k, (0, 3))[1]
                           for k in range(3)])
    assert len(set(seen)) == 9 and set(seen) <= set(range(10))
  assert order.indices(4, (0, 3))[0] == 1
  assert not np.array_equal(order.indices(0, (0, 3))[1],
                            order.indices(3, (0, 3))[1])
  with pytest.raises(ValueError, match="Batch size 11"):
    sampling.TrainOrder(10, 11, 0)


def test_host_shards_are_disjoint_and_complete(data_dir, tokenizer):
  config = make_config(data_dir)
  whole = host_batches(config, tokenizer, (0, B), steps=2)
  parts = [host_batches(config, tokenizer, rows, steps=2)
           for rows in [(0, 3), (3, 4), (4, 8)]]  # uneven hosts too
  for step in range(2):
    ids = [p[step]["caption_id"] for p in parts]
    assert sum(len(i) for i in ids) == B
    assert len(set(np.concatenate(ids))) == B  # disjoint
    for key, value in whole[step].items():  # and the same batch, row by row
      np.testing.assert_array_equal(
          np.concatenate([p[step][key] for p in parts]), value, err_msg=key)


def test_one_epoch_reads_every_pair_once(data_dir, tokenizer):
  batches = host_batches(make_config(data_dir), tokenizer, (0, B), steps=4)
  ids = np.concatenate([b["caption_id"] for b in batches])
  assert sorted(ids) == list(range(32))


def test_image_epochs_read_every_image_once(data_dir, tokenizer):
  config = make_config(data_dir, epoch_unit="images")
  captions = records_by_caption_id(data_dir)
  assert input_pipeline.steps_per_epoch(config, source(data_dir), B) == 2
  seen = []
  for epoch in range(3):
    batches = host_batches(config, tokenizer, (0, B), start_step=2 * epoch,
                           steps=2)
    ids = [int(c) for b in batches for c in b["caption_id"]]
    images = [captions[c]["image_index"] for c in ids]
    assert sorted(images) == list(range(16))  # each image once, any caption
    seen.append(ids)
  assert len({c for ids in seen for c in ids}) > 16  # captions vary


def test_caption_index_needs_the_per_image_schema(data_dir):
  benchmark = source(data_dir, "test_swap", "synthetic_shapes_benchmark/tiny")
  with pytest.raises(ValueError, match="per-image training schema"):
    sampling.CaptionIndex.of(benchmark, "test_swap")
  index = sampling.CaptionIndex.of(source(data_dir), "train")
  assert (index.num_images, index.num_pairs) == (16, 32)
  images, slots = index.image_and_slot(np.array([0, 1, 2, 31]))
  assert images.tolist() == [0, 0, 1, 15] and slots.tolist() == [0, 1, 0, 1]


def test_global_batches(data_dir, tokenizer, mesh):
  config = make_config(data_dir)
  it = input_pipeline.create_train_iterator(
      config, tokenizer=tokenizer, mesh=mesh, global_batch_size=B, seed=0)
  batch = next(it)
  L = config.text_length  # pylint: disable=invalid-name
  expected = {"image": ((B, 16, 16, 3), np.float32), "text": ((B, L), np.int32),
              "hard_negatives": ((B, 5, L), np.int32),
              "hard_negative_mask": ((B, 5), np.bool_),
              "hard_positives": ((B, 3, L), np.int32),
              "hard_positive_mask": ((B, 3), np.bool_),
              "caption_id": ((B,), np.int32), "texts_cut": ((B,), np.int32)}
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == expected
  for value in batch.values():
    assert isinstance(value, jax.Array)
    assert value.sharding.spec == jax.sharding.PartitionSpec("data")
    assert len(value.addressable_shards) == 8
  host = host_batches(config, tokenizer, (0, B))[0]
  for key, value in host.items():
    np.testing.assert_array_equal(np.asarray(batch[key]), value)


def test_batches_cut_texts_to_their_bucket(data_dir, tokenizer, mesh):
  config = make_config(data_dir)
  full = host_batches(config, tokenizer, (0, B))[0]
  ids = np.concatenate([full[k].reshape(-1, config.text_length)
                        for k in global_batches.TEXT_KEYS])
  last_eot = int(np.flatnonzero(ids.any(axis=0)).max())
  assert last_eot + 1 < config.text_length - 3  # there is something to cut
  for bucket in (1, 3):
    it = input_pipeline.create_train_iterator(
        config, tokenizer=tokenizer, mesh=mesh, global_batch_size=B, seed=0,
        text_bucket=bucket)
    batch = jax.tree.map(np.asarray, next(it))
    length = -(-(last_eot + 1) // bucket) * bucket
    for key, value in full.items():
      if key in global_batches.TEXT_KEYS:
        assert not value[..., length:].any()  # only padding was cut
        value = value[..., :length]
      np.testing.assert_array_equal(batch[key], value, err_msg=key)


def test_start_step_resumes_exactly(data_dir, tokenizer, mesh):
  config = make_config(data_dir)

  def batches(start_step, n):
    it = input_pipeline.create_train_iterator(
        config, tokenizer=tokenizer, mesh=mesh, global_batch_size=B, seed=3,
        start_step=start_step)
    return [jax.tree.map(np.asarray, next(it)) for _ in range(n)]

  uninterrupted = batches(0, 6)  # crosses into the second epoch at step 4
  for start in (2, 5):
    resumed = batches(start, 1)[0]
    for key, value in uninterrupted[start].items():
      np.testing.assert_array_equal(resumed[key], value, err_msg=key)
  # Epoch 2 sees the examples in another order, with other choices of HNs.
  assert not np.array_equal(uninterrupted[0]["caption_id"],
                            uninterrupted[4]["caption_id"])


def test_close_stops_the_pipeline(data_dir, tokenizer, mesh):
  with input_pipeline.create_train_iterator(
      make_config(data_dir), tokenizer=tokenizer, mesh=mesh,
      global_batch_size=B, seed=0) as it:
    next(it)
  with pytest.raises(StopIteration):
    next(it)


def test_process_exits_with_a_live_iterator(data_dir):
  # A tf.data generator still running at interpreter shutdown used to hang
  # the process about one time in three.
  script = textwrap.dedent(f"""
      import jax, ml_collections
      from hardpos_jax.data import input_pipeline
      from hardpos_jax.tokenizer import Tokenizer
      config = ml_collections.ConfigDict({dict(make_config(data_dir))!r})
      it = input_pipeline.create_train_iterator(
          config, tokenizer=Tokenizer(), mesh=jax.make_mesh((1,), ("data",)),
          global_batch_size=4, seed=0)
      next(it)
      print("done")
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True,
                          text=True, timeout=120, check=False)
  assert result.returncode == 0 and "done" in result.stdout, result.stderr


# ------------------------------------------- hard negatives and positives ---


def token_rows(tokenizer, texts, length):
  return {tuple(r) for r in tokenizer(list(texts), context_length=length)}


def test_hard_texts_come_from_the_example_and_are_masked(data_dir, tokenizer):
  config = make_config(data_dir)
  records = records_by_caption_id(data_dir)
  batches = host_batches(config, tokenizer, (0, B), steps=4)
  for batch in batches:
    for i, caption_id in enumerate(batch["caption_id"]):
      record = records[int(caption_id)]
      negatives = [text(t) for t in record["hard_negatives"]]
      positives = [text(t) for t in record["hard_positives"]]
      for key, texts, room in [("hard_negatives", negatives, 5),
                               ("hard_positives", positives, 3)]:
        mask = batch[key[:-1] + "_mask"][i]
        rows = batch[key][i]
        # All of them fit (at most 4 HNs, 3 HPs), so all are used, once.
        assert mask.sum() == min(len(texts), room)
        assert list(mask) == sorted(mask, reverse=True)  # real rows first
        assert not rows[~mask].any()  # padding is all zeros
        picked = {tuple(r) for r in rows[mask]}
        assert picked == token_rows(tokenizer, texts, config.text_length)
      caption = tokenizer([text(record["caption"])], context_length=24)[0]
      np.testing.assert_array_equal(batch["text"][i], caption)
  assert any(not b["hard_positive_mask"].all() for b in batches)
  assert all(not b["texts_cut"].any() for b in batches)  # all fit in 24


def test_texts_cut_counts_each_examples_long_texts(data_dir, tokenizer):
  config = make_config(data_dir, text_length=9)
  records = records_by_caption_id(data_dir)
  (batch,) = host_batches(config, tokenizer, (0, B))
  for i, caption_id in enumerate(batch["caption_id"]):
    record = records[int(caption_id)]
    # Which HNs and HPs were picked does not matter: with at most 4 HNs and
    # 3 HPs, all of them are used.
    texts = [record["caption"], *record["hard_negatives"],
             *record["hard_positives"]]
    _, cut = tokenizer.tokenize_with_truncation([text(t) for t in texts],
                                                context_length=9)
    assert batch["texts_cut"][i] == cut.sum()
  assert batch["texts_cut"].any()


def test_choice_of_k_varies_with_the_epoch(data_dir, tokenizer):
  config = make_config(data_dir, num_hard_negatives=1)
  by_epoch = []
  for epoch in range(3):
    batches = host_batches(config, tokenizer, (0, B), start_step=4 * epoch,
                           steps=4)
    by_epoch.append({
        int(c): tuple(b["hard_negatives"][i, 0])
        for b in batches for i, c in enumerate(b["caption_id"])})
  assert all(b["hard_negative_mask"].all() for b in batches)
  assert by_epoch[0] != by_epoch[1] or by_epoch[1] != by_epoch[2]


@pytest.mark.parametrize("fraction, expected", [(0.0, 0), (0.25, 8),
                                                (0.5, 16), (1.0, 32)])
def test_hard_negative_fraction(data_dir, tokenizer, fraction, expected):
  config = make_config(data_dir, hard_negative_fraction=fraction)
  with_hn = set()
  for seed_epoch in range(2):  # the subset is fixed across epochs
    batches = host_batches(config, tokenizer, (0, B),
                           start_step=4 * seed_epoch, steps=4)
    epoch_set = {int(c) for b in batches
                 for c, m in zip(b["caption_id"], b["hard_negative_mask"])
                 if m.any()}
    assert len(epoch_set) == expected
    with_hn |= epoch_set
  assert len(with_hn) == expected


@pytest.mark.parametrize("kinds, allowed", [("swap", {"swap"}),
                                            ("replace", {"replace"}),
                                            ("both", {"swap", "replace"})])
def test_hard_positive_kinds(data_dir, tokenizer, kinds, allowed):
  config = make_config(data_dir, hard_positive_kinds=kinds)
  records = records_by_caption_id(data_dir)
  for batch in host_batches(config, tokenizer, (0, B), steps=4):
    for i, caption_id in enumerate(batch["caption_id"]):
      record = records[int(caption_id)]
      texts = [text(p) for p, k in zip(record["hard_positives"],
                                       record["hard_positive_kinds"])
               if text(k) in allowed]
      mask = batch["hard_positive_mask"][i]
      assert mask.sum() == len(texts)
      assert {tuple(r) for r in batch["hard_positives"][i][mask]} == (
          token_rows(tokenizer, texts, config.text_length))


def test_bad_config_and_mesh(data_dir, tokenizer, mesh):
  with pytest.raises(ValueError, match="'swap', 'replace', 'both'"):
    host_batches(make_config(data_dir, hard_positive_kinds="all"), tokenizer,
                 (0, B))
  with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
    host_batches(make_config(data_dir, hard_negative_fraction=1.5), tokenizer,
                 (0, B))
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    input_pipeline.create_train_iterator(
        make_config(data_dir), tokenizer=tokenizer, mesh=mesh,
        global_batch_size=12, seed=0)
  with pytest.raises(ValueError, match="'data' axis"):
    input_pipeline.create_train_iterator(
        make_config(data_dir), tokenizer=tokenizer,
        mesh=jax.make_mesh((8,), ("batch",)), global_batch_size=B, seed=0)
  with pytest.raises(ValueError, match="no split 'validation'"):
    input_pipeline.data_source("synthetic_shapes/tiny", "validation",
                               data_dir)


def test_text_encoder_flags_and_warns_once(tokenizer, caplog):
  encode = input_pipeline.TextEncoder(tokenizer, 5)
  with caplog.at_level(logging.WARNING):
    _, cut = encode(["a red circle", "a red circle left of a blue square"])
    _, cut2 = encode(["a big ivory disc over a small green hexagon", "a"])
  assert cut.tolist() == [False, True] and cut2.tolist() == [True, False]
  assert sum("are cut" in r.message for r in caplog.records) == 1


# ------------------------------------------------ hard-negative images ---


def write_neighbours(path, data_dir, neighbours):
  data = source(data_dir)
  neighbours_file.save(
      str(path), neighbours=neighbours,
      similarity=np.zeros(neighbours.shape, np.float32),
      image_ids=[text(r["image_id"]) for r in data],
      dataset=data.dataset_info.full_name, split="train")
  return str(path)


def test_hard_images_bring_a_neighbours_caption(data_dir, tokenizer,
                                                tmp_path):
  # Image i's neighbours are i + 1 and i + 2 (mod 16).
  near = (np.arange(16)[:, None] + [1, 2]) % 16
  config = make_config(data_dir, hard_images=True, num_hard_negatives=1,
                       neighbours=write_neighbours(tmp_path / "n.npz",
                                                   data_dir, near))
  captions = records_by_caption_id(data_dir)
  plain = host_batches(make_config(data_dir, num_hard_negatives=1), tokenizer,
                       (0, B), steps=4)
  batches = host_batches(config, tokenizer, (0, 2 * B), steps=4)
  for with_partner, without in zip(batches, plain):
    assert len(with_partner["caption_id"]) == 2 * B
    # Even rows are the drawn pairs, in the order the plain pipeline draws.
    np.testing.assert_array_equal(with_partner["caption_id"][::2],
                                  without["caption_id"])
    for own, partner in zip(with_partner["caption_id"][::2],
                            with_partner["caption_id"][1::2]):
      image = captions[int(own)]["image_index"]
      assert captions[int(partner)]["image_index"] in near[image]
    for i, caption_id in enumerate(with_partner["caption_id"]):
      record = captions[int(caption_id)]
      np.testing.assert_array_equal(
          with_partner["text"][i],
          tokenizer([text(record["caption"])], context_length=24)[0])
      assert {tuple(with_partner["hard_negatives"][i][0])} <= token_rows(
          tokenizer, [text(t) for t in record["hard_negatives"]], 24)
  # A resumed pipeline sees the same partners, crops and texts.
  resumed = host_batches(config, tokenizer, (0, 2 * B), start_step=2)[0]
  for key, value in batches[2].items():
    np.testing.assert_array_equal(resumed[key], value, err_msg=key)
  # Hosts split between pairs, and a host's rows are the same rows.
  halves = [host_batches(config, tokenizer, rows, steps=1)[0]
            for rows in [(0, 8), (8, 16)]]
  np.testing.assert_array_equal(
      np.concatenate([h["caption_id"] for h in halves]),
      batches[0]["caption_id"])
  with pytest.raises(ValueError, match="split a hard-image pair"):
    host_batches(config, tokenizer, (0, 3))


def test_hard_images_from_the_datasets_neg_images(data_dir, tokenizer):
  # synthetic_shapes has no NegCLIP neighbours: the error says what to do.
  config = make_config(data_dir, hard_images=True)
  with pytest.raises(ValueError, match="no hard-negative images"):
    host_batches(config, tokenizer, (0, 2 * B))


@pytest.mark.parametrize("change, needles", [
    (dict(split="pretrain"), ["holds the neighbours of", "/train"]),
    (dict(neighbours=np.zeros((15, 2), np.int32)), ["shape (15, 2)"]),
    (dict(neighbours=np.full((16, 2), 16)), ["row 0", "out of range"]),
    (dict(neighbours=np.zeros((16, 2), np.int32)), ["row 0",
                                                     "the example itself"]),
    (dict(image_ids=["x"] * 16), ["row", "image_id 'x'"]),
])
def test_bad_neighbours_file(data_dir, tokenizer, tmp_path, change, needles):
  data = source(data_dir)
  fields = dict(neighbours=(np.arange(16)[:, None] + [1, 2]) % 16,
                similarity=np.zeros((16, 2), np.float32),
                image_ids=[text(r["image_id"]) for r in data],
                dataset=data.dataset_info.full_name, split="train")
  fields.update(change)
  fields["similarity"] = np.zeros(np.shape(fields["neighbours"]), np.float32)
  path = str(tmp_path / "bad.npz")
  neighbours_file.save(path, **fields)
  config = make_config(data_dir, hard_images=True, neighbours=path)
  with pytest.raises(common.DataError) as error:
    host_batches(config, tokenizer, (0, 2 * B))
  for needle in [path, *needles]:
    assert needle in str(error.value)
