"""Tests of the aro builder, its perturbations and the aro evaluator kind.

Fixtures in ARO's released formats (the VG JSON lists, the Karpathy-split
JSONs of COCO and Flickr30k) with PIL-drawn images, built into tmp dirs; a
tiny random CLIP scores them through the evaluator and a per-item loop.
"""

import csv
import json
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tiny
from hardpos_jax import evals
from hardpos_jax.evals import aro
from hardpos_jax.evals.scoring import as_text
from tfds_builders import common
from tfds_builders.aro import aro as aro_builder  # Registers "aro".
from tfds_builders.aro import perturbations

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

# (x, y, w, h) of the VG rows; the second has fractional coordinates.
BOXES = [(5, 7, 20, 10), (10.4, 0.6, 30.2, 40.7), (0, 0, 80, 60),
         (40, 30, 12, 12), (1, 2, 3, 4), (60, 10, 20, 50)]
RELATIONS = ["on", "behind", "on", "near", "on", "behind"]
COCO = [
    {"image": "val2014/COCO_val2014_000000000001.jpg",
     "caption": ["A large dog sits on a red couch.",
                 "Two people riding horses near a dining table."]},
    {"image": "val2014/COCO_val2014_000000000002.jpg",
     "caption": ["A woman in a white shirt holding a drink",
                 "A man's cat doesn't eat the big cake.", "A bus."]},
]
FLICKR = [{"image": "flickr30k-images/1007129816.jpg",
           "caption": ["A small girl and a brown dog play in the snow .",
                       "Kids play outside"]}]


def write_manual_dir(root):
  """Every config's files: 6 VG-R rows, 4 VG-A rows, 5 + 2 captions."""
  # Smooth gradients, so JPEG re-encoding changes pixels only slightly and
  # an off-by-one crop would show.
  yy, xx = np.mgrid[0:60, 0:80]
  pixels = np.stack([xx * 3, yy * 4, 255 - xx * 3], -1).astype(np.uint8)
  (root / "images").mkdir(parents=True)
  Image.fromarray(pixels).save(root / "images" / "2380003.jpg", quality=98)
  Image.fromarray(pixels[::-1]).save(root / "images" / "7.jpg", quality=98)
  tiny.write_json(root / "visual_genome_relation.json", [
      {"image_path": "2380003.jpg" if i % 2 == 0 else "7.jpg",
       "bbox_x": x, "bbox_y": y, "bbox_w": w, "bbox_h": h,
       "true_caption": f"the cup is {r} the table",
       "false_caption": f"the table is {r} the cup", "relation_name": r}
      for i, ((x, y, w, h), r) in enumerate(zip(BOXES, RELATIONS))])
  tiny.write_json(root / "visual_genome_attribution.json", [
      {"image_path": "2380003.jpg", "bbox_x": x, "bbox_y": y, "bbox_w": w,
       "bbox_h": h, "true_caption": f"the {a} road and the {b} house",
       "false_caption": f"the {b} road and the {a} house",
       "attributes": [a, b]}
      for (x, y, w, h), (a, b) in zip(
          BOXES, [("white", "red"), ("white", "red"), ("white", "red"),
                  ("small", "large")])])
  tiny.write_json(root / "coco_karpathy_test.json", COCO)
  tiny.write_json(root / "flickr30k_test.json", FLICKR)
  for seed, row in enumerate(COCO + FLICKR):
    tiny.write_image(root / row["image"], seed)


def build(config, manual_dir, data_dir, **kwargs):
  return tiny.build(f"aro/{config}", manual_dir, data_dir, **kwargs)


def read(builder):
  source = builder.as_data_source(split="test")
  return sorted((source[i] for i in range(len(source))),
                key=lambda e: e["index"])


@pytest.fixture(scope="module")
def manual_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("manual")
  write_manual_dir(root)
  return root


@pytest.fixture(scope="module")
def data_dir(manual_dir, tmp_path_factory):
  """Every config built once."""
  path = str(tmp_path_factory.mktemp("tfds"))
  for config in aro.SUBSETS:
    build(config, manual_dir, path)
  return path


def builder_of(config, data_dir):
  return tfds.builder("aro", config=config, data_dir=data_dir)


# ----------------------------------------------------------------- builder ---


def test_configs_are_the_evaluator_subsets():
  assert [c.name for c in aro_builder.Aro.BUILDER_CONFIGS] == list(
      aro.SUBSETS)
  assert aro.benchmark_splits()["coco_order"] == ("aro/coco_order", "test")


