"""The trainer: demo recipe end to end, eval schedule, exact resume, NaN, flags.

SIGTERM and other faults are tests/faults/, on real subprocesses.
"""

import json
import os
import subprocess
import sys

import flax.traverse_util
import numpy as np
import pytest

from configs import pos_neg
from hardpos_jax import checkpoint
from hardpos_jax import train
from hardpos_jax.data import input_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  """synthetic_shapes/tiny, built once for the module."""
  path = str(tmp_path_factory.mktemp("tfds"))
  input_pipeline.data_source("synthetic_shapes/tiny", "train", path)
  return path


def tiny_config(data_dir, **overrides):
  config = pos_neg.get_config("demo,tiny")
  config.input.data_dir = data_dir
  config.total_steps = 6
  config.checkpoint_every = 2
  config.evals = ""
  for key, value in overrides.items():
    node = config
    *path, leaf = key.split(".")
    for name in path:
      node = node[name]
    node[leaf] = value
  return config


def flat_params(state):
  return {k: np.asarray(v) for k, v in
          flax.traverse_util.flatten_dict(state.params, sep="/").items()}


def read_metrics(workdir):
  with open(os.path.join(workdir, train.METRICS_FILE)) as f:
    return [json.loads(line) for line in f]


def test_demo_trains_evaluates_and_loss_goes_down(data_dir, tmp_path):
  config = tiny_config(data_dir, total_steps=16, checkpoint_every=8,
                       evals="synthetic_tiny", **{"optim.lr": 3e-3})
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == 16
  rows = read_metrics(str(tmp_path))
  assert [r["step"] for r in rows] == list(range(1, 17))
  assert all(r["texts_cut"] == 0 for r in rows)
  for key in ("loss", "i2t_loss", "t2i_loss", "lr", "examples_per_sec",
              "steps_per_sec"):
    assert all(np.isfinite(r[key]) for r in rows), key
  losses = [r["loss"] for r in rows]
  assert np.mean(losses[-4:]) < np.mean(losses[:4]), losses
  with open(tmp_path / "eval" / "16" / "synthetic_tiny.json") as f:
    summary = json.load(f)
  assert "swap" in json.dumps(summary)
  assert json.load(open(tmp_path / "config.json"))["input"]["dataset"] == (
      "synthetic_shapes/tiny")


def test_evaluations_run_once_each_and_restarts_fill_gaps(data_dir, tmp_path,
                                                         monkeypatch):
  """eval_every dividing total_steps evaluates the end once; restarting a
  finished run evaluates only the missing reports (after a preemption cut
  one short)."""
  evaluated = []
  run = train.run_evals

  def spy(config, encoders, params, tokenizer, out_dir):
    evaluated.append(int(os.path.basename(out_dir)))
    return run(config, encoders, params, tokenizer, out_dir)

  monkeypatch.setattr(train, "run_evals", spy)
  config = tiny_config(data_dir, total_steps=4, eval_every=2,
                       evals="synthetic_tiny")
  train.train_and_evaluate(config, str(tmp_path))
  assert evaluated == [2, 4]
  train.train_and_evaluate(config, str(tmp_path))
  assert evaluated == [2, 4]
  os.remove(tmp_path / "eval" / "4" / "synthetic_tiny.json")
  train.train_and_evaluate(config, str(tmp_path))
  assert evaluated == [2, 4, 4]
  assert (tmp_path / "eval" / "4" / "synthetic_tiny.json").exists()


class _Interrupt(Exception):
  pass


def test_resume_is_bit_identical(data_dir, tmp_path, monkeypatch):
  config = tiny_config(data_dir)
  reference = flat_params(train.train_and_evaluate(config,
                                                   str(tmp_path / "ref")))

  create = input_pipeline.create_train_iterator
  fingerprints = []

  def interrupted(*args, start_step, **kwargs):
    batches = create(*args, start_step=start_step, **kwargs)

    def gen():
      for i, batch in enumerate(batches):
        if start_step + i == 5:  # dies after step 5; last save at step 4
          raise _Interrupt()
        fingerprints.append(np.asarray(batch["caption_id"]).tolist())
        yield batch
    return gen()

  monkeypatch.setattr(input_pipeline, "create_train_iterator", interrupted)
  workdir = str(tmp_path / "resumed")
  with pytest.raises(_Interrupt):
    train.train_and_evaluate(config, workdir)
  assert checkpoint.create_manager(workdir, save_every=1,
                                   keep=None).latest_step() == 4
  monkeypatch.setattr(input_pipeline, "create_train_iterator", create)
  resumed = flat_params(train.train_and_evaluate(config, workdir))
  assert resumed.keys() == reference.keys()
  for key in reference:
    np.testing.assert_array_equal(resumed[key], reference[key], err_msg=key)
  # Metrics past the restored step were dropped, then logged again once.
  assert [r["step"] for r in read_metrics(workdir)] == list(range(1, 7))


