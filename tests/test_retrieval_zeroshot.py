"""Retrieval and zero-shot evaluators against brute force, on tiny datasets.

Two hand-made TFDS builders carry the features the real datasets have
(`coco_captions/2014`: image, image/id, captions/text; `cifar10` and
friends: image, label), a tiny random CLIP and a character-level tokenizer
keep it fast. The ranks are checked against numpy on the very embeddings the
evaluator ranked (caught on their way into `scoring.rank_gallery`), and those
embeddings against the towers applied to one image or text at a time.
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
from hardpos_jax.data import input_pipeline
from hardpos_jax.evals import retrieval
from hardpos_jax.evals import scoring
from hardpos_jax.evals import zeroshot
from hardpos_jax.evals import zeroshot_prompts
from hardpos_jax.tokenizer import Tokenizer

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

B = 8  # encoder and ranking batch; every count below leaves a padded block
K = retrieval.CAPTIONS_PER_IMAGE
WORDS = ("red", "blue", "cat", "dog", "on", "a", "mat", "big", "sofa", "sun")
CLASSES = ("cat", "dog", "bird", "fish", "car", "tree", "boat")
TEMPLATES = ("a photo of a {}.", "a drawing of the {}.", "{}")


def random_image(rng):
  return rng.integers(0, 256, (int(rng.integers(24, 48)),
                               int(rng.integers(24, 48)), 3), np.uint8)


class RetrievalTestCaptions(tfds.core.GeneratorBasedBuilder):
  """coco_captions' retrieval features: 11 images with 5 or 6 captions."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "image/id": np.int64,
            "captions": tfds.features.Sequence({"text": np.str_,
                                                "id": np.int64}),
        }))

  def _split_generators(self, dl_manager):
    return {"test": self._generate_examples()}

  def _generate_examples(self):
    rng = np.random.default_rng(0)
    for i in range(11):
      texts = [" ".join(rng.choice(WORDS, int(rng.integers(2, 6))))
               for _ in range(K + i % 2)]  # Odd images have a sixth.
      if i in (3, 4):
        texts[1] = "a cat on a mat"  # One caption on two images: a tie.
      yield i, {"image": random_image(rng), "image/id": 1000 - 37 * i,
                "captions": [{"text": t, "id": 10 * i + j}
                             for j, t in enumerate(texts)]}


class ZeroshotTestClasses(tfds.core.GeneratorBasedBuilder):
  """cifar10's features: 13 images of 7 classes."""

  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)),
            "label": tfds.features.ClassLabel(names=CLASSES),
        }))

  def _split_generators(self, dl_manager):
    return {"test": self._generate_examples()}

  def _generate_examples(self):
    rng = np.random.default_rng(1)
    for i in range(13):
      yield i, {"image": random_image(rng), "label": i % len(CLASSES)}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  for builder in (RetrievalTestCaptions, ZeroshotTestClasses):
    builder(data_dir=path).download_and_prepare(
        file_format=tfds.core.FileFormat.ARRAY_RECORD)
  return path


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
  return Tokenizer(tiny.byte_vocab(
      str(tmp_path_factory.mktemp("vocab") / "bytes.txt.gz")))


@pytest.fixture(scope="module")
def model(tokenizer):
  return tiny.eval_model(tokenizer.vocab_size)


@pytest.fixture(scope="module")
def encoders(model):
  return evals.create_encoders(model[0], tiny.mesh_of(8), B)


Towers = tiny.Towers


def brute_force_ranks(queries, query_labels, gallery, gallery_labels):
  """Per query: wrong items scoring >= its best right one, and the argmax."""
  rivals, top = [], []
  for query, label in zip(queries, query_labels):
    # The same float64 sum for every row: equal rows tie exactly.
    s = (gallery.astype(np.float64) * query.astype(np.float64)).sum(axis=1)
    right = gallery_labels == label
    rivals.append(int((~right & (s >= s[right].max())).sum()))
    top.append(int(np.argmax(s)))
  return np.array(rivals), np.array(top)


def run_watched(evaluator, encoders, params, tokenizer, data_dir, out_dir):
  """Evaluates, keeping every `rank_gallery` call's inputs and outputs."""
  calls = []
  rank_gallery = scoring.rank_gallery

  def spy(*args):
    calls.append((args[1:], rank_gallery(*args)))
    return calls[-1][1]

  with pytest.MonkeyPatch.context() as monkeypatch:
    monkeypatch.setattr(scoring, "rank_gallery", spy)
    summary = evaluator.evaluate(encoders, params, tokenizer,
                                 data_dir=data_dir, out_dir=out_dir)
  return summary, calls


