"""Tests of the vl_checklist builder and evaluator.

The builder runs on a tiny manual_dir in VL-CheckList's released format
(`[image_path, {"POS": [...], "NEG": [...]}]` rows, PIL-drawn JPEGs) for the
`relation` config: two types, three sources, seven rows. The metrics are
checked against hand counts on fixed scores, and one evaluation with a tiny
random model against a loop that encodes each item's image and captions
alone.
"""

import csv
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from hardpos_jax import evals
from hardpos_jax.data import input_pipeline
from hardpos_jax.evals import scoring
from hardpos_jax.evals import vl_checklist
import tiny
from tfds_builders import common
# Importing the module registers the builder.
from tfds_builders.vl_checklist import vl_checklist as builder_lib

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

# The relation config's files: {path: rows}, image paths relative to the
# file's image root. SWiG rows list three captions of each kind.
RELATION = {
    "data/Relation/vg/action.json": [
        ["VG_100K/1.jpg", {"POS": ["man riding horse"],
                           "NEG": ["man feeding horse"]}],
        ["VG_100K_2/2.jpg", {"POS": ["dog on bed"], "NEG": ["dog under bed"]}],
    ],
    "data/Relation/swig_action.json": [
        ["dialing_8.jpg", {"POS": ["a man dials a phone", "a person dials",
                                   "someone dials"],
                           "NEG": ["a bird dials a phone", "a cat dials",
                                   "a cup dials"]}],
    ],
    "data/Relation/hake_action.json": [
        ["openimages/0030.jpg", {"POS": ["person hold cup"],
                                 "NEG": ["person hold bear"]}],
    ],
    "data/Relation/vg/spatial.json": [
        ["VG_100K/1.jpg", {"POS": ["cup on table"],
                           "NEG": ["cup under table"]}],
        # Released rows can have POS[0] == NEG[0]: a tie, which fails.
        ["VG_100K/1.jpg", {"POS": ["cup on table"], "NEG": ["cup on table"]}],
        ["VG_100K/1.jpg", {"POS": ["cup on table"],
                           "NEG": ["cup under table"]}],
    ],
}
IMAGES = ("vg/VG_100K/1.jpg", "vg/VG_100K_2/2.jpg", "swig/dialing_8.jpg",
          "hake/openimages/0030.jpg")
RELATION_SUBSETS = [s for s in vl_checklist.SUBSETS
                    if s.startswith("relation/")]


def write_manual_dir(root, files=None):
  for path, rows in (files or RELATION).items():
    tiny.write_json(root / path, rows)
  for seed, path in enumerate(IMAGES):
    tiny.write_image(root / path, seed)
  return root


def build(manual_dir, data_dir, **kwargs):
  return tiny.build("vl_checklist/relation", manual_dir, data_dir, **kwargs)


def examples(builder, split):
  """The split's examples by row, images as the stored bytes."""
  source = builder.as_data_source(
      split, decoders={"image": tfds.decode.SkipDecoding()})
  return sorted((source[i] for i in range(len(source))),
                key=lambda e: e["index"])


text = scoring.as_text  # TFDS gives texts as bytes.


# ----------------------------------------------------------------- builder ---


def test_corpus_files_follow_the_release():
  assert builder_lib.VlChecklist.name == "vl_checklist"
  counts = {c: sum(f.category == c for f in builder_lib.FILES)
            for c in builder_lib.CATEGORIES}
  # Object: 6 types x 7 corpora; attribute: 5 x (vg, vaw); relation: 4.
  assert counts == {"object": 42, "attribute": 10, "relation": 4}
  assert len(vl_checklist.SUBSETS) == 56
  by_split = {(f.category, f.split): f for f in builder_lib.FILES}
  # corpus/v1/Object/Size/large/swig_tool.yaml and .../Location/center/
  # hake.yaml, vg_obj.yaml; corpus/v1/Attribute/color/vaw.yaml.
  assert by_split["object", "size_large_swig_tool"].path == (
      "data/Object/Size/swig_size/swig_tool/swig_tool_large.json")
  assert by_split["object", "location_center_hake"].path == (
      "data/Object/Location/hake_location/hake_obj_center.json")
  assert by_split["object", "location_center_vg_obj"].path == (
      "data/Object/Location/vg_location/vg_obj_center.json")
  vaw = by_split["attribute", "color_vaw"]
  assert (vaw.path, vaw.image_root, vaw.source) == (
      "data/Attribute/vaw/color.json", "vg", "vaw")
  assert {f.source for f in builder_lib.FILES
          if f.type == "Object/Size/small"} == {"vg", "swig", "hake"}
  assert {f.path for f in builder_lib.FILES
          if f.category == "relation"} == set(RELATION)


