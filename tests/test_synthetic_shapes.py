"""Tests of the synthetic world and its two TFDS builders (tiny configs)."""

import io
import pathlib

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import records as records_lib
from tfds_builders import registered  # pylint: disable=unused-import
from tfds_builders.synthetic_shapes import world

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

TRAIN = "synthetic_shapes/tiny"
BENCHMARK = "synthetic_shapes_benchmark/tiny"


def build(name, data_dir):
  builder = tfds.builder(name, data_dir=str(data_dir))
  builder.download_and_prepare()
  return builder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("tfds")
  build(TRAIN, path)
  build(BENCHMARK, path)
  return path


def records(data_dir, name, split):
  """The split's examples; training splits as one row per caption."""
  rows = list(tfds.builder(name, data_dir=str(data_dir)).as_data_source(split))
  return rows if name == BENCHMARK else records_lib.caption_rows(rows)


def text(value):
  return value.decode() if isinstance(value, bytes) else value


# ------------------------------------------------------------------ world ---


def test_holds_on_a_hand_made_scene():
  red_circle = world.Obj("circle", "red", "small", column=0, row=2, dx=0,
                         dy=0)
  blue_square = world.Obj("square", "blue", "large", column=2, row=0, dx=0,
                          dy=0)
  scene = world.Scene((red_circle, blue_square), background=128)
  red = world.Phrase("red", "circle")
  blue = world.Phrase("blue", "square", "large")
  assert world.holds(world.Claim((red, blue)), scene)
  assert world.holds(world.Claim((red, blue), "left of"), scene)
  assert world.holds(world.Claim((red, blue), "below"), scene)
  assert world.holds(world.Claim((blue, red), "above"), scene)
  assert not world.holds(world.Claim((red, blue), "above"), scene)
  assert not world.holds(world.Claim((red, blue), "right of"), scene)
  assert not world.holds(world.Claim((world.Phrase("red", "square"),)), scene)
  assert not world.holds(
      world.Claim((world.Phrase("blue", "square", "small"),)), scene)
  # One object cannot stand for two phrases.
  assert not world.holds(world.Claim((red, world.Phrase("red", "circle"))),
                         scene)


def test_render_parse_round_trip():
  rng = np.random.default_rng(0)
  for i in range(300):
    scene = world.sample_scene(rng)
    form = ["single", "and", "relation", "and_all"][i % 4]
    claim = world.sample_claim(scene, rng, form)
    assert world.holds(claim, scene)
    caption = world.render(claim, world.sample_words(rng),
                           str(rng.choice(world.PREFIXES)))
    assert world.parse(caption) == claim, caption


def test_render_articles_and_words():
  claim = world.Claim((world.Phrase("white", "circle", "large"),
                       world.Phrase("red", "diamond")), "left of")
  assert world.render(claim, {}) == "a large white circle left of a red diamond"
  words = {"large": "big", "white": "ivory", "left of": "to the left of"}
  assert world.render(world.Claim(claim.phrases[1:] + claim.phrases[:1]),
                      words, "there is ") == (
                          "there is a red diamond and a big ivory circle")
  assert world.render(world.Claim((world.Phrase("white", "circle"),)),
                      {"white": "ivory", "circle": "disc"}) == "an ivory disc"


@pytest.mark.parametrize("caption", [
    "a red circle or a blue square",
    "a red blob",
    "an red circle",
    "red circle left of a blue square",
    "a red circle left of",
])
def test_parse_rejects(caption):
  with pytest.raises(ValueError, match="Cannot parse|Wrong article"):
    world.parse(caption)


# --------------------------------------------------------------- builders ---


def features_spec(features):
  return {k: (type(f).__name__, str(f.dtype), f.shape,
              type(getattr(f, "feature", None)).__name__)
          for k, f in features.items()}


def test_schemas_match_the_real_builders(data_dir):
  """Same names, types, dtypes and shapes; only the image encoding differs."""
  for ours, theirs in [(TRAIN, "coco_hard_pos_neg/coco"),
                       (BENCHMARK, "hard_positives/swap")]:
    our_info = tfds.builder(ours, data_dir=str(data_dir)).info
    their_info = tfds.builder(theirs, data_dir=str(data_dir)).info
    assert features_spec(our_info.features) == features_spec(
        their_info.features)
    assert our_info.features["image"].encoding_format == "png"


def test_counts_and_ids(data_dir):
  for name, splits in [(TRAIN, ("pretrain", "train")),
                       (BENCHMARK, ("test_replace_att", "test_replace_rel",
                                    "test_swap"))]:
    builder = tfds.builder(name, data_dir=str(data_dir))
    config = builder.builder_config
    assert builder.info.file_format == tfds.core.FileFormat.ARRAY_RECORD
    assert sorted(builder.info.splits) == sorted(splits)
    for split in splits:
      rows = records(data_dir, name, split)
      assert len(rows) == config.num_scenes[split] * config.captions_per_scene
      if name == TRAIN:  # One example per scene.
        assert builder.info.splits[split].num_examples == (
            config.num_scenes[split])
      key = "index" if name == BENCHMARK else "caption_id"
      assert sorted(int(r[key]) for r in rows) == list(range(len(rows)))
      images = {text(r["image_id"]) for r in rows}
      assert len(images) == config.num_scenes[split]


def test_rebuild_gives_the_same_bytes(data_dir, tmp_path):
  build(TRAIN, tmp_path)
  build(BENCHMARK, tmp_path)
  files = sorted(p.relative_to(data_dir)
                 for p in pathlib.Path(data_dir).rglob("*array_record*"))
  assert len(files) == 5
  for f in files:
    assert (tmp_path / f).read_bytes() == (data_dir / f).read_bytes(), f


