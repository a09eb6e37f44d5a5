"""The winoground builder and evaluator on a hand-made release.

Four items in the released format (data/examples.jsonl, PNG images drawn by
PIL) are built with TFDS and scored by a tiny random CLIP, against a loop
that encodes each item's images and captions alone.
"""

import json

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tiny
from hardpos_jax.data import input_pipeline
from hardpos_jax.evals import encoding
from hardpos_jax.evals import winoground
from tfds_builders import common
import tfds_builders.winoground.winoground  # Registers the builder.

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

B = 8  # Encoder batch: 7 unique images -> one padded batch per tower.

# Item 3 shows ex_0_img_0 again and repeats item 0's caption_1, so 7 images
# and 7 captions are unique; one image is RGBA, as some released PNGs are.
ROWS = [
    {"id": 0, "caption_0": "an old person kisses a young person",
     "caption_1": "a young person kisses an old person",
     "image_0": "ex_0_img_0", "image_1": "ex_0_img_1", "tag": "Noun",
     "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"},
    {"id": 1, "caption_0": "the dog is on the cat",
     "caption_1": "the cat is on the dog",
     "image_0": "ex_1_img_0", "image_1": "ex_1_img_1",
     "tag": "Relation", "secondary_tag": "Symbolic", "num_main_preds": 1,
     "collapsed_tag": "Relation"},
    {"id": 2, "caption_0": "red cup, blue plate",
     "caption_1": "blue cup, red plate",
     "image_0": "ex_2_img_0", "image_1": "ex_2_img_1",
     "tag": "Adjective-Color", "secondary_tag": "", "num_main_preds": 2,
     "collapsed_tag": "Both"},
    {"id": 3, "caption_0": "a person holds a tree",
     "caption_1": "a young person kisses an old person",
     "image_0": "ex_0_img_0", "image_1": "ex_3_img_1", "tag": "Noun",
     "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object"},
]