def read_csv(out_dir, name):
  with open(os.path.join(out_dir, f"{name}_scores.csv")) as f:
    return list(csv.DictReader(f))


def check_reports(summary, out_dir, name):
  assert sorted(os.listdir(out_dir)) == [
      f"{name}.json", f"{name}.md", f"{name}.png", f"{name}_scores.csv"]
  with open(os.path.join(out_dir, f"{name}.json")) as f:
    assert json.load(f) == summary
  with open(os.path.join(out_dir, f"{name}.md")) as f:
    assert f.read() == evals.format_table(summary) + "\n"
  with Image.open(os.path.join(out_dir, f"{name}.png")) as image:
    assert image.format == "PNG" and image.size[0] > 500


def test_rank_gallery_with_ties_matches_brute_force(encoders):
  rng = np.random.default_rng(2)
  # Entries in {-1, 0, 1} / 4: every dot product is exact, ties are common.
  gallery = rng.integers(-1, 2, (23, 16)).astype(np.float32) / 4
  gallery_labels = rng.integers(0, 9, 23)
  queries = rng.integers(-1, 2, (37, 16)).astype(np.float32) / 4
  query_labels = rng.choice(gallery_labels, 37)
  ranks = scoring.rank_gallery(encoders, queries, query_labels, gallery,
                               gallery_labels)
  rivals, top = brute_force_ranks(queries, query_labels, gallery,
                                  gallery_labels)
  np.testing.assert_array_equal(ranks.rivals, rivals)
  np.testing.assert_array_equal(ranks.top, top)
  # Some wrong items tie a query's best right one, and they count.
  s = queries @ gallery.T  # exact: sums of multiples of 1/16
  right = query_labels[:, None] == gallery_labels
  best = np.where(right, s, -np.inf).max(axis=1, keepdims=True)
  assert (rivals > (~right & (s > best)).sum(axis=1)).any()


def test_rank_gallery_needs_a_right_item_per_query(encoders):
  with pytest.raises(ValueError, match="no gallery item"):
    scoring.rank_gallery(encoders, np.ones((2, 4), np.float32), [0, 3],
                         np.ones((3, 4), np.float32), [0, 1, 2])


@pytest.fixture(scope="module")
def retrieval_run(encoders, model, tokenizer, data_dir, tmp_path_factory):
  out_dir = str(tmp_path_factory.mktemp("retrieval"))
  evaluator = evals.Evaluator("retrieval_tiny", "retrieval",
                              {"tiny": ("retrieval_test_captions", "test")})
  with pytest.MonkeyPatch.context() as monkeypatch:
    monkeypatch.setitem(retrieval.DATASETS, "tiny", retrieval.CaptionedImages(
        "retrieval_test_captions", "test", "image/id", "captions", "text"))
    summary, calls = run_watched(evaluator, encoders, model[1], tokenizer,
                                 data_dir, out_dir)
  return summary, calls, out_dir


def test_retrieval_ranks_are_brute_force_on_the_ranked_embeddings(
    retrieval_run):
  summary, calls, out_dir = retrieval_run
  (i2t_inputs, i2t), (t2i_inputs, t2i) = calls
  zimg, images, zcap, owners = i2t_inputs
  np.testing.assert_array_equal(owners, np.repeat(np.arange(11), K))
  # Text->image ranks the same embeddings the other way round.
  for a, b in zip(t2i_inputs, (zcap, owners, zimg, images)):
    np.testing.assert_array_equal(a, b)
  i2t_rivals, _ = brute_force_ranks(zimg, images, zcap, owners)
  t2i_rivals, _ = brute_force_ranks(zcap, owners, zimg, images)
  np.testing.assert_array_equal(i2t.rivals, i2t_rivals)
  np.testing.assert_array_equal(t2i.rivals, t2i_rivals)
  row = summary["subsets"]["tiny"]
  for k in (1, 5, 10):
    assert row["image_to_text"][f"recall@{k}"] == np.mean(i2t_rivals < k)
    assert row["text_to_image"][f"recall@{k}"] == np.mean(t2i_rivals < k)
  # A random model still ranks some right items first and misses others.
  assert 0 < row["text_to_image"]["recall@1"] < 1
  rows = read_csv(out_dir, "retrieval_tiny")
  assert list(rows[0]) == ["subset", "index", *retrieval.SCORE_COLUMNS]
  np.testing.assert_array_equal(
      [[int(r[c]) for c in retrieval.SCORE_COLUMNS] for r in rows],
      np.column_stack([i2t_rivals, t2i_rivals.reshape(-1, K)]))