def test_relation_is_built_one_example_per_row(tmp_path):
  builder = build(write_manual_dir(tmp_path / "manual"), tmp_path / "tfds")
  assert set(builder.info.splits) == {"action_vg", "action_swig",
                                      "action_hake", "spatial_vg"}
  for f in builder_lib.FILES:
    if f.category != "relation":
      continue
    got = examples(builder, f.split)
    assert [e["index"] for e in got] == list(range(len(RELATION[f.path])))
    for example, (path, texts) in zip(got, RELATION[f.path]):
      assert text(example["caption"]) == texts["POS"][0]
      assert text(example["hard_negative"]) == texts["NEG"][0]
      assert text(example["image_path"]) == path
      assert (text(example["type"]), text(example["source"]),
              text(example["corpus"])) == (f.type, f.source, f.corpus)
      # An RGB JPEG is stored byte for byte.
      image = tmp_path / "manual" / f.image_root / path
      assert example["image"] == image.read_bytes()


@pytest.mark.parametrize("row, needles", [
    (["VG_100K/1.jpg"], ["expected [image_path"]),
    (["VG_100K/1.jpg", ["dog"]], ["the captions is not a JSON object"]),
    (["VG_100K/1.jpg", {"POS": [], "NEG": ["x"]}], ["'POS' is an empty list"]),
    (["VG_100K/1.jpg", {"POS": ["x"]}], ["missing key 'NEG'"]),
    (["VG_100K/1.jpg", {"POS": [" "], "NEG": ["x"]}], ["POS[0] is empty"]),
    (["VG_100K/9.jpg", {"POS": ["x"], "NEG": ["y"]}],
     ["VG_100K/9.jpg does not exist"]),
    (["../swig/dialing_8.jpg", {"POS": ["x"], "NEG": ["y"]}],
     ["must be relative"]),
])
def test_bad_row_names_file_and_row(tmp_path, row, needles):
  path = "data/Relation/vg/action.json"
  files = {**RELATION, path: [RELATION[path][0], row]}
  manual_dir = write_manual_dir(tmp_path / "manual", files)
  with pytest.raises(common.DataError) as info:
    build(manual_dir, tmp_path / "tfds")
  for needle in [f"{manual_dir / path}, row 1:", *needles]:
    assert needle in str(info.value)
  assert not tfds.builder("vl_checklist/relation",
                          data_dir=tmp_path / "tfds").is_prepared()


def test_missing_files_and_image_roots_are_listed(tmp_path):
  manual_dir = write_manual_dir(tmp_path / "manual")
  (manual_dir / "data/Relation/swig_action.json").unlink()
  for image in (manual_dir / "hake" / "openimages").iterdir():
    image.unlink()
  (manual_dir / "hake" / "openimages").rmdir()
  (manual_dir / "hake").rmdir()
  with pytest.raises(common.MissingDataError) as info:
    build(manual_dir, tmp_path / "tfds")
  assert "swig_action.json" in str(info.value)
  assert f"{manual_dir / 'hake'}" in str(info.value)


def test_skip_bad_examples_drops_rows_with_missing_images(tmp_path):
  # As VL-CheckList's loader, which skips rows whose image does not exist.
  manual_dir = write_manual_dir(tmp_path / "manual")
  (manual_dir / "vg/VG_100K_2/2.jpg").unlink()
  builder = build(manual_dir, tmp_path / "tfds", skip_bad_examples=True)
  assert [e["index"] for e in examples(builder, "action_vg")] == [0]
  skipped = builder.info.metadata["skipped"]["action_vg"]
  assert skipped["count"] == 1 and "row 1" in skipped["reasons"][0]


# ----------------------------------------------------------------- metrics ---


def split_scores(pairs, index=None):
  scores = np.asarray(pairs, np.float32).reshape(-1, 2)
  index = np.arange(len(scores)) if index is None else np.asarray(index)
  return scoring.SplitScores(index=index, scores=scores, num_images=1,
                             num_texts=2, text_length=8, num_truncated=0)


def test_accuracy_is_macro_over_files_sources_types_categories():
  right, wrong, tie = (0.5, 0.4), (0.3, 0.6), (0.3, 0.3)
  scores = {
      "object/location_center_swig_agent": split_scores([right, tie, wrong]),
      "object/location_center_swig_tool": split_scores([right]),
      "object/location_center_vg_obj": split_scores([wrong, right]),
      "object/size_large_hake": split_scores([right, right, tie, wrong]),
      "attribute/color_vg": split_scores([right, wrong, right]),
      "attribute/color_vaw": split_scores([right, right]),
  }
  summary = vl_checklist.summarize(scores)
  accuracy = lambda level: {k: v["accuracy"] for k, v in summary[level].items()}
  assert list(accuracy("files").values()) == pytest.approx(
      [1 / 3, 1, 1 / 2, 1 / 2, 2 / 3, 1])
  # swig: mean of its files (1/3, 1); vg: 1/2.
  assert accuracy("sources") == pytest.approx({
      "object/location/center/swig": 2 / 3,
      "object/location/center/vg": 1 / 2, "object/size/large/hake": 1 / 2,
      "attribute/color/vg": 2 / 3, "attribute/color/vaw": 1})
  assert accuracy("types") == pytest.approx({
      "object/location/center": 7 / 12, "object/size/large": 1 / 2,
      "attribute/color": 5 / 6})
  assert accuracy("categories") == pytest.approx(
      {"object": 13 / 24, "attribute": 5 / 6})
  assert summary["overall"]["accuracy"] == pytest.approx(11 / 16)
  assert summary["overall"]["count"] == 15
  # Pooled, 9 of the 15 items are right.
  assert summary["micro"] == pytest.approx({"count": 15, "accuracy": 0.6})
  assert vl_checklist.headline(summary) == pytest.approx(
      {"object": 13 / 24, "attribute": 5 / 6, "overall": 11 / 16})
  table = vl_checklist.format_table(summary)
  assert "| object/location/center | 6 | 58.3 | 58.3 |" in table
  assert "| overall | 15 | 68.8 | 68.8 |" in table


