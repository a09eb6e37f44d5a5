"""The evaluator against a per-item loop, on synthetic_shapes_benchmark/tiny.

A tiny random CLIP and a character-level tokenizer (no merges) keep it fast.
"""

import csv
import hashlib
import io
import json
import types
import os
import socket
import subprocess
import sys
import textwrap

import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from hardpos_jax import checkpoint
import tiny
from hardpos_jax import evals
from hardpos_jax import evaluate
from hardpos_jax.data import input_pipeline
from hardpos_jax.evals import metrics
from hardpos_jax.data import eval_transform
from hardpos_jax.evals import scoring
from hardpos_jax.models import clip
from hardpos_jax.tokenizer import Tokenizer
from tfds_builders import common

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

BENCHMARK = "synthetic_shapes_benchmark/tiny"
SPLITS = evals.get("synthetic_tiny").splits
B = 8  # encoder batch: 10 images per split -> 2 batches, the last padded


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  tfds.builder(BENCHMARK, data_dir=path).download_and_prepare()
  return path


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  return tiny.byte_vocab(str(tmp_path_factory.mktemp("vocab") / "bytes.txt.gz"))


@pytest.fixture(scope="module")
def tokenizer(vocab):
  return Tokenizer(vocab)


@pytest.fixture(scope="module")
def model(tokenizer):
  return tiny.eval_model(tokenizer.vocab_size)


mesh_of = tiny.mesh_of


def sources(data_dir):
  return {s: input_pipeline.data_source(d, split, data_dir)
          for s, (d, split) in SPLITS.items()}


def per_item_scores(model, tokenizer, data_dir):
  """The paper's loop: each item encodes its image and 3 captions alone."""
  towers = tiny.Towers(model, tokenizer)
  out = {}
  for subset, source in sources(data_dir).items():
    rows = {}
    for record in source:
      zimg = towers.image(record["image"])
      rows[int(record["index"])] = [
          float(zimg @ towers.text(record[k]))
          for k in ("caption", "hard_negative", "hard_positive")]
    out[subset] = rows
  return out


class Spy:
  """Records the images the evaluator decodes and the texts it tokenizes."""

  def __init__(self, monkeypatch, tokenizer):
    self.images, self.texts = [], []
    decode = eval_transform.decode_rgb
    tokenize = tokenizer.tokenize_with_truncation

    def spy_decode(data):
      self.images.append(hashlib.sha256(data).hexdigest())
      return decode(data)

    def spy_tokenize(texts, context_length=None):
      self.texts.append(list(texts))
      return tokenize(texts, context_length)

    monkeypatch.setattr(eval_transform, "decode_rgb", spy_decode)
    monkeypatch.setattr(tokenizer, "tokenize_with_truncation", spy_tokenize)


@pytest.fixture(scope="module")
def run(model, tokenizer, data_dir, tmp_path_factory):
  """One 8-device evaluation with reports, decoding and tokenizing watched."""
  out_dir = str(tmp_path_factory.mktemp("reports"))
  encoders = evals.create_encoders(model[0], mesh_of(8), B)
  with pytest.MonkeyPatch.context() as monkeypatch:
    spy = Spy(monkeypatch, tokenizer)
    summary = evals.get("synthetic_tiny").evaluate(
        encoders, model[1], tokenizer, data_dir=data_dir, out_dir=out_dir)
  return summary, spy, out_dir


def read_csv(out_dir):
  with open(os.path.join(out_dir, "synthetic_tiny_scores.csv")) as f:
    return list(csv.DictReader(f))


def test_matches_the_per_item_loop(run, model, tokenizer, data_dir):
  summary, _, out_dir = run
  reference = per_item_scores(model, tokenizer, data_dir)
  rows = read_csv(out_dir)
  assert len(rows) == sum(len(r) for r in reference.values()) == 60
  for row in rows:
    np.testing.assert_allclose(
        [float(row[k]) for k in ("s_c", "s_n", "s_p")],
        reference[row["subset"]][int(row["index"])], atol=2e-6)
  for subset, by_index in reference.items():
    expected = metrics.hard_positive_metrics(*np.array(list(
        by_index.values()), np.float32).T)
    got = summary["subsets"][subset]
    assert {k: got[k] for k in expected} == expected