def test_retrieval_embeds_each_image_with_its_first_captions(
    retrieval_run, model, tokenizer, data_dir):
  summary, calls, _ = retrieval_run
  zimg, _, zcap, _ = calls[0][0]
  towers = Towers(model, tokenizer)
  records = sorted(input_pipeline.data_source("retrieval_test_captions",
                                              "test", data_dir),
                   key=lambda r: r["image/id"])
  np.testing.assert_allclose(
      zimg, [towers.image(r["image"]) for r in records], atol=2e-6)
  captions = [t.decode() for r in records for t in r["captions"]["text"][:K]]
  np.testing.assert_allclose(zcap, [towers.text(t) for t in captions],
                             atol=2e-6)
  row = summary["subsets"]["tiny"]
  assert (row["images"], row["captions"]) == (11, 55)
  assert row["texts"] == len(set(captions)) < 55
  assert "a cat on a mat" in captions


def test_retrieval_reports(retrieval_run):
  summary, _, out_dir = retrieval_run
  check_reports(summary, out_dir, "retrieval_tiny")
  assert len(summary["subsets"]["tiny"]) == 7
  assert len(evals.format_table(summary).splitlines()) == 3
  rows = read_csv(out_dir, "retrieval_tiny")
  assert [int(r["index"]) for r in rows] == sorted(
      1000 - 37 * i for i in range(11))
  scalars = evals.scalars(summary)
  assert scalars["retrieval_tiny/subsets/tiny/text_to_image/recall@5"] == (
      summary["subsets"]["tiny"]["text_to_image"]["recall@5"])


class ListSource(list):
  def __getitems__(self, positions):
    return [self[p] for p in positions]


def captioned(image_id, *texts):
  return {"image/id": image_id,
          "captions": {"text": np.array([t.encode() for t in texts])}}


def test_read_gallery_keeps_k_captions_and_checks_them():
  spec = retrieval.DATASETS["coco_5k"]
  texts = [f"t{i}" for i in range(7)]
  gallery = retrieval.read_gallery(ListSource([
      captioned(9, *texts[:6]), captioned(4, texts[6], *texts[:4])]), spec)
  np.testing.assert_array_equal(gallery.index, [4, 9])
  np.testing.assert_array_equal(gallery.image_positions, [1, 0])
  np.testing.assert_array_equal(gallery.captions, [[5, 0, 1, 2, 3],
                                                   [0, 1, 2, 3, 4]])
  assert gallery.texts == texts[:5] + [texts[6]]
  with pytest.raises(ValueError, match="has 4 captions"):
    retrieval.read_gallery(ListSource([captioned(1, *texts[:4])]), spec)
  with pytest.raises(ValueError, match="repeats"):
    retrieval.read_gallery(ListSource([captioned(1, *texts)] * 2), spec)


@pytest.fixture(scope="module")
def zeroshot_run(encoders, model, tokenizer, data_dir, tmp_path_factory):
  out_dir = str(tmp_path_factory.mktemp("zeroshot"))
  evaluator = evals.Evaluator("zeroshot_tiny", "zeroshot",
                              {"tiny": ("zeroshot_test_classes", "test")})
  with pytest.MonkeyPatch.context() as monkeypatch:
    monkeypatch.setitem(zeroshot.TASKS, "tiny", zeroshot.Task(
        "zeroshot_test_classes", "test", "label", CLASSES, TEMPLATES))
    summary, calls = run_watched(evaluator, encoders, model[1], tokenizer,
                                 data_dir, out_dir)
  return summary, calls, out_dir


def test_zeroshot_classes_are_openai_prompt_ensembles(zeroshot_run, model,
                                                      tokenizer, data_dir):
  _, calls, _ = zeroshot_run
  (zimg, labels, zclass, classes), _ = calls[0]
  towers = Towers(model, tokenizer)
  expected = []
  for name in CLASSES:  # OpenAI's zeroshot_classifier, one class at a time.
    z = np.array([towers.text(t.format(name)) for t in TEMPLATES])
    z /= np.linalg.norm(z, axis=-1, keepdims=True)
    expected.append(z.mean(0) / np.linalg.norm(z.mean(0)))
  np.testing.assert_allclose(zclass, expected, atol=2e-6)
  np.testing.assert_array_equal(classes, np.arange(len(CLASSES)))
  records = list(input_pipeline.data_source("zeroshot_test_classes", "test",
                                            data_dir))
  np.testing.assert_array_equal(labels, [r["label"] for r in records])
  np.testing.assert_allclose(
      zimg, [towers.image(r["image"]) for r in records], atol=2e-6)