def test_first_1000_rows_per_file():
  # 1000 wrong rows, then 2 right ones; row numbers with a gap (a skipped
  # row) still count by position.
  pairs = [(0.1, 0.2)] * 1000 + [(0.2, 0.1)] * 2
  index = np.r_[0:500, 501:1003]
  summary = vl_checklist.summarize(
      {"relation/spatial_vg": split_scores(pairs, index)})
  assert summary["overall"] == pytest.approx(
      {"count": 1002, "accuracy": 2 / 1002})
  assert summary["first_1000"]["overall"] == {"count": 1000, "accuracy": 0.0}
  assert summary["first_1000"]["types"]["relation/spatial"]["count"] == 1000


# -------------------------------------------------------------- end to end ---


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return tiny.byte_tokenizer(tmp_path_factory.mktemp("vocab"))


@pytest.fixture(scope="module")
def model(tokenizer):
  return tiny.eval_model(tokenizer.vocab_size)


def per_item_scores(model, tokenizer, sources):
  """{subset: {index: (s_c, s_n)}}, encoding each item's image and captions
  alone, as VL-CheckList's OpenCLIP engine does."""
  towers = tiny.Towers(model, tokenizer)
  out = {}
  for subset, source in sources.items():
    out[subset] = {}
    for record in source:
      zimg = towers.image(record["image"])
      out[subset][int(record["index"])] = [
          float(zimg @ towers.text(record[k]))
          for k in ("caption", "hard_negative")]
  return out


def test_evaluation_matches_the_per_item_loop(model, tokenizer, tmp_path,
                                              monkeypatch):
  write_manual_dir(tmp_path / "manual" / "vl_checklist")
  data_dir, out_dir = str(tmp_path / "tfds"), str(tmp_path / "out")
  config, params = model
  # manual_dir/vl_checklist/ is found under the shared manual_dir.
  summary = evals.evaluate(
      evals.create_encoders(config, tiny.mesh_of(2), 8), params, tokenizer,
      [f"vl_checklist/{s}" for s in RELATION_SUBSETS], data_dir=data_dir,
      manual_dir=str(tmp_path / "manual"), out_dir=out_dir)["vl_checklist"]

  with open(os.path.join(out_dir, "vl_checklist_scores.csv")) as f:
    rows = list(csv.DictReader(f))
  assert list(rows[0]) == ["subset", "index", "s_c", "s_n"]
  splits = vl_checklist.benchmark_splits()
  loops = per_item_scores(model, tokenizer, {
      s: input_pipeline.data_source(*splits[s], data_dir)
      for s in RELATION_SUBSETS})
  for subset, loop in loops.items():
    got = {int(r["index"]): [float(r["s_c"]), float(r["s_n"])]
           for r in rows if r["subset"] == subset}
    assert sorted(got) == sorted(loop)
    for index, scores in loop.items():
      np.testing.assert_allclose(got[index], scores, atol=1e-5)
    # Strict: the POS == NEG row ties exactly (one text) and fails.
    right = [s_c > s_n for s_c, s_n in got.values()]
    assert summary["files"][subset]["accuracy"] == pytest.approx(
        np.mean(right))
  spatial = {int(r["index"]): r for r in rows
             if r["subset"] == "relation/spatial_vg"}
  assert spatial[1]["s_c"] == spatial[1]["s_n"]
  # spatial_vg: three rows on one image with two distinct texts.
  assert (summary["files"]["relation/spatial_vg"]["images"],
          summary["files"]["relation/spatial_vg"]["texts"]) == (1, 2)
  # Relation = mean of action (mean of vg, swig, hake) and spatial.
  action = np.mean([summary["files"][f"relation/action_{source}"]["accuracy"]
                    for source in ("vg", "swig", "hake")])
  spatial_accuracy = summary["files"]["relation/spatial_vg"]["accuracy"]
  assert summary["categories"]["relation"]["accuracy"] == pytest.approx(
      (action + spatial_accuracy) / 2)
  assert summary["micro"]["count"] == 7
  for name in ("vl_checklist.json", "vl_checklist.md", "vl_checklist.png"):
    assert os.path.getsize(os.path.join(out_dir, name)) > 0
