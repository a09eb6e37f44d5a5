"""`hardpos_jax.neighbours`: the blockwise search and the command's file."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from hardpos_jax import checkpoint
from hardpos_jax import neighbours
from hardpos_jax import sharding
from hardpos_jax.data import input_pipeline
from hardpos_jax.data import neighbours_file
from hardpos_jax.evals import encoding
from hardpos_jax.tokenizer import Tokenizer
import tiny

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

DATASET, SPLIT = "synthetic_shapes_benchmark/tiny", "test_swap"
B = 8  # 10 images -> 2 blocks on 8 devices, the last padded


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder(DATASET, data_dir=path).download_and_prepare()
  return path


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  return tiny.byte_vocab(str(tmp_path_factory.mktemp("vocab") / "bytes.txt.gz"))


@pytest.fixture(scope="module")
def model_path(vocab, tmp_path_factory):
  """A tiny random CLIP exported as `flax`, and its (config, params)."""
  config, params = tiny.eval_model(Tokenizer(vocab).vocab_size)
  path = str(tmp_path_factory.mktemp("model") / "tiny")
  checkpoint.save_params(path, config, params)
  return path, config, params


@pytest.fixture(scope="module")
def split(data_dir):
  """(source, image ids [N], each image's first example [M], each example's
  image [N]), images numbered in the order the split first shows them.

  The benchmark has several items per image, so M < N.
  """
  source = input_pipeline.data_source(DATASET, SPLIT, data_dir)
  ids = [source[i]["image_id"].decode() for i in range(len(source))]
  first = {}
  for i, image_id in enumerate(ids):
    first.setdefault(image_id, i)
  image_of = np.asarray([list(first).index(i) for i in ids])
  assert len(first) < len(ids)
  return source, ids, np.asarray(list(first.values())), image_of


def encoders_of(config):
  return encoding.create_encoders(config, tiny.mesh_of(8), B)


def test_nearest_is_the_brute_force_top_k():
  z = np.random.default_rng(0).normal(size=(10, 4))
  z = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
  near, sim = neighbours.nearest(encoders_of(tiny.model_config()), z, 3)
  assert near.shape == sim.shape == (10, 3)
  assert sim.dtype == np.float32
  cosine = z.astype(np.float64) @ z.astype(np.float64).T
  np.fill_diagonal(cosine, -np.inf)
  np.testing.assert_allclose(sim, -np.sort(-cosine, axis=1)[:, :3], atol=1e-5)
  assert (near != np.arange(10)[:, None]).all()
  np.testing.assert_allclose(sim, np.take_along_axis(cosine, near, 1),
                             atol=1e-5)
  assert (np.diff(sim, axis=1) <= 0).all()


def test_command_writes_the_neighbours_of_the_split(model_path, vocab,
                                                    data_dir, split, tmp_path,
                                                    capsys):
  path, config, params = model_path
  source, ids, first, image_of = split
  out = str(tmp_path / "out" / "neighbours.npz")
  found = neighbours.run(out=out, dataset=DATASET, model=path, split=SPLIT,
                         data_dir=data_dir, k=2, batch_size=B,
                         tokenizer=vocab)
  assert (f"Wrote {out}: {len(ids)} examples ({len(first)} images) x 2 "
          "neighbours") in capsys.readouterr().out
  loaded = neighbours_file.load(out, dataset=source.dataset_info.full_name,
                                split=SPLIT, num_examples=len(source))
  assert list(loaded.image_ids) == ids
  # The search runs over each image's first example.
  encoders = encoders_of(config)
  z = encoding.encode_images(encoders, sharding.replicate(params,
                                                         encoders.mesh),
                            source, first)
  near, sim = neighbours.nearest(encoders, z, 2)
  np.testing.assert_array_equal(loaded.neighbours, first[near[image_of]])
  np.testing.assert_allclose(loaded.similarity, sim[image_of], atol=1e-6)
  np.testing.assert_array_equal(found.neighbours, loaded.neighbours)
  # Never another item of the example's own image.
  assert (np.asarray(ids)[loaded.neighbours] != np.asarray(ids)[:, None]).all()


def test_k_must_leave_a_neighbour_to_spare(model_path, vocab, data_dir,
                                           split, tmp_path):
  z = np.eye(4, dtype=np.float32)
  encoders = encoders_of(tiny.model_config())
  for k in (0, 4, 5):
    with pytest.raises(ValueError, match=f"k={k} .* 1 <= k < 4"):
      neighbours.nearest(encoders, z, k)
  path, _, _ = model_path
  out = str(tmp_path / "neighbours.npz")
  # Fewer images than examples: k counts images.
  images = len(split[2])
  with pytest.raises(ValueError,
                     match=f"k={images} .* < {images}, the number of distinct"):
    neighbours.run(out=out, dataset=DATASET, model=path, split=SPLIT,
                   data_dir=data_dir, k=images, batch_size=B,
                   tokenizer=vocab)
  with pytest.raises(ValueError, match="exactly one"):
    neighbours.run(out=out, dataset=DATASET)
  with pytest.raises(ValueError, match="no --step"):
    neighbours.run(out=out, dataset=DATASET, model=path, step=1)