def test_zeroshot_accuracy_is_brute_force(zeroshot_run):
  summary, calls, out_dir = zeroshot_run
  (zimg, labels, zclass, classes), ranks = calls[0]
  rivals, top = brute_force_ranks(zimg, labels, zclass, classes)
  np.testing.assert_array_equal(ranks.rivals, rivals)
  row = summary["subsets"]["tiny"]
  assert row["top1"] == np.mean(rivals < 1)
  assert row["top5"] == np.mean(rivals < 5)
  assert 0 < row["top1"] < row["top5"] < 1
  assert (row["count"], row["classes"], row["templates"], row["texts"]) == (
      13, 7, 3, 21)
  rows = read_csv(out_dir, "zeroshot_tiny")
  assert list(rows[0]) == ["subset", "index", *zeroshot.SCORE_COLUMNS]
  np.testing.assert_array_equal(
      [[int(r[c]) for c in zeroshot.SCORE_COLUMNS] for r in rows],
      np.column_stack([labels, top, rivals]))
  check_reports(summary, out_dir, "zeroshot_tiny")


def test_class_embeddings_by_hand():
  s = np.sqrt(0.5)
  ztxt = np.array([[1, 0, 0], [0, 1, 0],  # class 0's two prompts
                   [0, 0, 1], [0, 0, 1]], np.float32)  # class 1's
  np.testing.assert_allclose(zeroshot.class_embeddings(ztxt, 2),
                             [[s, s, 0], [0, 0, 1]], rtol=1e-6)
  assert zeroshot.prompt_texts(["a", "b"], ["x {}", "{} y"]) == [
      "x a", "a y", "x b", "b y"]


def test_zeroshot_checks_the_class_count(encoders, model, tokenizer,
                                         data_dir, monkeypatch):
  monkeypatch.setitem(zeroshot.TASKS, "tiny", zeroshot.Task(
      "zeroshot_test_classes", "test", "label", CLASSES[:6], TEMPLATES))
  source = input_pipeline.data_source("zeroshot_test_classes", "test",
                                      data_dir)
  with pytest.raises(ValueError, match="has 7 classes; tiny names 6"):
    zeroshot.score_split(encoders, model[1], tokenizer, source, "tiny")


def test_openai_prompts_fit_the_tfds_datasets(tmp_path):
  p = zeroshot_prompts
  assert (len(p.IMAGENET_TEMPLATES), len(p.CIFAR_TEMPLATES)) == (80, 18)
  assert all(t.count("{}") == 1 for t in p.IMAGENET_TEMPLATES
             + p.CIFAR_TEMPLATES)
  # Known ImageNet indices (WordNet order) pin the list's alignment.
  assert {i: p.IMAGENET_CLASSES[i] for i in (0, 21, 134, 517, 836, 999)} == {
      0: "tench", 21: "kite (bird of prey)", 134: "crane bird",
      517: "construction crane", 836: "sunglasses", 999: "toilet paper"}
  # CIFAR-100's label file is alphabetical, with "_" for OpenAI's spaces.
  names = [c.replace(" ", "_") for c in p.CIFAR100_CLASSES]
  assert names == sorted(names)
  for task in zeroshot.TASKS.values():  # The real builders, from code only.
    label = tfds.builder(task.dataset, data_dir=str(tmp_path)).info.features[
        task.label_key]
    assert label.num_classes == len(task.classes)
  coco = retrieval.DATASETS["coco_5k"]
  features = tfds.builder(coco.dataset, data_dir=str(tmp_path)).info.features
  assert {"image", coco.id_key, coco.captions_key} <= set(features)
  assert coco.text_key in features[coco.captions_key].feature
  assert features[coco.id_key].np_dtype == np.int64


def test_registered_names():
  assert evals.get("retrieval_coco").splits == {
      "coco_5k": ("coco_captions/2014", "test")}
  assert evals.get("zeroshot_imagenet").splits == {
      "imagenet": ("imagenet2012", "validation")}
  assert evals.get("zeroshot_cifar100").kind == "zeroshot"
  with pytest.raises(ValueError, match="choose from"):
    zeroshot.benchmark_splits("mnist")
  with pytest.raises(ValueError, match="choose from"):
    retrieval.benchmark_splits("flickr")