def test_vg_relation_crops_to_the_bbox_as_aro(data_dir, manual_dir):
  examples = read(builder_of("vg_relation", data_dir))
  assert [e["index"] for e in examples] == list(range(len(BOXES)))
  for example, (x, y, w, h), relation in zip(examples, BOXES, RELATIONS):
    # What ARO's VG_Relation.__getitem__ feeds the model.
    source = manual_dir / "images" / as_text(example["image_path"])
    expected = np.asarray(
        Image.open(source).convert("RGB").crop((x, y, x + w, y + h)))
    assert example["image"].shape == expected.shape
    assert np.abs(example["image"].astype(int) - expected).mean() < 2.0
    assert as_text(example["relation_name"]) == relation
    assert as_text(example["caption"]) == f"the cup is {relation} the table"
    assert as_text(example["hard_negative"]) == (
        f"the table is {relation} the cup")
  # PIL rounds the fractional box (10.4, 0.6, 40.6, 41.3) to (10, 1, 41,
  # 41): 31 x 40 pixels.
  assert examples[1]["image"].shape == (40, 31, 3)


def test_vg_attribution_keeps_the_attribute_pair(data_dir):
  examples = read(builder_of("vg_attribution", data_dir))
  assert [[as_text(a) for a in e["attributes"]] for e in examples] == [
      ["white", "red"]] * 3 + [["small", "large"]]
  assert examples[3]["image"].shape == (12, 12, 3)


@pytest.mark.parametrize("config,rows", [("coco_order", COCO),
                                         ("flickr30k_order", FLICKR)])
def test_order_items_are_aro_test_cases(data_dir, manual_dir, config, rows):
  builder = builder_of(config, data_dir)
  examples = read(builder)
  cases = [(r, row, c) for r, row in enumerate(rows)
           for c in row["caption"]]
  assert len(examples) == len(cases)
  for index, (example, (r, row, caption)) in enumerate(zip(examples, cases)):
    assert (example["index"], example["row"]) == (index, r)
    assert as_text(example["image_path"]) == row["image"]
    texts = [as_text(example[k]) for k in aro.ORDER_TEXT_KEYS]
    assert texts == perturbations.options(caption, 1, index)
    assert texts[0] == perturbations.pre_caption(caption)
  raw = builder.as_data_source(
      split="test", decoders={"image": tfds.decode.SkipDecoding()})
  # RGB JPEGs are stored byte for byte, once per caption.
  by_index = {e["index"]: e["image"] for e in raw}
  for index, (_, row, _) in enumerate(cases):
    assert by_index[index] == (manual_dir / row["image"]).read_bytes()


def _break_vg_relation(root):
  rows = json.loads((root / "visual_genome_relation.json").read_text())
  del rows[3]["relation_name"]
  tiny.write_json(root / "visual_genome_relation.json", rows)


def _break_vg_attribution(root):
  rows = json.loads((root / "visual_genome_attribution.json").read_text())
  rows[1]["bbox_x"] = 70  # 70 + 30.2 > 80: outside the image.
  tiny.write_json(root / "visual_genome_attribution.json", rows)


def _break_coco_row(root):
  tiny.write_json(root / "coco_karpathy_test.json",
                  [COCO[0], {**COCO[1], "caption": "A bus."}])


def _break_flickr_caption(root):
  tiny.write_json(root / "flickr30k_test.json",
                  [{**FLICKR[0], "caption": ["A dog.", "..."]}])


@pytest.mark.parametrize("config,breaks,needles", [
    ("vg_relation", _break_vg_relation,
     ["visual_genome_relation.json, row 3", "relation_name"]),
    ("vg_attribution", _break_vg_attribution,
     ["visual_genome_attribution.json, row 1", "outside"]),
    ("coco_order", _break_coco_row,
     ["coco_karpathy_test.json, row 1", "'caption'"]),
    ("flickr30k_order", _break_flickr_caption,
     ["flickr30k_test.json, row 0, caption 1", "empty"]),
])
def test_a_bad_row_names_file_and_row(tmp_path, config, breaks, needles):
  manual = tmp_path / "manual"
  write_manual_dir(manual)
  breaks(manual)
  with pytest.raises(common.DataError) as info:
    build(config, manual, str(tmp_path / "tfds"))
  for needle in needles:
    assert needle in str(info.value)


