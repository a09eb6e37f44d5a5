"""The trainer: demo recipe end to end, eval schedule, exact resume, NaN, flags,
the best checkpoint.

SIGTERM and other faults are tests/faults/, on real subprocesses.
"""

import json
import os
import subprocess
import sys

from clu import metric_writers
import flax.traverse_util
import jax
import numpy as np
import pytest

from configs import pos_neg
from hardpos_jax import checkpoint
from hardpos_jax import evaluate
from hardpos_jax import train
from hardpos_jax import train_evals
from hardpos_jax.data import input_pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The demo recipe's selection metric, with its tiny evaluation.
SELECT = "synthetic_tiny/replace_macro/augmented"


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
  run = train_evals.run_evals

  def spy(config, encoders, params, tokenizer, out_dir):
    evaluated.append(int(os.path.basename(out_dir)))
    return run(config, encoders, params, tokenizer, out_dir)

  monkeypatch.setattr(train_evals, "run_evals", spy)
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
  # The best step is the one whose report has the best select_metric.
  value = {}
  for step in (2, 4):
    with open(tmp_path / "eval" / str(step) / "synthetic_tiny.json") as f:
      value[step] = json.load(f)["replace_macro"]["augmented"]
  assert value[checkpoint.best_step(str(tmp_path))] == max(value.values())


def _record_scalars(monkeypatch):
  """{step: scalars} the run's metric writer receives."""
  rows = {}
  create = metric_writers.create_default_writer

  def recording(*args, **kwargs):
    writer = create(*args, **kwargs)
    write = writer.write_scalars

    def write_scalars(step, scalars):
      rows.setdefault(step, {}).update(scalars)
      write(step, scalars)

    writer.write_scalars = write_scalars
    return writer

  monkeypatch.setattr(metric_writers, "create_default_writer", recording)
  return rows


def test_best_checkpoint_is_the_best_evaluated_step(data_dir, tmp_path,
                                                    monkeypatch, capsys):
  """Scripted results, 0.3 at step 2 and 0.1 at step 4: the best is step 2,
  for `restore_params` and `evaluate --step=best`. (Restarts: the test
  above, and tests/test_checkpoint.py.)"""

  def scripted(config, encoders, params, tokenizer, out_dir):
    del config, encoders, params, tokenizer
    step = int(os.path.basename(out_dir))
    return {SELECT: {2: 0.3, 4: 0.1}[step], "synthetic_tiny/other": 1.0}

  monkeypatch.setattr(train_evals, "run_evals", scripted)
  rows = _record_scalars(monkeypatch)
  config = tiny_config(data_dir, total_steps=4, eval_every=2,
                       evals="synthetic_tiny")
  assert config.select_metric == SELECT and config.select_mode == "max"
  workdir = str(tmp_path)
  train.train_and_evaluate(config, workdir)
  assert checkpoint.best_step(workdir) == 2
  assert (f"step 4: {SELECT} 0.100 (best 0.300 at step 2)"
          in capsys.readouterr().out)
  assert rows[2][f"select/{SELECT}"] == rows[2]["select/best"] == 0.3
  assert rows[4][f"select/{SELECT}"] == 0.1 and rows[4]["select/best"] == 0.3
  _, best = checkpoint.restore_params(workdir, step="best")
  _, two = checkpoint.restore_params(workdir, step=2)
  jax.tree.map(np.testing.assert_array_equal, best, two)
  summaries = evaluate.run(workdir=workdir, step="best",
                           evals=["synthetic_tiny"], data_dir=data_dir,
                           batch_size=64)
  assert list(summaries) == [f"{tmp_path.name}@2"]
  assert (tmp_path / "eval" / "2" / "synthetic_tiny.json").exists()


@pytest.mark.parametrize("overrides, needle", [
    ({"select_metric": "sugar_crepe/macro/accuracy"},
     "'sugar_crepe' evaluation, which config.evals='synthetic_tiny'"),
    ({"select_mode": "best"}, "config.select_mode='best'"),
])
def test_selection_is_checked_before_training(data_dir, tmp_path, overrides,
                                              needle):
  config = tiny_config(data_dir, evals="synthetic_tiny", **overrides)
  with pytest.raises(ValueError, match=needle):
    train.train_and_evaluate(config, str(tmp_path))
  assert not os.listdir(tmp_path)  # Nothing written.


def test_select_metric_missing_from_results_lists_them(data_dir):
  """Say the selection scored a subset without it."""
  with pytest.raises(ValueError, match=r"results: \['synthetic_tiny/swap/"):
    train_evals.select_best(tiny_config(data_dir), None, 2, {}, {},
                      {"synthetic_tiny/swap/augmented": 0.5}, None)


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