def test_nan_stops_with_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
  create = input_pipeline.create_train_iterator

  def poisoned(*args, start_step, **kwargs):
    for i, batch in enumerate(create(*args, start_step=start_step, **kwargs)):
      if start_step + i == 3:
        batch = {**batch, "image": batch["image"] * np.nan}
      yield batch

  monkeypatch.setattr(input_pipeline, "create_train_iterator", poisoned)
  workdir = str(tmp_path)
  with pytest.raises(FloatingPointError, match="step 4.*checkpoint \\(step 2"):
    train.train_and_evaluate(tiny_config(data_dir), workdir)
  config, params = checkpoint.restore_params(workdir)
  assert all(np.isfinite(v).all() for v in
             flax.traverse_util.flatten_dict(params).values())
  assert config["embed_dim"] == 32


def _train_cli(workdir, data_dir, *extra):
  return [sys.executable, "-m", "hardpos_jax.train",
          "--config=configs/pos_neg.py:demo,tiny", f"--workdir={workdir}",
          f"--config.input.data_dir={data_dir}", "--config.evals=", *extra]


def test_mistyped_config_key_fails_clearly(data_dir, tmp_path):
  result = subprocess.run(
      _train_cli(tmp_path, data_dir, "--config.optim.lrr=0.1"), cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert "lrr" in result.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_negclip_recipe_trains_with_hard_images(tmp_path):
  """configs/negclip.py:demo,tiny on a tiny NegCLIP TSV with neg_image."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  from configs import negclip  # pylint: disable=g-import-not-at-top

  manual_dir = tmp_path / "manual"
  rows, neg_image = [], {}
  for i in range(8):
    path = f"coco/train2014/COCO_train2014_{i:012d}.jpg"
    (manual_dir / path).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), (30 * i, 200 - 20 * i, 90)).save(
        manual_dir / path)
    for j in range(2):  # Rows 2i, 2i + 1; neighbours: the next image's rows.
      row = len(rows)
      neg_image[row] = [(2 * i + 2) % 16, (2 * i + 3) % 16]
      rows.append(f"{row}\tshape {i} caption {j}\t{path}"
                  f"\t['shape {i} not caption {j}']\t{neg_image[row]}\n")
  (manual_dir / "train_neg_clip.tsv").write_text(
      "\ttitle\tfilepath\tneg_caption\tneg_image\n" + "".join(rows))
  data_dir = str(tmp_path / "tfds")
  tfds.builder("coco_hard_pos_neg/negclip", data_dir=data_dir
               ).download_and_prepare(download_config=tfds.download
                                      .DownloadConfig(manual_dir=manual_dir))

  config = negclip.get_config("demo,tiny")
  config.input.data_dir = data_dir
  config.update(total_steps=4, evals="", log_batch_ids=True)
  workdir = str(tmp_path / "work")
  state = train.train_and_evaluate(config, workdir)
  assert int(state.step) == 4
  with open(os.path.join(workdir, train.BATCH_IDS_FILE)) as f:
    steps = [json.loads(line)["caption_ids"] for line in f]
  assert [len(ids) for ids in steps] == [16] * 4  # 8 rows and their partners
  for ids in steps:
    for own, partner in zip(ids[::2], ids[1::2]):
      assert partner in neg_image[own]
  # An epoch is every row once: 16 rows, 2 steps of 8.
  assert sorted(steps[0][::2] + steps[1][::2]) == list(range(16))
  assert all(np.isfinite(m["loss"]) for m in read_metrics(workdir))


@pytest.mark.parametrize("key, value, needle", [
    ("input.image_size", 48, "config.model.image_size=32"),
    ("input.text_length", 25, "config.model.text.context_length=24"),
])
def test_pipeline_and_model_sizes_must_agree(data_dir, tmp_path, key, value,
                                             needle):
  with pytest.raises(ValueError, match=needle):
    train.train_and_evaluate(tiny_config(data_dir, **{key: value}),
                             str(tmp_path))
  assert not os.listdir(tmp_path)  # Nothing written.