def test_each_unique_image_and_text_is_encoded_once(run, data_dir):
  _, spy, _ = run
  unique_images, unique_texts = set(), []
  for source in sources(data_dir).values():
    records = list(source)
    unique_images |= {hashlib.sha256(r["image"]).hexdigest() for r in records}
    # The tiny build draws one image per scene, two items per image.
    assert len({r["image_id"] for r in records}) == len(records) // 2
    unique_texts.append({r[k].decode() for r in records for k in (
        "caption", "hard_negative", "hard_positive")})
  assert sorted(spy.images) == sorted(unique_images)
  assert len(spy.images) == 30
  # One tokenizer call per split, with each of its texts exactly once.
  assert [sorted(t) for t in spy.texts] == [sorted(t) for t in unique_texts]
  # Texts repeat across items (canonical wording), and are encoded once.
  assert sum(map(len, spy.texts)) < 3 * len(spy.images) * 2


def test_summary_counts(run, data_dir):
  summary, _, _ = run
  for subset, source in sources(data_dir).items():
    s = summary["subsets"][subset]
    assert (s["count"], s["images"], s["truncated"]) == (20, 10, 0)
    # No text has more tokens than characters + SOT + EOT; buckets of 8.
    longest = 2 + max(len(r[k]) for r in source for k in (
        "caption", "hard_negative", "hard_positive"))
    assert 8 <= s["text_length"] <= -(-longest // 8) * 8
    assert s["text_length"] % 8 == 0
  assert summary["replace_micro"]["count"] == 40
  assert summary["replace_macro"]["augmented"] == pytest.approx(
      (summary["subsets"]["replace_att"]["augmented"]
       + summary["subsets"]["replace_rel"]["augmented"]) / 2)


def test_reports_are_written_and_parse(run):
  summary, _, out_dir = run
  assert sorted(os.listdir(out_dir)) == [
      "synthetic_tiny.json", "synthetic_tiny.md", "synthetic_tiny.png",
      "synthetic_tiny_scores.csv"]
  with open(os.path.join(out_dir, "synthetic_tiny.json")) as f:
    assert json.load(f) == summary
  with open(os.path.join(out_dir, "synthetic_tiny.md")) as f:
    table = f.read()
  assert table == evals.format_table(summary) + "\n"
  assert len(table.splitlines()) == 2 + 5
  with Image.open(os.path.join(out_dir, "synthetic_tiny.png")) as image:
    assert image.format == "PNG" and image.size[0] > 500
  rows = read_csv(out_dir)
  assert list(rows[0]) == ["subset", "index", "s_c", "s_n", "s_p"]
  assert [r["index"] for r in rows if r["subset"] == "swap"] == [
      str(i) for i in range(20)]
  assert evals.scalars(summary)["synthetic_tiny/replace_macro/augmented"] == (
      summary["replace_macro"]["augmented"])


def test_one_device_gives_the_eight_device_scores(model, tokenizer, data_dir):
  config, params = model
  source = sources(data_dir)["replace_rel"]
  scores = [
      scoring.score_split(evals.create_encoders(config, mesh_of(n), B),
                          params, tokenizer, source,
                          ("caption", "hard_negative", "hard_positive"),
                          "index")
      for n in (1, 8)
  ]
  np.testing.assert_array_equal(scores[0].index, scores[1].index)
  np.testing.assert_allclose(scores[0].scores, scores[1].scores, atol=1e-6)
  assert (metrics.hard_positive_metrics(*scores[0].scores.T)
          == metrics.hard_positive_metrics(*scores[1].scores.T))


def jpeg(colour):
  out = io.BytesIO()
  Image.new("RGB", (4, 4), colour).save(out, format="JPEG")
  return out.getvalue()


class ListSource(list):
  def __getitems__(self, positions):
    return [self[p] for p in positions]


def test_images_are_told_apart_by_bytes_not_id():
  # SWAP-style: one image_id, two crops; and one picture under two ids.
  red, blue = jpeg("red"), jpeg("blue")
  source = ListSource([
      dict(image=red, image_id="1", caption="a", index=3),
      dict(image=blue, image_id="1", caption="b", index=1),
      dict(image=red, image_id="2", caption="a", index=2),
  ])
  items = scoring.read_items(source, ("caption",), "index")
  np.testing.assert_array_equal(items.index, [1, 2, 3])
  np.testing.assert_array_equal(items.image_positions, [0, 1])
  np.testing.assert_array_equal(items.image, [1, 0, 0])
  assert items.texts == ["a", "b"]
  np.testing.assert_array_equal(items.text, [[1], [0], [0]])


def test_repeated_ids_raise():
  source = ListSource([dict(image=b"x", caption="a", index=0)] * 2)
  with pytest.raises(ValueError, match="repeats index"):
    scoring.read_items(source, ("caption",), "index")


def test_text_length_finds_the_last_eot(model):
  config = model[0]
  ids = np.zeros((2, 77), np.int32)
  ids[0, :4] = [512, 5, 513, 0][:4]
  ids[1, :10] = [512, 7, 0, 0, 0, 0, 0, 0, 9, 513]  # id 0 inside the text
  assert clip.text_length(config, ids) == 16
  assert clip.text_length(config, ids[:1]) == 8
  long = np.ones((1, 77), np.int32)
  assert clip.text_length(config, long) == 77
  mean_pooled = clip.model_config(**{**config, "text": {**config["text"],
                                                         "pool": "mean"}})
  assert clip.text_length(mean_pooled, ids) == 77


def test_registry_and_batch_errors(model):
  with pytest.raises(ValueError, match="Unknown eval 'nope'; choose from"):
    evals.get("nope")
  with pytest.raises(ValueError, match="not divisible"):
    evals.create_encoders(model[0], mesh_of(8), 12)


def test_command_on_a_workdir(model, vocab, data_dir, tmp_path, capsys):
  config, params = model
  workdir = tmp_path / "run"
  state = types.SimpleNamespace(step=7, params=params, opt_state={},
                                rng=np.zeros(2, np.uint32))
  with checkpoint.create_manager(str(workdir), save_every=1, keep=None) as m:
    checkpoint.save(m, 7, state, {"model": config}, force=True)
  # A half-written step (orbax's tmp name) is not a checkpoint.
  (workdir / "checkpoints" / "9.orbax-checkpoint-tmp-1").mkdir()
  assert checkpoint.workdir_step(str(workdir)) == 7
  with pytest.raises(FileNotFoundError, match=r"step 9; steps: \[7\]"):
    checkpoint.workdir_step(str(workdir), 9)
  evaluate.run(workdir=str(workdir), tokenizer=vocab, evals=["synthetic_tiny"],
               data_dir=data_dir, batch_size=B)
  out_dir = workdir / "eval" / "7"
  table = (out_dir / "synthetic_tiny.md").read_text()
  assert table.strip() in capsys.readouterr().out
  assert len(read_csv(str(out_dir))) == 60
  with pytest.raises(ValueError, match="exactly one"):
    evaluate.run(evals=["synthetic_tiny"])


def hard_positives_manual_dir(root):
  """3 items per subset; REPLACE shares an image, SWAP crops one twice."""
  for i, name in enumerate(("vl_checklist_attributes.json",
                            "vl_checklist_relations.json")):
    data, swapped = [], []
    for image_id, c, c_n, c_p in [("7", "white dog", "black dog", "ivory dog"),
                                  ("7", "dog in car", "dog on car",
                                   "dog within car"),
                                  ("8", "red cup", "blue cup", "crimson cup")]:
      row = {"image_id": image_id, "image_path": f"data/VG/{image_id}.jpg"}
      data.append({**row, "true_caption": c, "false_caption": c_n})
      swapped.append({**row, "true_caption": c_p, "false_caption": c_n})
      tiny.write_image(root / row["image_path"], int(image_id) + 10 * i)
    tiny.write_json(root / "data" / name, data)
    tiny.write_json(root / "swapped_data" / name, swapped)
  rows = [{"image_path": f"{image}.jpg", "bbox_x": x, "bbox_y": 2,
           "bbox_w": 20, "bbox_h": 30, "true_caption": "a red cat and a dog",
           "false_caption": "a cat and a red dog"}
          for image, x in ((5, 0), (5, 20), (6, 0))]
  tiny.write_json(root / "data/visual_genome_attribution.json", rows)
  tiny.write_json(root / "swapped_data/visual_genome_attribution.json",
                  [{**r, "true_caption": "a dog and a red cat"} for r in rows])
  for image in (5, 6):
    tiny.write_image(root / "images" / f"{image}.jpg", image)


def sugar_crepe_manual_dir(root):
  """2 items per subset on one COCO image, with non-contiguous ids."""
  for subset in evals.get("sugar_crepe").splits:
    tiny.write_json(root / "data" / f"{subset}.json", {
        "0": {"filename": "1.jpg", "caption": "a cat", "negative_caption":
              f"a {subset}"},
        "5": {"filename": "1.jpg", "caption": "a dog", "negative_caption":
              "a cat"}})
  tiny.write_image(root / "val2017" / "1.jpg", 1)


def test_released_benchmarks_prepared_from_manual_dir(model, tokenizer,
                                                      tmp_path):
  config, params = model
  encoders = evals.create_encoders(config, mesh_of(8), B)
  manual = tmp_path / "manual"
  hard_positives_manual_dir(manual)
  sugar_crepe_manual_dir(manual)
  out_dir = str(tmp_path / "out")
  summaries = {name: evals.get(name).evaluate(
      encoders, params, tokenizer, data_dir=str(tmp_path / "tfds"),
      manual_dir=str(manual), out_dir=out_dir)
               for name in ("hard_positives", "sugar_crepe")}
  counts = {name: (s["count"], s["images"], s["texts"]) for name, s in
            summaries["hard_positives"]["subsets"].items()}
  # SWAP's two crops of image 5 share its image_id but are two images.
  assert counts == {"replace_att": (3, 2, 9), "replace_rel": (3, 2, 9),
                    "swap": (3, 3, 3)}
  crepe = summaries["sugar_crepe"]
  assert crepe["micro"]["count"] == 14 and len(crepe["subsets"]) == 7
  assert {(s["images"], s["texts"]) for s in crepe["subsets"].values()} == {
      (1, 3)}
  with open(os.path.join(out_dir, "sugar_crepe_scores.csv")) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["subset", "index", "s_c", "s_n"]
  assert [r["index"] for r in rows] == ["0", "5"] * 7


# One process of a 2-process run with 2 CPU devices each (gloo collectives).
_PROCESS = textwrap.dedent("""
    import os, sys
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, port, data_dir, vocab, out = sys.argv[1:]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2,
                               process_id=int(pid))
    import tiny
    from hardpos_jax import evals
    from hardpos_jax.tokenizer import Tokenizer
    tokenizer = Tokenizer(vocab)
    config, params = tiny.eval_model(tokenizer.vocab_size)
    summary = evals.get("synthetic_tiny").evaluate(
        evals.create_encoders(config, tiny.mesh_of(4), 8), params, tokenizer,
        data_dir=data_dir, out_dir=f"{out}{pid}")
    print("SUMMARY", summary["replace_macro"], summary["subsets"]["swap"])
""")


@pytest.mark.slow
def test_two_processes_give_the_one_process_scores(run, vocab, data_dir,
                                                   tmp_path):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = str(s.getsockname()[1])
  out = str(tmp_path / "out")
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [os.getcwd(), os.path.dirname(os.path.abspath(__file__))])}
  procs = [subprocess.Popen(
      [sys.executable, "-c", _PROCESS, str(i), port, data_dir, vocab, out],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
           for i in range(2)]
  logs = [p.communicate(timeout=240)[0] for p in procs]
  assert [p.returncode for p in procs] == [0, 0], logs
  summary, _, out_dir = run
  expected = f"SUMMARY {summary['replace_macro']} {summary['subsets']['swap']}"
  assert all(expected in log for log in logs), logs
  # Process 0 alone writes the reports; both hold the same scores.
  assert not os.path.exists(f"{out}1")
  ours, theirs = read_csv(out_dir), read_csv(f"{out}0")
  assert [r["index"] for r in ours] == [r["index"] for r in theirs]
  np.testing.assert_allclose(
      [[float(r[k]) for k in ("s_c", "s_n", "s_p")] for r in theirs],
      [[float(r[k]) for k in ("s_c", "s_n", "s_p")] for r in ours], atol=1e-6)


def test_replace_subsets_need_no_swap_files(model, tokenizer, tmp_path):
  config, params = model
  encoders = evals.create_encoders(config, mesh_of(8), B)
  manual = tmp_path / "manual"
  hard_positives_manual_dir(manual)
  for folder in ("data", "swapped_data"):
    (manual / folder / "visual_genome_attribution.json").unlink()
  kwargs = dict(data_dir=str(tmp_path / "tfds"), manual_dir=str(manual))
  summaries = evals.evaluate(
      encoders, params, tokenizer,
      ["hard_positives/replace_att", "hard_positives/replace_rel"],
      out_dir=str(tmp_path / "out"), **kwargs)
  summary = summaries["hard_positives"]
  assert list(summary["subsets"]) == ["replace_att", "replace_rel"]
  assert summary["replace_macro"]["count"] == 6
  table = evals.format_table(summary)
  assert "REPLACE (macro)" in table and "swap" not in table
  one = evals.evaluate(encoders, params, tokenizer,
                       ["hard_positives/replace_att"], **kwargs)
  # One REPLACE subset is reported as itself, with no REPLACE mean.
  assert "replace_macro" not in one["hard_positives"]
  assert one["hard_positives"]["subsets"]["replace_att"] == (
      summary["subsets"]["replace_att"])
  with pytest.raises(common.MissingDataError,
                     match="visual_genome_attribution.json is missing"):
    evals.evaluate(encoders, params, tokenizer, ["hard_positives"], **kwargs)
  with pytest.raises(ValueError, match=r"no subset 'swop'.*'swap'"):
    evals.evaluate(encoders, params, tokenizer, ["hard_positives/swop"])


def test_suite_runs_what_is_present_side_by_side(vocab, tokenizer, tmp_path,
                                                 capsys):
  data_dir = str(tmp_path / "tfds")
  tfds.builder(BENCHMARK, data_dir=data_dir).download_and_prepare()
  manual = tmp_path / "manual"  # One folder per benchmark under one root.
  hard_positives_manual_dir(manual / "hard_positives")
  for folder in ("data", "swapped_data"):
    (manual / "hard_positives" / folder /
     "visual_genome_attribution.json").unlink()
  sugar_crepe_manual_dir(manual / "sugar_crepe")
  paths = []
  for seed in (0, 1):
    config, _ = tiny.eval_model(tokenizer.vocab_size)
    params = clip.init_params(config, jax.random.key(seed))
    paths.append(str(tmp_path / f"model{seed}"))
    checkpoint.save_params(paths[-1], config, params)
  out = tmp_path / "out"
  per_model = evaluate.run(models=paths, evals=["suite"], data_dir=data_dir,
                           manual_dir=str(manual), out=str(out),
                           tokenizer=vocab, batch_size=B)
  printed = capsys.readouterr().out
  assert list(per_model) == ["model0", "model1"]
  for summaries in per_model.values():
    assert list(summaries) == ["hard_positives", "synthetic_tiny",
                               "sugar_crepe"]
    assert list(summaries["hard_positives"]["subsets"]) == [
        "replace_att", "replace_rel"]
  # One note per model names what had no data.
  note, again = [line for line in printed.splitlines()
                 if line.startswith("No data for")]
  assert note == again
  assert "hard_positives/swap" in note and "synthetic (3 subsets)" in note
  assert "aro (4 subsets)" in note and "retrieval_coco" in note
  table = json.loads((out / "suite.json").read_text())
  assert list(table) == ["model0", "model1"]
  for label, summaries in per_model.items():
    row = table[label]
    assert row["sugar_crepe macro"] == summaries["sugar_crepe"]["macro"][
        "accuracy"]
    assert row["hard_positives REPLACE (macro) Aug"] == summaries[
        "hard_positives"]["replace_macro"]["augmented"]
    assert row["synthetic_tiny swap Brittle"] == summaries["synthetic_tiny"][
        "subsets"]["swap"]["brittleness"]
    assert (out / label / "sugar_crepe.md").exists()
  markdown = (out / "suite.md").read_text()
  assert markdown.strip() in printed
  assert [line.split(" |")[0] for line in markdown.splitlines()[2:]] == [
      "| model0", "| model1"]
  assert (out / "suite.png").stat().st_size > 0
  # The models differ, and the same model alone gives the same numbers.
  assert table["model0"] != table["model1"]
  alone = evaluate.run(models=paths[1:], evals=["sugar_crepe"],
                       data_dir=data_dir, out=str(tmp_path / "alone"),
                       tokenizer=vocab, batch_size=B)
  assert alone["model1"]["sugar_crepe"]["macro"] == (
      per_model["model1"]["sugar_crepe"]["macro"])