def test_skipping_a_bad_row_keeps_the_others_indices(tmp_path):
  manual = tmp_path / "manual"
  write_manual_dir(manual)
  _break_vg_relation(manual)
  builder = build("vg_relation", manual, str(tmp_path / "tfds"),
                  skip_bad_examples=True)
  assert [e["index"] for e in read(builder)] == [0, 1, 2, 4, 5]
  assert builder.info.metadata["skipped"]["test"]["count"] == 1


# ----------------------------------------------------------- perturbations ---


class Reversing:
  """An rng stand-in whose every permutation reverses: hand-workable."""

  def permutation(self, n):
    return np.arange(n)[::-1]


def test_pre_caption_as_aro():
  assert perturbations.pre_caption("A  man's dog!! (cute)\n") == (
      "a man's dog cute")
  assert perturbations.pre_caption("Dogs , cats; birds.") == "dogs , cats birds"
  words = " ".join(f"w{i}" for i in range(32))
  assert perturbations.pre_caption(words).split() == [
      f"w{i}" for i in range(30)]


def test_tokenize_and_tag_by_hand():
  tokens = perturbations.tokenize(
      "A man's cat doesn't eat the big, bigger cake near a dining table.")
  assert tokens == ["A", "man", "'s", "cat", "does", "n't", "eat", "the",
                    "big", ",", "bigger", "cake", "near", "a", "dining",
                    "table", "."]
  n, j, o = perturbations.NOUN, perturbations.ADJECTIVE, perturbations.OTHER
  assert perturbations.tag(tokens) == [o, n, o, n, o, o, o, o, j, o, j, n, o,
                                       o, n, n, o]
  # A verb after a determiner is a noun; an -ing participle is not.
  assert perturbations.tag(["a", "man", "holding", "a", "drink"]) == [
      o, n, o, o, n]


def test_perturbations_by_hand():
  # Tokens: A large dog sits on a red couch . ; nouns dog, couch;
  # adjectives large, red; trigrams [A large dog] [sits on a] [red couch .].
  caption = "A large dog sits on a red couch."
  got = {name: perturbations.pre_caption(fn(caption, Reversing()))
         for name, fn in perturbations.PERTURBATIONS.items()}
  assert got == {
      "shuffle_nouns_and_adj": "a red couch sits on a large dog",
      # The others (A sits on a .) reversed: . a on sits A.
      "shuffle_allbut_nouns_and_adj": "large dog a on sits red couch a",
      "shuffle_within_trigrams": "dog large a a on sits couch red",
      "shuffle_trigrams": "red couch sits on a a large dog",
  }


CAPTIONS = [c for row in COCO + FLICKR for c in row["caption"]] + [
    "Three giraffes and two zebras standing in a grassy field next to trees",
    "A close up of a plate of food with broccoli, rice and a fork on it.",
]


@pytest.mark.parametrize("caption", CAPTIONS)
def test_each_perturbation_permutes_the_caption_words(caption):
  words = sorted(perturbations.pre_caption(
      " ".join(perturbations.tokenize(caption))).split())
  for index in range(20):
    options = perturbations.options(caption, 1, index)
    assert options == perturbations.options(caption, 1, index)
    for option in options[1:]:
      assert sorted(option.split()) == words


def test_perturbations_depend_on_seed_and_index():
  caption = CAPTIONS[-1]
  drawn = {tuple(perturbations.options(caption, seed, index))
           for seed in (1, 2) for index in range(5)}
  assert len(drawn) == 10


# ----------------------------------------------------------------- metrics ---


def test_vg_relation_metrics_by_hand():
  s_c = np.array([.3, .2, .5, .1, .4, .4, .6], np.float32)
  s_n = np.array([.1, .2, .4, .3, .1, .5, .2], np.float32)
  groups = np.array(["on", "on", "on", "behind", "behind", "near", "near"])
  # Right: 1 0 1 0 1 0 1 (item 1 ties, a failure) -> 4/7.
  # on 2/3, behind 1/2; "near" is symmetric, left out: (2/3 + 1/2) / 2.
  result = aro.vg_metrics(s_c, s_n, groups, "vg_relation")
  assert result == {"count": 7, "accuracy": pytest.approx(4 / 7),
                    "ties": pytest.approx(1 / 7),
                    "aro": pytest.approx(7 / 12), "aro_groups": 2}


