"""WiSE-FT: the interpolation, the architecture check and the command, on
two tiny random CLIPs and synthetic_shapes_benchmark/tiny."""

import json
import os

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import hardpos_jax
from hardpos_jax import checkpoint
from hardpos_jax import evals
from hardpos_jax import sharding
from hardpos_jax import wise
from hardpos_jax.evals import reports
from hardpos_jax.models import clip
from hardpos_jax.tokenizer import Tokenizer
import tiny

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

B = 8  # encoder batch, one row per fake device


def random_params(config, seed, scale=0.1):
  """N(0, scale²) params of `CLIP(**config)`, without compiling its init."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda: clip.init_params(config, jax.random.key(0)))
  return jax.tree_util.tree_map(
      lambda s: (scale * rng.normal(size=s.shape)).astype(s.dtype), shapes)


def leaves(params):
  return [np.asarray(x) for x in jax.tree_util.tree_leaves(params)]


def test_interpolate_gives_the_endpoints_and_the_mean():
  config = tiny.model_config()
  zero, tuned = random_params(config, 0), random_params(config, 1)
  for got, want in zip(leaves(wise.interpolate(zero, tuned, 0)),
                       leaves(zero)):
    np.testing.assert_array_equal(got, want)
    assert got.dtype == want.dtype
  for got, want in zip(leaves(wise.interpolate(zero, tuned, 1.0)),
                       leaves(tuned)):
    np.testing.assert_array_equal(got, want)
  for got, z, f in zip(leaves(wise.interpolate(zero, tuned, 0.5)),
                       leaves(zero), leaves(tuned)):
    reference = (z.astype(np.float64) + f.astype(np.float64)) / 2
    np.testing.assert_allclose(got, reference, rtol=1e-7, atol=1e-30)
    assert got.dtype == z.dtype and got.shape == z.shape
  with pytest.raises(ValueError, match=r"α must be in \[0, 1\].*1\.5"):
    wise.interpolate(zero, tuned, 1.5)


def test_mismatched_architectures_are_named():
  config = tiny.model_config()
  wider = clip.model_config(**{**config, "image": {**config["image"],
                                                   "width": 48}})
  params, wide_params = random_params(config, 0), random_params(wider, 0)
  with pytest.raises(ValueError,
                     match=r"configs differ: image\.width: 32 .* vs 48"):
    wise.check_compatible((config, params), (wider, wide_params))
  # Rematerialisation changes memory, not the model.
  wise.check_compatible((config, params), ({**config, "remat": True},
                                           params))
  with pytest.raises(ValueError,
                     match=r"params differ: .*\['img'\]\['embedding'\]"
                     r"\['kernel'\]: \(8, 8, 3, 32\) float32 \(zero-shot\) "
                     r"vs \(8, 8, 3, 48\) float32 .*; and 13 more$"):
    wise.interpolate(params, wide_params, 0.5)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder("synthetic_shapes_benchmark/tiny",
               data_dir=path).download_and_prepare()
  return path


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  return tiny.byte_vocab(str(tmp_path_factory.mktemp("vocab") / "b.txt.gz"))


def without_seconds(summaries):
  return {name: {k: v for k, v in s.items() if k != "seconds"}
          for name, s in summaries.items()}


def test_command(vocab, data_dir, tmp_path, capsys):
  config = tiny.model_config()
  # OpenAI's context, so that no synthetic caption is truncated.
  config = clip.model_config(**{**config, "text": {
      **config["text"], "vocab_size": Tokenizer(vocab).vocab_size,
      "context_length": 77}})
  zero = random_params(config, 0)
  # A fine-tuned copy: the zero-shot params moved a little.
  tuned = jax.tree_util.tree_map(lambda p, d: p + d, zero,
                                 random_params(config, 1, scale=0.01))
  paths = {"zero": str(tmp_path / "zero"), "tuned": str(tmp_path / "tuned")}
  checkpoint.save_params(paths["zero"], config, zero)
  checkpoint.save_params(paths["tuned"], config, tuned)
  out = str(tmp_path / "wise")
  per_alpha = wise.run(zero_shot=paths["zero"], fine_tuned=paths["tuned"],
                       alphas=[1, 0.5, 0], evals=["synthetic_tiny"], out=out,
                       data_dir=data_dir, tokenizer=vocab, batch_size=B)
  assert list(per_alpha) == [0.0, 0.5, 1.0]
  for alpha in per_alpha:
    where = os.path.join(out, f"alpha_{alpha:g}")
    model = hardpos_jax.load(os.path.join(where, "model"), vocab)
    assert model.config == config
    for got, want in zip(leaves(model.params),
                         leaves(wise.interpolate(zero, tuned, alpha))):
      np.testing.assert_array_equal(got, want)
    assert {"model", "synthetic_tiny.json", "synthetic_tiny.md",
            "synthetic_tiny.png", "synthetic_tiny_scores.csv"} <= set(
                os.listdir(where))
  encoders = evals.create_encoders(config, sharding.create_mesh(), B)
  for alpha, path in ((0.0, paths["zero"]), (1.0, paths["tuned"])):
    model = hardpos_jax.load(path, vocab)
    direct = evals.evaluate(encoders, model.params, model.tokenizer,
                            ["synthetic_tiny"], data_dir=data_dir)
    assert without_seconds(per_alpha[alpha]) == without_seconds(direct)

  table = reports.combined({f"α={a:g}": s for a, s in per_alpha.items()})
  with open(os.path.join(out, "wise.json")) as f:
    written = json.load(f)
  assert [r["alpha"] for r in written["alphas"]] == [0.0, 0.5, 1.0]
  assert [r["headline"] for r in written["alphas"]] == list(table.values())
  assert written["alphas"][1]["model"] == os.path.join("alpha_0.5", "model")
  # No retrieval or zero-shot eval: x is the first other headline number.
  y, x = list(table["α=0"])[:2]
  assert (written["y"]["columns"], written["x"]["columns"]) == ([y], [x])
  assert written["alphas"][0]["x"] == table["α=0"][x]
  with open(os.path.join(out, "wise.md")) as f:
    md = f.read()
  assert md == reports.format_combined(table) + "\n"
  assert "| α=0.5 |" in md and md.strip() in capsys.readouterr().out
  with Image.open(os.path.join(out, "wise.png")) as image:
    assert image.format == "PNG"

  with pytest.raises(ValueError, match="No headline number 'nope'"):
    wise.choose_axes(per_alpha[0.0], x_metric="nope")
  named = wise.choose_axes(per_alpha[0.0], x_metric=y, y_metric=x)
  assert [a.columns for a in named] == [(y,), (x,)]
  with pytest.raises(FileExistsError, match="alpha_0/model exists"):
    wise.run(zero_shot=paths["zero"], fine_tuned=paths["tuned"], alphas=[0],
             evals=["synthetic_tiny"], out=out)
  with pytest.raises(ValueError, match="distinct"):
    wise.run(zero_shot=paths["zero"], fine_tuned=paths["tuned"],
             alphas=[0.5, 0.50], evals=["synthetic_tiny"], out=out)