def check_image(row):
  """The picture shows the scene: object colours at centres, background."""
  scene = world.scene_from_image_id(text(row["image_id"]))
  image = row["image"]
  assert image.shape == (64, 64, 3)
  for obj in scene.objects:
    x, y = world.object_centre(obj, 64)
    assert tuple(image[y, x]) == world.COLOURS[obj.colour], obj
  assert tuple(image[0, 0]) == (scene.background,) * 3
  return scene


def test_train_examples_are_consistent(data_dir):
  kinds_seen = set()
  for row in records(data_dir, TRAIN, "train"):
    scene = check_image(row)
    caption = world.parse(text(row["caption"]))
    assert world.holds(caption, scene), row["caption"]
    negatives = [text(t) for t in row["hard_negatives"]]
    assert 1 <= len(negatives) <= world.MAX_HARD_NEGATIVES
    assert len(set(negatives)) == len(negatives)
    for negative in negatives:
      assert not world.holds(world.parse(negative), scene), negative
    positives = [text(t) for t in row["hard_positives"]]
    kinds = [text(k) for k in row["hard_positive_kinds"]]
    assert len(kinds) == len(positives) >= 1
    for positive, kind in zip(positives, kinds):
      claim = world.parse(positive)
      assert world.holds(claim, scene), positive
      assert positive != text(row["caption"])
      if kind == "replace":  # Same claim, one concept worded differently.
        assert claim == caption
      else:  # Same phrases, another order (and the converse relation).
        assert kind == "swap"
        assert claim != caption
        assert sorted(map(repr, claim.phrases)) == sorted(
            map(repr, caption.phrases))
      kinds_seen.add(kind)
  assert kinds_seen == {"swap", "replace"}


def test_pretrain_examples_have_no_hard_texts(data_dir):
  for row in records(data_dir, TRAIN, "pretrain"):
    scene = check_image(row)
    assert world.holds(world.parse(text(row["caption"])), scene)
    assert len(row["hard_negatives"]) == len(row["hard_positives"]) == 0
    assert len(row["hard_positive_kinds"]) == 0


@pytest.mark.parametrize("split",
                         ["test_replace_att", "test_replace_rel", "test_swap"])
def test_benchmark_items_are_consistent(data_dir, split):
  for row in records(data_dir, BENCHMARK, split):
    scene = check_image(row)
    caption, negative, positive = (world.parse(text(row[k])) for k in (
        "caption", "hard_negative", "hard_positive"))
    assert world.holds(caption, scene) and world.holds(positive, scene)
    assert not world.holds(negative, scene)
    assert text(row["hard_positive"]) != text(row["caption"])
    if split == "test_replace_att":
      assert positive == caption
      assert negative.relation is None
      changed = [(p, q) for p, q in zip(caption.phrases, negative.phrases)
                 if p != q]
      assert len(changed) == 1 and changed[0][0].shape == changed[0][1].shape
    elif split == "test_replace_rel":
      assert positive == caption
      assert negative.phrases == caption.phrases
      assert negative.relation != caption.relation
    else:
      assert positive.phrases == caption.phrases[::-1]
      assert [p.shape for p in negative.phrases] == [
          p.shape for p in caption.phrases]


def test_png_is_lossless_against_draw(data_dir):
  builder = tfds.builder(TRAIN, data_dir=str(data_dir))
  source = builder.as_data_source(
      "train", decoders={"image": tfds.decode.SkipDecoding()})
  row = source[0]
  scene = world.scene_from_image_id(text(row["image_id"]))
  decoded = np.asarray(Image.open(io.BytesIO(row["image"])))
  np.testing.assert_array_equal(decoded, world.draw(scene, 64))


# ------------------------------------------------------------ conventions ---


def canonical(caption: str) -> bool:
  """Whether a caption uses only canonical words (no prefix)."""
  return world.render(world.parse(caption), {}) == caption


def left_to_right(claim, scene) -> bool:
  columns = [next(o.column for o in scene.objects if world.holds(
      world.Claim((p,)), world.Scene((o,), 0))) for p in claim.phrases]
  return columns == sorted(columns)


def test_training_captions_follow_the_conventions():
  """Synonyms and unusual list orders are rare (SYNONYM_P, UNUSUAL_ORDER_P)."""
  rare_words = lists = ordered = 0
  n = 2000
  for i in range(n):
    rng = world.scene_rng("pretrain", i)
    scene = world.sample_scene(rng)
    claim = world.sample_claim(scene, rng, "and")
    words = world.sample_words(rng)
    rare_words += any(words[c] != world.SURFACES[c][0]
                      for c in world.concepts(claim))
    lists += 1
    ordered += left_to_right(claim, scene)
  # A 2-phrase claim mentions 4-6 rewordable concepts; order holds for the
  # 90 % sorted plus half of the 10 % left in random order.
  assert 0.2 < rare_words / n < 0.5
  assert 0.92 < ordered / lists < 0.98


@pytest.mark.parametrize("split",
                         ["test_replace_att", "test_replace_rel", "test_swap"])
def test_benchmark_hard_positives_break_the_conventions(data_dir, split):
  for row in records(data_dir, BENCHMARK, split):
    scene = world.scene_from_image_id(text(row["image_id"]))
    caption, negative, positive = (text(row[k]) for k in (
        "caption", "hard_negative", "hard_positive"))
    assert canonical(caption) and canonical(negative)
    claim = world.parse(caption)
    if len(claim.phrases) > 1 and claim.relation is None:
      assert left_to_right(claim, scene)
    if split == "test_swap":
      assert canonical(positive)
      assert not left_to_right(world.parse(positive), scene)
    else:  # A synonym, which training captions use 10 % of the time.
      assert not canonical(positive)