def test_vg_attribution_metrics_by_hand():
  # 30 items "white_red" with 20 right, 25 "small_large" with 5 right, 24
  # "old_new" all right (fewer than 25: out of the macro).
  groups = np.array(["white_red"] * 30 + ["small_large"] * 25
                    + ["old_new"] * 24)
  right = np.array([True] * 20 + [False] * 10 + [True] * 5 + [False] * 20
                   + [True] * 24)
  s_c = np.where(right, 0.5, 0.1)
  s_n = np.full(len(right), 0.3)
  result = aro.vg_metrics(s_c, s_n, groups, "vg_attribution")
  assert result["accuracy"] == pytest.approx(49 / 79)
  assert result["aro"] == pytest.approx((20 / 30 + 5 / 25) / 2)
  assert result["aro_groups"] == 2
  assert aro.vg_metrics(s_c[:10], s_n[:10], groups[:10],
                        "vg_attribution")["aro"] is None


def test_order_metrics_by_hand():
  scores = np.array([
      [.9, .1, .2, .3, .4],  # right
      [.5, .5, .1, .1, .1],  # ties an option: wrong, but ARO's argmax says 0
      [.2, .1, .6, .1, .1],  # wrong
      [.7, .6, .6, .6, .6],  # right
  ], np.float32)
  assert aro.order_metrics(scores) == {
      "count": 4, "accuracy": 0.5, "ties": 0.25, "aro": 0.75}
  scores[0, 0] = np.nan
  with pytest.raises(ValueError, match="non-finite"):
    aro.order_metrics(scores)


# ------------------------------------------------------------- end to end ---


def per_item_scores(model, tokenizer, data_dir):
  """Each item encodes its image and options alone: {subset: {index: s}}."""
  towers = tiny.Towers(model, tokenizer)
  out = {}
  for subset in aro.SUBSETS:
    keys = aro.ORDER_TEXT_KEYS if subset in aro.ORDER_SUBSETS else (
        aro.VG_TEXT_KEYS)
    rows = {}
    for record in builder_of(subset, data_dir).as_data_source(
        split="test", decoders={"image": tfds.decode.SkipDecoding()}):
      zimg = towers.image(record["image"])
      rows[int(record["index"])] = [float(zimg @ towers.text(record[k]))
                                    for k in keys]
    out[subset] = rows
  return out


def test_evaluator_matches_the_per_item_loop(data_dir, tmp_path,
                                             monkeypatch):
  tokenizer = tiny.byte_tokenizer(tmp_path)
  model = tiny.eval_model(tokenizer.vocab_size)
  evaluator = evals.get("aro")
  out_dir = str(tmp_path / "out")
  summary = evaluator.evaluate(
      evals.create_encoders(model[0], tiny.mesh_of(8), 8), model[1],
      tokenizer, data_dir=data_dir, out_dir=out_dir)

  reference = per_item_scores(model, tokenizer, data_dir)
  with open(os.path.join(out_dir, "aro_scores.csv"), newline="") as f:
    rows = list(csv.reader(f))
  assert rows[0] == ["subset", "index", *aro.SCORE_COLUMNS]
  assert len(rows) - 1 == sum(map(len, reference.values())) == 6 + 4 + 5 + 2
  for subset, index, *scores in rows[1:]:
    np.testing.assert_allclose([float(s) for s in scores],
                               reference[subset][int(index)], atol=2e-6)

  groups = {
      "vg_relation": RELATIONS,
      "vg_attribution": ["white_red"] * 3 + ["small_large"],
  }
  for subset, by_index in reference.items():
    scores = np.array([by_index[i] for i in sorted(by_index)], np.float32)
    expected = (aro.order_metrics(scores) if subset in aro.ORDER_SUBSETS
                else aro.vg_metrics(*scores.T, np.array(groups[subset]),
                                    subset))
    got = summary["subsets"][subset]
    assert {k: got[k] for k in expected} == pytest.approx(expected)
  counts = {n: (s["count"], s["images"]) for n, s in
            summary["subsets"].items()}
  # Six crops of two images are six images; captions share their image.
  assert counts == {"vg_relation": (6, 6), "vg_attribution": (4, 4),
                    "coco_order": (5, 2), "flickr30k_order": (2, 1)}
  # No VG-A pair has 25 items: no macro, and no headline for it.
  assert summary["subsets"]["vg_attribution"]["aro"] is None
  assert list(aro.headline(summary)) == [
      "VG-Relation (macro)", "COCO-Order", "Flickr30k-Order"]
  table = aro.format_table(summary)
  assert len(table.splitlines()) == 2 + 4 and "n/a" in table
  with Image.open(os.path.join(out_dir, "aro.png")) as image:
    assert image.format == "PNG"