def write_release(root, rows=ROWS):
  """data/examples.jsonl and data/images/<name>.png, as released."""
  images = root / "data" / "images"
  images.mkdir(parents=True, exist_ok=True)
  (root / "data" / "examples.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  names = sorted({r[k] for r in rows for k in ("image_0", "image_1")})
  for seed, name in enumerate(names):
    tiny.write_image(images / f"{name}.png", seed,
                     "RGBA" if name == "ex_1_img_1" else "RGB", "PNG")
  return root


def build(manual_dir, data_dir, **kwargs):
  return tiny.build("winoground", manual_dir, data_dir, **kwargs)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp("winoground")
  manual_dir = write_release(root / "manual")
  build(manual_dir, root / "tfds")
  return manual_dir, str(root / "tfds")


@pytest.fixture(scope="module")
def source(built):
  return input_pipeline.data_source("winoground", "test", built[1])


def test_builds_the_released_format(built, source):
  manual_dir, _ = built
  examples = {int(e["id"]): e for e in source}
  assert sorted(examples) == [0, 1, 2, 3]
  for row in ROWS:
    example = examples[row["id"]]
    for key in ("caption_0", "caption_1", "tag", "secondary_tag",
                "collapsed_tag"):
      assert example[key].decode() == row[key]
    assert example["num_main_preds"] == row["num_main_preds"]
    for key in ("image_0", "image_1"):
      assert example[f"{key}_name"].decode() == row[key]
      # Stored byte for byte (PNG, RGBA included) and left encoded.
      assert example[key] == (
          manual_dir / "data" / "images" / f"{row[key]}.png").read_bytes()


@pytest.mark.parametrize("breakage, needles", [
    (lambda rows: rows[1].pop("caption_1"), ["line 2", "'caption_1'"]),
    (lambda rows: rows[2].update(image_1="missing"),
     ["line 3", "missing.png does not exist"]),
    (lambda rows: rows[3].update(id=0), ["line 4", "id 0 is given twice"]),
    (lambda rows: rows[0].update(num_main_preds="1"),
     ["line 1", "'num_main_preds' is '1', not of type int"]),
], ids=["no_caption", "no_image", "repeated_id", "bad_type"])
def test_bad_rows_name_file_and_line(tmp_path, breakage, needles):
  rows = [dict(r) for r in ROWS]
  manual_dir = write_release(tmp_path / "manual")
  breakage(rows)
  (manual_dir / "data" / "examples.jsonl").write_text(
      "".join(json.dumps(r) + "\n" for r in rows))
  with pytest.raises(common.DataError) as info:
    build(manual_dir, tmp_path / "tfds")
  for needle in ("examples.jsonl", *needles):
    assert needle in str(info.value)


def test_malformed_line_and_skipping(tmp_path):
  manual_dir = write_release(tmp_path / "manual")
  path = manual_dir / "data" / "examples.jsonl"
  lines = path.read_text().splitlines()
  path.write_text("\n".join(lines[:1] + ['{"id": 1,'] + lines[2:]) + "\n")
  with pytest.raises(common.DataError, match=r"examples.jsonl, line 2: "
                     "malformed JSON"):
    build(manual_dir, tmp_path / "tfds")
  # A bad item is skipped on request; the others are kept.
  (manual_dir / "data" / "images" / "ex_2_img_1.png").write_bytes(b"")
  path.write_text("\n".join(lines) + "\n")
  builder = build(manual_dir, tmp_path / "tfds", skip_bad_examples=True)
  assert builder.info.splits["test"].num_examples == 3
  skipped = builder.info.metadata["skipped"]["test"]
  assert skipped["count"] == 1 and "line 3" in skipped["reasons"][0]


def test_metrics_against_a_hand_count():
  # Columns s_c0_i0, s_c1_i0, s_c0_i1, s_c1_i1.
  scores = np.array([
      [0.9, 0.1, 0.2, 0.8],  # text: .9>.1, .8>.2 yes; image: .9>.2, .8>.1
      #                        yes; group yes
      [0.5, 0.6, 0.1, 0.9],  # text: .5>.6 no; image: .5>.1, .9>.6 yes
      [0.5, 0.1, 0.6, 0.9],  # text: .5>.1, .9>.6 yes; image: .5>.6 no
      [0.3, 0.3, 0.1, 0.9],  # text: tie .3=.3 fails; image: .3>.1, .9>.3 yes
      [0.2, 0.1, 0.3, 0.3],  # text: .2>.1 yes, .3>.3 tie fails; image: .2>.3
      #                        no
  ], np.float32)
  flags = winoground.winoground_flags(scores)
  # Hand count: text rows 0, 2; image rows 0, 1, 3; group row 0.
  np.testing.assert_array_equal(flags["text"], [1, 0, 1, 0, 0])
  np.testing.assert_array_equal(flags["image"], [1, 1, 0, 1, 0])
  np.testing.assert_array_equal(flags["group"], [1, 0, 0, 0, 0])
  assert winoground.winoground_metrics(scores) == {
      "count": 5, "text": 2 / 5, "image": 3 / 5, "group": 1 / 5}
  with pytest.raises(ValueError, match="not finite"):
    winoground.winoground_flags(np.where(scores == 0.5, np.nan, scores))
  with pytest.raises(ValueError, match=r"\[N > 0, 4\]"):
    winoground.winoground_flags(scores[:, :3])


def test_summary_per_tag_against_a_hand_count():
  scores = np.array([[0.9, 0.1, 0.2, 0.8],   # group
                     [0.5, 0.6, 0.1, 0.9],   # image only
                     [0.5, 0.1, 0.6, 0.9],   # text only
                     [0.1, 0.9, 0.8, 0.2]],  # nothing
                    np.float32)
  split = winoground.WinogroundScores(
      index=np.arange(4), scores=scores, num_images=8, num_texts=8,
      text_length=16, num_truncated=0,
      tags=np.array(["Relation", "Object", "Object", "Both"]))
  summary = winoground.summarize({"test": split})
  # Object = rows 1, 2: text 1/2, image 1/2, group 0; Relation = row 0;
  # Both = row 3; all: text 2/4, image 2/4, group 1/4.
  assert summary["tags"] == {
      "Object": {"count": 2, "text": 0.5, "image": 0.5, "group": 0.0},
      "Relation": {"count": 1, "text": 1.0, "image": 1.0, "group": 1.0},
      "Both": {"count": 1, "text": 0.0, "image": 0.0, "group": 0.0}}
  assert [summary[k] for k in ("count", "text", "image", "group")] == [
      4, 0.5, 0.5, 0.25]
  assert winoground.headline(summary) == {"text": 0.5, "image": 0.5,
                                          "group": 0.25}


def per_item_scores(model, tokenizer, source):
  """Each item's four scores, its images and captions encoded alone."""
  towers = tiny.Towers(model, tokenizer)
  out = {}
  for record in source:
    zimg = [towers.image(record[k]) for k in winoground.IMAGE_KEYS]
    ztxt = [towers.text(record[k]) for k in winoground.CAPTION_KEYS]
    out[int(record["id"])] = [float(zimg[i] @ ztxt[c])
                              for i in (0, 1) for c in (0, 1)]
  return out


def test_matches_the_per_item_loop(built, source, tmp_path):
  tokenizer = tiny.byte_tokenizer(tmp_path)
  model = tiny.eval_model(tokenizer.vocab_size)
  encoders = encoding.create_encoders(model[0], tiny.mesh_of(8), B)
  scores = winoground.score_split(encoders, model[1], tokenizer, source,
                                  "test")
  np.testing.assert_array_equal(scores.index, [0, 1, 2, 3])
  assert (scores.num_images, scores.num_texts) == (7, 7)
  assert list(scores.tags) == [r["collapsed_tag"] for r in ROWS]
  reference = per_item_scores(model, tokenizer, source)
  np.testing.assert_allclose(scores.scores, [reference[i] for i in range(4)],
                             atol=2e-6)
  summary = winoground.summarize({"test": scores})
  expected = winoground.winoground_metrics(
      np.array([reference[i] for i in range(4)], np.float32))
  assert {k: summary[k] for k in expected} == expected
  assert {t: s["count"] for t, s in summary["tags"].items()} == {
      "Object": 2, "Relation": 1, "Both": 1}
  table = winoground.format_table(summary)
  assert table.splitlines()[2].startswith("| all | 4 |")
  winoground.plot({**summary, "eval": "winoground"}, str(tmp_path / "w.png"))
  with Image.open(tmp_path / "w.png") as image:
    assert image.format == "PNG"
