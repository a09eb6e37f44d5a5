"""The sugar_crepe_pp builder and evaluator on a hand-made release.

Two subsets of three items in the released format (data/<subset>.json
lists, COCO-named JPEGs drawn by PIL) are built with TFDS and scored by a
tiny random CLIP, against a loop written like the reference code
(Sri-Harsha/scpp VLMs/test_Variants_CLIP.py): each item encoded alone,
cosine similarities and strict comparisons.
"""

import json

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import tiny
from hardpos_jax.data import eval_transform
from hardpos_jax.data import input_pipeline
from hardpos_jax.evals import encoding
from hardpos_jax.evals import sugar_crepe_pp
from tfds_builders import common
import tfds_builders.sugar_crepe_pp.sugar_crepe_pp  # Registers the builder.

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

B = 8  # Encoder batch: 2 images and at most 8 texts per subset.
SUBSETS = ("replace_att", "swap_obj")

# Per subset: rows 0, 1, 2 (the release's ids are the rows); items 0 and 2
# share an image, and item 1's P2 is its P1 (as replace_att id 14 of the
# release).
ROWS = [
    {"id": 0, "filename": "000000000001.jpg", "caption": "a tan toilet",
     "caption2": "a toilet that is tan", "negative_caption": "a white toilet"},
    {"id": 1, "filename": "000000000002.jpg", "caption": "a black seat",
     "caption2": "a black seat", "negative_caption": "a white seat"},
    {"id": 2, "filename": "000000000001.jpg", "caption": "a dog on a chair",
     "caption2": "a chair with a dog on it",
     "negative_caption": "a cat on a chair"},
]


def write_release(root, rows=ROWS, subsets=SUBSETS):
  """data/<subset>.json and val2017/<filename>, as released."""
  (root / "data").mkdir(parents=True, exist_ok=True)
  for subset in subsets:
    # Each subset's captions differ, so its texts are its own.
    tiny.write_json(root / "data" / f"{subset}.json", [
        {**r, **{k: f"{r[k]} ({subset})" for k in (
            "caption", "caption2", "negative_caption")}} for r in rows])
  for seed, name in enumerate(sorted({r["filename"] for r in rows})):
    tiny.write_image(root / "val2017" / name, seed)
  return root


def build(subset, manual_dir, data_dir, **kwargs):
  return tiny.build(f"sugar_crepe_pp/{subset}", manual_dir, data_dir,
                    **kwargs)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  root = tmp_path_factory.mktemp("scpp")
  manual_dir = write_release(root / "manual")
  for subset in SUBSETS:
    build(subset, manual_dir, root / "tfds")
  return {s: input_pipeline.data_source(f"sugar_crepe_pp/{s}", "test",
                                        str(root / "tfds"))
          for s in SUBSETS}


def test_builds_the_released_format(sources):
  assert {c.name for c in tfds.builder_cls("sugar_crepe_pp").BUILDER_CONFIGS
          } == {"replace_att", "replace_obj", "replace_rel", "swap_att",
                "swap_obj"}
  examples = {int(e["index"]): e for e in sources["swap_obj"]}
  assert sorted(examples) == [0, 1, 2]
  for row in ROWS:
    example = examples[row["id"]]  # The release's id is its row.
    assert example["filename"].decode() == row["filename"]
    for key, released in (("caption", "caption"), ("caption2", "caption2"),
                          ("hard_negative", "negative_caption")):
      assert example[key].decode() == f"{row[released]} (swap_obj)"
    assert eval_transform.decode_rgb(example["image"]).shape == (40, 48, 3)


@pytest.mark.parametrize("breakage, needles", [
    (lambda rows: rows[1].pop("caption2"), ["row 1", "'caption2'"]),
    (lambda rows: rows[2].update(filename="000000000009.jpg"),
     ["row 2", "000000000009.jpg does not exist"]),
    (lambda rows: rows.__setitem__(2, "a cat"),
     ["row 2", "not a JSON object: 'a cat'"]),
    (lambda rows: rows[0].update(negative_caption=" "),
     ["row 0", "negative_caption is empty"]),
], ids=["no_caption2", "no_image", "not_an_object", "blank_negative"])
def test_bad_rows_name_file_and_row(tmp_path, breakage, needles):
  rows = [dict(r) for r in ROWS]
  breakage(rows)
  manual_dir = write_release(tmp_path / "manual", subsets=())
  (manual_dir / "data" / "swap_att.json").write_text(json.dumps(rows))
  with pytest.raises(common.DataError) as info:
    build("swap_att", manual_dir, tmp_path / "tfds")
  for needle in ("data/swap_att.json", *needles):
    assert needle in str(info.value)


def test_whole_file_problems(tmp_path):
  manual_dir = write_release(tmp_path / "manual", subsets=())
  with pytest.raises(common.DataError, match="replace_rel.json is missing"):
    build("replace_rel", manual_dir, tmp_path / "tfds")
  (manual_dir / "data" / "replace_rel.json").write_text(json.dumps("rows"))
  with pytest.raises(common.DataError, match="expected a JSON list"):
    build("replace_rel", manual_dir, tmp_path / "tfds")
  # SugarCrepe's file of the same name (a dict) means SugarCrepe++ is absent.
  (manual_dir / "data" / "replace_rel.json").write_text(
      json.dumps({"0": ROWS[0]}))
  with pytest.raises(common.MissingDataError, match="SugarCrepe's format"):
    build("replace_rel", manual_dir, tmp_path / "tfds")
  # The reference code reads rows by position, so `id` may be absent.
  (manual_dir / "data" / "replace_rel.json").write_text(json.dumps(
      [{k: v for k, v in r.items() if k != "id"} for r in ROWS]))
  builder = build("replace_rel", manual_dir, tmp_path / "tfds")
  assert sorted(int(e["index"]) for e in builder.as_data_source("test")) == [
      0, 1, 2]


def test_metrics_against_a_hand_count():
  # Columns s_p1, s_p2, s_n (image-text), t_p1_p2, t_p1_n, t_p2_n.
  scores = np.array([
      # ITT: .3>.1 and .2>.1 yes; TOT: .9>.5 and .9>.4 yes.
      [0.3, 0.2, 0.1, 0.9, 0.5, 0.4],
      # ITT: .3>.25 yes, .2>.25 no -> no (P1 yes, P2 no); TOT: .6>.7 no.
      [0.3, 0.2, 0.25, 0.6, 0.7, 0.4],
      # ITT: P1 tie .2=.2 fails, P2 .3>.2 yes -> no; TOT: .8>.8 tie fails.
      [0.2, 0.3, 0.2, 0.8, 0.1, 0.8],
      # ITT: .1>.4 no, .2>.4 no; TOT: .5>.3 and .5>.2 yes.
      [0.1, 0.2, 0.4, 0.5, 0.3, 0.2],
  ], np.float32)
  flags = sugar_crepe_pp.sugar_crepe_pp_flags(scores)
  # Hand count: ITT row 0; TOT rows 0, 3; P1 rows 0, 1; P2 rows 0, 2.
  np.testing.assert_array_equal(flags["itt"], [1, 0, 0, 0])
  np.testing.assert_array_equal(flags["tot"], [1, 0, 0, 1])
  np.testing.assert_array_equal(flags["itt_p1"], [1, 1, 0, 0])
  np.testing.assert_array_equal(flags["itt_p2"], [1, 0, 1, 0])
  assert sugar_crepe_pp.sugar_crepe_pp_metrics(scores) == {
      "count": 4, "itt": 0.25, "tot": 0.5, "itt_p1": 0.5, "itt_p2": 0.5}
  with pytest.raises(ValueError, match="not finite"):
    sugar_crepe_pp.sugar_crepe_pp_flags(np.where(scores == 0.5, np.inf,
                                                 scores))
  with pytest.raises(ValueError, match=r"\[N > 0, 6\]"):
    sugar_crepe_pp.sugar_crepe_pp_flags(scores[:, :3])


def per_item_scores(model, tokenizer, source):
  """The reference loop: each item encodes its image and captions alone."""
  towers = tiny.Towers(model, tokenizer)

  def cos(a, b):  # torch.nn.CosineSimilarity(dim=1, eps=1e-6)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-6))

  out = {}
  for record in source:
    image = towers.image(record["image"])
    p1, p2, n = (towers.text(record[k]) for k in sugar_crepe_pp.TEXT_KEYS)
    out[int(record["index"])] = [cos(image, p1), cos(image, p2), cos(image, n),
                              cos(p1, p2), cos(p1, n), cos(p2, n)]
  return out


def test_matches_the_per_item_loop(sources, tmp_path):
  tokenizer = tiny.byte_tokenizer(tmp_path)
  model = tiny.eval_model(tokenizer.vocab_size)
  encoders = encoding.create_encoders(model[0], tiny.mesh_of(8), B)
  scores = {s: sugar_crepe_pp.score_split(encoders, model[1], tokenizer,
                                          source, s)
            for s, source in sources.items()}
  reference = {}
  for subset, split in scores.items():
    np.testing.assert_array_equal(split.index, [0, 1, 2])
    # 2 images; 3 x 3 captions, item 1's P1 and P2 one text.
    assert (split.num_images, split.num_texts) == (2, 8)
    by_id = per_item_scores(model, tokenizer, sources[subset])
    reference[subset] = np.array([by_id[i] for i in range(3)], np.float32)
    np.testing.assert_allclose(split.scores, reference[subset], atol=2e-6)
    # P1 = P2: t(P1, P2) is 1, so TOT holds unless N scores 1 too.
    assert split.scores[1, 3] == pytest.approx(1, abs=1e-6)
  summary = sugar_crepe_pp.summarize(scores)
  for subset in SUBSETS:
    expected = sugar_crepe_pp.sugar_crepe_pp_metrics(reference[subset])
    assert {k: summary["subsets"][subset][k] for k in expected} == expected
  pooled = sugar_crepe_pp.sugar_crepe_pp_metrics(
      np.concatenate(list(reference.values())))
  assert summary["micro"] == pooled
  assert summary["macro"]["count"] == 6
  assert summary["macro"]["tot"] == pytest.approx(np.mean(
      [summary["subsets"][s]["tot"] for s in SUBSETS]))
  assert set(sugar_crepe_pp.headline(summary)) == {
      f"{n} {m}" for n in (*SUBSETS, "macro") for m in ("ITT", "TOT")}
  assert len(sugar_crepe_pp.format_table(summary).splitlines()) == 2 + 4
  sugar_crepe_pp.plot({**summary, "eval": "sugar_crepe_pp"},
                      str(tmp_path / "s.png"))
  with Image.open(tmp_path / "s.png") as image:
    assert image.format == "PNG"
