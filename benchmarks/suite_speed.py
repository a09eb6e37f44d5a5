"""Speed of the evaluation suite, benchmark by benchmark, on this machine.

Each benchmark gets a manual dir in its released format (the layouts of
tfds_builders/ and of the tests' fixtures) with `--items` items in each of
its subsets (splits): hard_positives (replace_att, replace_rel, swap),
sugar_crepe (7), sugar_crepe_pp (5), aro (vg_relation, vg_attribution,
coco_order), winoground (1) and vl_checklist (2 of its corpus files,
attribute/color_vg and relation/spatial_vg; the other files of those two
configs get one row each, since a config builds all its files). Captions are
the released ones where they are at hand, read at run time from `--captions`
(SugarCrepe's files, and hard_positives' REPLACE files, whose rows are
VL-CheckList's), else made from them in the benchmark's style (ARO's
"the X is on the Y", Winoground's pairs from SugarCrepe's swaps). Images are
photo-like 640x480 JPEGs (PNG for Winoground, as released), shared as in the
real benchmarks: REPLACE and SugarCrepe(++) take whole groups of the
released rows by image, so items per image are the release's; ARO and SWAP
crop one picture to two boxes; COCO-Order has 5 captions per image;
Winoground two images per item.

The datasets are built first (timed apart). One `create_encoders` with
random weights then compiles its image tower (its first call: compilation
and one batch) and its text tower at every text length L the evaluator may
use (each length's first call less its second), timed apart, and each
benchmark's selection is evaluated once with `evals.evaluate`, reports
written: the timed run. Within it the evaluator's image encoding (read,
decode, transform, image tower), text encoding (tokenize, text tower),
reading of the items (records, distinct images and texts) and report writing
are timed apart.

The projection for the full benchmarks takes each benchmark's measured cost
per encoded image row and per encoded text row (batches padded to
`--batch_size`) and per item read, times the real benchmarks' distinct
counts (per split, as the evaluator encodes them), plus the run's fixed
seconds; text cost is scaled by the real texts' token length where the
texts are at hand (SugarCrepe's). It is a projection, not a measurement.

  .venv/bin/python benchmarks/suite_speed.py [--items=64] [--variant=B/32]
      [--batch_size=64] [--benchmarks=hard_positives,sugar_crepe,...]
      [--workdir=/tmp/suite_speed] [--captions=../shared/data]
"""

import collections
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import math
import os
from pathlib import Path
import sys
import tempfile
import time

from absl import app
from absl import flags
import jax
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks.photos import photo_like
from hardpos_jax import evals
from hardpos_jax import sharding
from hardpos_jax.evals import encoding
from hardpos_jax.evals import registry
from hardpos_jax.evals import reports
from hardpos_jax.evals import scoring
from hardpos_jax.evals import winoground
from hardpos_jax.models import clip
from hardpos_jax.tokenizer import Tokenizer
from tfds_builders.sugar_crepe_pp.sugar_crepe_pp import SUBSETS as PP_SUBSETS
from tfds_builders.vl_checklist import vl_checklist as vlc_builder
# pylint: enable=g-import-not-at-top,wrong-import-position

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

BENCHMARKS = ("hard_positives", "sugar_crepe", "sugar_crepe_pp", "aro",
              "winoground", "vl_checklist")
# What each benchmark evaluates here: `evals.evaluate` selections.
SELECTIONS = {
    "hard_positives": ["hard_positives"],
    "sugar_crepe": ["sugar_crepe"],
    "sugar_crepe_pp": ["sugar_crepe_pp"],
    "aro": ["aro/vg_relation", "aro/vg_attribution", "aro/coco_order"],
    "winoground": ["winoground"],
    "vl_checklist": ["vl_checklist/attribute/color_vg",
                     "vl_checklist/relation/spatial_vg"],
}
_DEFAULT_CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data"
# hard_positives' REPLACE files: VL-CheckList's rows with a hard positive.
REPLACE_FILES = {"replace_att": "vl_checklist_attributes.json",
                 "replace_rel": "vl_checklist_relations.json"}
CREPE_SUBSETS = ("add_att", "add_obj", "replace_att", "replace_obj",
                 "replace_rel", "swap_att", "swap_obj")
# Split words of REPLACE relation captions ("dog on car") for ARO's VG-R.
RELATIONS = ("on", "in", "behind", "near", "under", "above", "holding",
             "wearing", "riding", "next to", "in front of", "on top of")
IMAGE_SIZE = (640, 480)
COCO_CAPTIONS = 5  # per image, COCO-Order
WINOGROUND_TAGS = (("Noun", "Object"), ("Relation", "Relation"),
                   ("Adjective-Color", "Both"))
# The items of the released benchmarks, their distinct images and texts
# summed over splits (each split encodes its own), and where from; "<="
# marks an upper bound (crops assumed all distinct, texts all distinct).
# sugar_crepe and sugar_crepe_pp are counted from the SugarCrepe files.
FULL = {
    "hard_positives": (56_191, 40_471, 140_000, "",
                       "README: 4,947 + 6,776 REPLACE images + "
                       "28,748 SWAP crops; ~140k texts"),
    "aro": (23_937 + 28_748 + 25_010, 23_937 + 28_748 + 5_000,
            2 * 23_937 + 2 * 28_748 + 5 * 25_010, "<=",
            "ARO: VG-R 23,937 + VG-A 28,748 crops, COCO-Order 25,010 "
            "captions of 5,000 images; texts <= 2, 2, 5 per item"),
    "winoground": (400, 800, 800, "<=",
                   "Winoground: 400 items, 800 images, <= 800 captions"),
}
UNKNOWN = {"vl_checklist": "VL-CheckList: counts unknown (~410K entries "
                           "over all its sources, as a summary of the paper "
                           "gives it; unverified)"}

_ITEMS = flags.DEFINE_integer(
    "items", 64, "items in each subset (split) of each benchmark")
_VARIANT = flags.DEFINE_string("variant", "B/32", "a clip.VARIANTS name")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "evaluator batch")
_BENCHMARKS = flags.DEFINE_list("benchmarks", list(BENCHMARKS),
                                f"which of {', '.join(BENCHMARKS)}")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "manual dirs, TFDS data and reports; a temporary "
    "folder by default (removed at the end)")
_CAPTIONS = flags.DEFINE_string(
    "captions", str(_DEFAULT_CAPTIONS),
    "holds sugar_crepe/<subset>.json and hard_positives/{data,swapped_data}/"
    "vl_checklist_{attributes,relations}.json, as released")


# ------------------------------------------------------------ the images ---


class Pictures:
  """Writes a photo-like picture per key (the same key, the same pixels)
  and counts them.

  A picture is a window of IMAGE_SIZE, at an offset drawn from the key, of
  one of `pool` larger 1/f fields, flipped and its channels permuted: the
  fields' statistics at a few milliseconds a picture (a field of its own
  takes ~50 ms on a busy core).
  """

  def __init__(self, pool: int = 8, scale: int = 3):
    rng = np.random.default_rng(0)
    width, height = IMAGE_SIZE
    self._fields = [photo_like(rng, scale * width, scale * height)
                    for _ in range(pool)]
    self._cache: dict[tuple[str, str], bytes] = {}
    self.written = 0

  def _pixels(self, key: str) -> np.ndarray:
    rng = np.random.default_rng(
        int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    field = self._fields[rng.integers(len(self._fields))]
    (width, height), (rows, cols, _) = IMAGE_SIZE, field.shape
    y, x = rng.integers(rows - height + 1), rng.integers(cols - width + 1)
    window = field[y:y + height, x:x + width]
    if rng.random() < 0.5:
      window = window[:, ::-1]
    return np.ascontiguousarray(window[..., rng.permutation(3)])

  def write(self, path: Path, key: str, fmt: str = "JPEG") -> None:
    if (key, fmt) not in self._cache:
      out = io.BytesIO()
      Image.fromarray(self._pixels(key)).save(
          out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
      self._cache[(key, fmt)] = out.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(self._cache[(key, fmt)])
    self.written += 1


def random_box(rng: np.random.Generator) -> dict[str, int]:
  """An ARO-style bbox inside the picture: 25-90 % of each side."""
  width, height = IMAGE_SIZE
  w, h = (int(rng.uniform(0.25, 0.9) * s) for s in (width, height))
  return {"bbox_x": int(rng.integers(0, width - w)),
          "bbox_y": int(rng.integers(0, height - h)), "bbox_w": w,
          "bbox_h": h}


# ---------------------------------------------------------- the captions ---


@dataclasses.dataclass(frozen=True)
class Captions:
  """Released rows, read at run time.

  Attributes:
    replace: {replace_att/replace_rel: rows with image_id, image_path,
      true_caption, false_caption and hard_positive}.
    crepe: {SugarCrepe subset: rows with filename, caption,
      negative_caption}, in file order.
  """

  replace: dict[str, list[dict]]
  crepe: dict[str, list[dict]]


def read_captions(root: Path) -> Captions:
  replace = {}
  for subset, name in REPLACE_FILES.items():
    data, swapped = (json.loads((root / "hard_positives" / folder / name)
                                .read_text())
                     for folder in ("data", "swapped_data"))
    replace[subset] = [{**r, "hard_positive": s["true_caption"]}
                       for r, s in zip(data, swapped)]
  crepe = {s: list(json.loads((root / "sugar_crepe" / f"{s}.json")
                              .read_text()).values())
           for s in CREPE_SUBSETS}
  return Captions(replace, crepe)


def by_groups(rows: list[dict], key: str, count: int,
              skip: int = 0) -> list[dict]:
  """The first `count` rows of whole groups of rows with the same `key`
  (groups in order of first appearance, after the first `skip` rows), so
  that the rows per key are the release's."""
  groups: dict[str, list[dict]] = {}
  for row in rows[skip:]:
    groups.setdefault(row[key], []).append(row)
  out = []
  for group in groups.values():
    if len(out) >= count:
      break
    out += group
  return out[:count]


def paraphrase(caption: str) -> str:
  """A second positive in SugarCrepe++'s style: same meaning, other words."""
  text = caption.strip().rstrip(".")
  return f"There is {text[0].lower()}{text[1:]} in this picture."


def attribute_pairs(captions: Captions) -> list[tuple[str, str]]:
  """(adjective, noun) of the two-word REPLACE attribute captions."""
  pairs = [tuple(r["true_caption"].split())
           for r in captions.replace["replace_att"]]
  return list(dict.fromkeys(p for p in pairs if len(p) == 2))


def relation_triples(captions: Captions) -> list[tuple[str, str, str]]:
  """(subject, relation, object) of REPLACE relation captions."""
  out = []
  for row in captions.replace["replace_rel"]:
    words = f" {row['true_caption']} "
    for relation in sorted(RELATIONS, key=len, reverse=True):
      subject, sep, obj = words.partition(f" {relation} ")
      if sep and subject.strip() and obj.strip():
        out.append((subject.strip(), relation, obj.strip()))
        break
  return list(dict.fromkeys(out))


# ------------------------------------------------------- the manual dirs ---


def write_json(path: Path, value) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(value))


def write_hard_positives(root: Path, n: int, captions: Captions,
                         pictures: Pictures) -> None:
  """data/ and swapped_data/ with REPLACE's released rows (whole image
  groups) and SWAP rows in ARO's VG-Attribution format; images as the
  builder reads them (REPLACE at image_path, SWAP under images/)."""
  for subset, name in REPLACE_FILES.items():
    rows = by_groups(captions.replace[subset], "image_id", n)
    for folder, positive in (("data", "true_caption"),
                             ("swapped_data", "hard_positive")):
      write_json(root / folder / name, [
          {"image_id": r["image_id"], "image_path": r["image_path"],
           "true_caption": r[positive], "false_caption": r["false_caption"]}
          for r in rows])
    for image_id, path in dict.fromkeys(
        (r["image_id"], r["image_path"]) for r in rows):
      pictures.write(root / path, f"vg/{image_id}")
  data, swapped = [], []
  rng = np.random.default_rng(1)
  pairs = attribute_pairs(captions)
  for i in range(n):
    (a1, n1), (a2, n2) = pairs[(2 * i) % len(pairs)], pairs[
        (2 * i + 1) % len(pairs)]
    row = {"image_path": f"{1_000_000 + i // 2}.jpg", **random_box(rng),
           "false_caption": f"the {a2} {n1} and the {a1} {n2}",
           "attributes": [a1, a2]}
    data.append({**row, "true_caption": f"the {a1} {n1} and the {a2} {n2}"})
    swapped.append({**row,
                    "true_caption": f"the {a2} {n2} and the {a1} {n1}"})
  write_json(root / "data" / "visual_genome_attribution.json", data)
  write_json(root / "swapped_data" / "visual_genome_attribution.json",
             swapped)
  for path in dict.fromkeys(r["image_path"] for r in data):
    pictures.write(root / "images" / path, f"vg/{Path(path).stem}")


def write_sugar_crepe(root: Path, n: int, captions: Captions,
                      pictures: Pictures) -> None:
  """data/<subset>.json ({id: row}) and val2017/, the released rows."""
  for subset in CREPE_SUBSETS:
    rows = by_groups(captions.crepe[subset], "filename", n)
    write_json(root / "data" / f"{subset}.json",
               {str(i): r for i, r in enumerate(rows)})
    for filename in dict.fromkeys(r["filename"] for r in rows):
      pictures.write(root / "val2017" / filename, f"coco/{filename}")


def write_sugar_crepe_pp(root: Path, n: int, captions: Captions,
                         pictures: Pictures) -> None:
  """data/<subset>.json (lists) and val2017/: SugarCrepe's rows of the same
  subset (SugarCrepe++'s items are on them) with a paraphrase as P2."""
  for subset in PP_SUBSETS:
    rows = by_groups(captions.crepe[subset], "filename", n)
    write_json(root / "data" / f"{subset}.json", [
        {"id": i, "filename": r["filename"], "caption": r["caption"],
         "caption2": paraphrase(r["caption"]),
         "negative_caption": r["negative_caption"]}
        for i, r in enumerate(rows)])
    for filename in dict.fromkeys(r["filename"] for r in rows):
      pictures.write(root / "val2017" / filename, f"coco/{filename}")


def write_aro(root: Path, n: int, captions: Captions,
              pictures: Pictures) -> None:
  """visual_genome_{relation,attribution}.json with images/ (two boxes per
  picture), coco_karpathy_test.json with val2014/ (5 captions each)."""
  rng = np.random.default_rng(2)
  triples = relation_triples(captions)
  relation = [
      {"image_path": f"{2_000_000 + i // 2}.jpg", **random_box(rng),
       "true_caption": f"the {s} is {r} the {o}",
       "false_caption": f"the {o} is {r} the {s}", "relation_name": r}
      for i, (s, r, o) in enumerate(triples[j % len(triples)]
                                    for j in range(n))]
  pairs = attribute_pairs(captions)[::-1]
  attribution = []
  for i in range(n):
    (a1, n1), (a2, n2) = pairs[(2 * i) % len(pairs)], pairs[
        (2 * i + 1) % len(pairs)]
    attribution.append({
        "image_path": f"{3_000_000 + i // 2}.jpg", **random_box(rng),
        "true_caption": f"the {a1} {n1} and the {a2} {n2}",
        "false_caption": f"the {a2} {n1} and the {a1} {n2}",
        "attributes": [a1, a2]})
  write_json(root / "visual_genome_relation.json", relation)
  write_json(root / "visual_genome_attribution.json", attribution)
  for path in dict.fromkeys(r["image_path"]
                            for r in relation + attribution):
    pictures.write(root / "images" / path, f"vg/{Path(path).stem}")
  texts = list(dict.fromkeys(r["caption"] for s in CREPE_SUBSETS
                             for r in captions.crepe[s]))
  coco = []
  for i in range(math.ceil(n / COCO_CAPTIONS)):
    first = i * COCO_CAPTIONS
    coco.append({"image": f"val2014/COCO_val2014_{400_000 + i:012d}.jpg",
                 "caption": texts[first:min(first + COCO_CAPTIONS, n)],
                 "image_id": f"{400_000 + i}"})
    pictures.write(root / coco[-1]["image"], coco[-1]["image"])
  write_json(root / "coco_karpathy_test.json", coco)


def write_winoground(root: Path, n: int, captions: Captions,
                     pictures: Pictures) -> None:
  """data/examples.jsonl and data/images/ex_<i>_img_<j>.png: two pictures
  per item; caption pairs are SugarCrepe's swaps (same words, reordered)."""
  pairs = [(r["caption"], r["negative_caption"])
           for s in ("swap_obj", "swap_att") for r in captions.crepe[s]]
  lines = []
  for i in range(n):
    tag, collapsed = WINOGROUND_TAGS[i % len(WINOGROUND_TAGS)]
    c0, c1 = pairs[i % len(pairs)]
    lines.append(json.dumps({
        "id": i, "caption_0": c0, "caption_1": c1, "image_0": f"ex_{i}_img_0",
        "image_1": f"ex_{i}_img_1", "tag": tag, "secondary_tag": "",
        "num_main_preds": 1, "collapsed_tag": collapsed}))
    for j in (0, 1):
      pictures.write(root / "data" / "images" / f"ex_{i}_img_{j}.png",
                     f"winoground/{i}/{j}", fmt="PNG")
  (root / "data" / "examples.jsonl").write_text("\n".join(lines) + "\n")


def write_vl_checklist(root: Path, n: int, captions: Captions,
                       pictures: Pictures) -> None:
  """Attribute/vg/color.json and Relation/vg/spatial.json with n rows each
  (VL-CheckList's rows: REPLACE's, from the middle of its files, whole image
  groups), images under vg/; every other file of the two configs one row."""
  chosen = {"data/Attribute/vg/color.json": "replace_att",
            "data/Relation/vg/spatial.json": "replace_rel"}
  filler = None
  for path, subset in chosen.items():
    rows = captions.replace[subset]
    rows = by_groups(rows, "image_id", n, skip=len(rows) // 2)
    write_json(root / path, [
        [r["image_path"].removeprefix("data/"),
         {"POS": [r["true_caption"]], "NEG": [r["false_caption"]]}]
        for r in rows])
    for image_id, image_path in dict.fromkeys(
        (r["image_id"], r["image_path"]) for r in rows):
      pictures.write(root / "vg" / image_path.removeprefix("data/"),
                     f"vg/{image_id}")
    filler = filler or {"POS": [rows[0]["true_caption"]],
                        "NEG": [rows[0]["false_caption"]]}
  for f in vlc_builder.FILES:
    if f.category in ("attribute", "relation") and f.path not in chosen:
      write_json(root / f.path, [["filler.jpg", filler]])
      pictures.write(root / f.image_root / "filler.jpg", "filler")


WRITERS = {
    "hard_positives": write_hard_positives,
    "sugar_crepe": write_sugar_crepe,
    "sugar_crepe_pp": write_sugar_crepe_pp,
    "aro": write_aro,
    "winoground": write_winoground,
    "vl_checklist": write_vl_checklist,
}


# ----------------------------------------------------------- the timings ---


@dataclasses.dataclass
class Cost:
  """One benchmark's run: seconds in each part and what was encoded."""

  seconds: float = 0.0
  image_s: float = 0.0
  text_s: float = 0.0
  read_s: float = 0.0  # reading records, finding distinct images and texts
  report_s: float = 0.0
  images: int = 0
  texts: int = 0
  image_rows: int = 0  # padded to batches
  text_rows: int = 0
  lengths: collections.Counter = dataclasses.field(
      default_factory=collections.Counter)  # {L: texts}

  @property
  def fixed_s(self) -> float:
    """What does not grow with the items: opening splits, placing params,
    metrics, reports."""
    return self.seconds - self.image_s - self.text_s - self.read_s


@contextlib.contextmanager
def metered(cost: Cost, batch: int):
  """Times the evaluator's read_items, encode_images, encode_texts and
  report writing into `cost` (wrapping the module functions the kinds
  call)."""

  def padded(count: int) -> int:
    return math.ceil(count / batch) * batch

  def encode_images(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    cost.image_s += time.perf_counter() - start
    cost.images += len(out)
    cost.image_rows += padded(len(out))
    return out

  def encode_texts(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    cost.text_s += time.perf_counter() - start
    cost.texts += len(out[0])
    cost.text_rows += padded(len(out[0]))
    cost.lengths[out[1]] += len(out[0])
    return out

  def timer(field, fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    setattr(cost, field, getattr(cost, field) + time.perf_counter() - start)
    return out

  read = functools.partial(timer, "read_s")
  write = functools.partial(timer, "report_s")

  patches = [(module, name, wrapper)
             for module in (encoding, scoring)
             for name, wrapper in (("encode_images", encode_images),
                                   ("encode_texts", encode_texts))]
  patches += [(scoring, "read_items", read), (winoground, "read_items", read),
              (reports, "write", write), (reports, "write_combined", write)]
  originals = [(module, name, getattr(module, name))
               for module, name, _ in patches]
  for (module, name, wrapper), (_, _, fn) in zip(patches, originals):
    setattr(module, name, functools.partial(wrapper, fn))
  try:
    yield cost
  finally:
    for module, name, fn in originals:
      setattr(module, name, fn)


def compile_towers(encoders: encoding.Encoders, params
                   ) -> tuple[float, float, int]:
  """Compiles the image tower, and the text tower at every L the evaluator
  may run it at (multiples of the bucket, and the full context).

  Returns:
    (the image tower's first call, compilation and one batch; the text
    tower's compilation, each length's first call less its second; the
    number of lengths). A second image batch would take as long again as
    the image tower's share of the run's seconds per batch.
  """
  params = sharding.replicate(params, encoders.mesh)
  b, s, c = encoders.batch_size, encoders.image_size, encoders.context_length
  bucket = clip.text_bucket(encoders.model_config)
  lengths = sorted({min(c, n) for n in range(bucket, c + bucket, bucket)}
                   if bucket else {c})
  inputs = [(encoders.image_fn, np.zeros((b, s, s, 3), np.float32))]
  inputs += [(encoders.text_fn, np.ones((b, n), np.int32)) for n in lengths]
  seconds = []
  for i, (fn, x) in enumerate(inputs):
    x = jax.device_put(x, encoders.batch_sharding)
    calls = []
    for _ in range(1 if i == 0 else 2):
      start = time.perf_counter()
      jax.block_until_ready(fn(params, x))
      calls.append(time.perf_counter() - start)
    seconds.append(calls[0] - sum(calls[1:]))
  return seconds[0], sum(seconds[1:]), len(lengths)


def mean_length(lengths: collections.Counter) -> float:
  return sum(k * v for k, v in lengths.items()) / max(1, sum(lengths.values()))


def crepe_full(captions: Captions, tokenizer: Tokenizer, config: dict
               ) -> dict[str, tuple]:
  """FULL rows of sugar_crepe and sugar_crepe_pp from SugarCrepe's files,
  with the texts' mean L (each split's length rule, as the evaluator)."""
  out = {}
  for name, subsets, per_item in (("sugar_crepe", CREPE_SUBSETS, 0),
                                  ("sugar_crepe_pp", PP_SUBSETS, 1)):
    items = images = texts = 0
    lengths = collections.Counter()
    for subset in subsets:
      rows = captions.crepe[subset]
      unique = list(dict.fromkeys(t for r in rows for t in (
          r["caption"], r["negative_caption"])))
      count = len(unique) + per_item * len(rows)  # + one P2 per item
      length = clip.text_length(config, tokenizer(unique, 77))
      items, texts = items + len(rows), texts + count
      images += len({r["filename"] for r in rows})
      lengths[length] += count
    source = ("SugarCrepe's files" if not per_item else
              "SugarCrepe's files for its 5 subsets (SugarCrepe++'s items "
              "are on them); texts <= 2 + 1 P2 per item")
    out[name] = (items, images, texts, "<=" if per_item else "", source,
                 mean_length(lengths))
  return out


def load() -> str:
  """The 1, 5 and 15 minute load averages (other users' work included)."""
  return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main(argv) -> None:
  del argv
  unknown = set(_BENCHMARKS.value) - set(BENCHMARKS)
  if unknown:
    raise app.UsageError(f"unknown benchmarks {sorted(unknown)}; choose "
                         f"from {BENCHMARKS}")
  names = [b for b in BENCHMARKS if b in _BENCHMARKS.value]
  n, batch = _ITEMS.value, _BATCH_SIZE.value
  begin = time.perf_counter()
  with contextlib.ExitStack() as stack:
    workdir = Path(_WORKDIR.value or stack.enter_context(
        tempfile.TemporaryDirectory(prefix="suite_speed_")))
    manual, data_dir = workdir / f"manual_{n}", str(workdir / f"tfds_{n}")
    captions = read_captions(Path(_CAPTIONS.value))
    tokenizer = Tokenizer()
    config = clip.model_config(_VARIANT.value)
    params = clip.init_params(config, jax.random.key(0))
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    print(f"model {_VARIANT.value} (random weights), batch {batch}, "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s), "
          f"{os.cpu_count()} CPU threads; {n} items per subset; {workdir}; "
          f"load average {load()}")

    build_rows, counts, pictures = [], {}, Pictures()
    for name in names:
      start, written = time.perf_counter(), pictures.written
      WRITERS[name](manual / name, n, captions, pictures)
      write_s = time.perf_counter() - start
      start = time.perf_counter()
      items = 0
      for selected in registry.select(SELECTIONS[name]):
        sources, _ = selected.evaluator.open(
            selected.subsets, data_dir=data_dir, manual_dir=str(manual))
        items += sum(len(s) for s in sources.values())
      counts[name] = items
      build_rows.append([name, f"{pictures.written - written}",
                         f"{write_s:.1f}",
                         f"{time.perf_counter() - start:.1f}"])
    print("\nManual dirs written and TFDS datasets built (not eval time):\n")
    print(table(["benchmark", "image files", "write s", "build s"],
                build_rows))

    encoders = evals.create_encoders(config, mesh, batch)
    image_first_s, text_compile_s, num_lengths = compile_towers(
        encoders, params)
    compile_s = image_first_s + text_compile_s
    print(f"\nCompiling (not eval time): image tower {image_first_s:.1f} s "
          f"(its first call: compilation and one batch), text tower "
          f"{text_compile_s:.1f} s at {num_lengths} lengths L")
    timed = {}
    for name in names:
      out_dir = str(workdir / "reports" / name)
      with metered(Cost(), batch) as cost:
        start = time.perf_counter()
        evals.evaluate(encoders, params, tokenizer, SELECTIONS[name],
                       data_dir=data_dir, manual_dir=str(manual),
                       out_dir=out_dir)
        cost.seconds = time.perf_counter() - start
      timed[name] = cost

    rows = []
    for name in names:
      c = timed[name]
      rows.append([name, f"{counts[name]}", f"{c.images}", f"{c.texts}",
                   f"{c.seconds:.1f}", f"{counts[name] / c.seconds:.1f}",
                   f"{c.images / c.seconds:.1f}",
                   f"{c.texts / c.seconds:.1f}"])
    total = Cost(seconds=sum(timed[b].seconds for b in names),
                 images=sum(timed[b].images for b in names),
                 texts=sum(timed[b].texts for b in names))
    items = sum(counts.values())
    rows.append(["**total**", f"{items}", f"{total.images}",
                 f"{total.texts}", f"{total.seconds:.1f}",
                 f"{items / total.seconds:.1f}",
                 f"{total.images / total.seconds:.1f}",
                 f"{total.texts / total.seconds:.1f}"])
    print("\nTimed run (compiled; `evals.evaluate` per benchmark, reports "
          "written; distinct images and texts summed over splits, as each "
          f"split encodes its own; load average after it {load()}):\n")
    print(table(["benchmark", "items", "distinct images", "distinct texts",
                 "seconds", "items/s", "images/s", "texts/s"], rows))

    rows = []
    for name in names:
      c = timed[name]
      lengths = ", ".join(str(k) for k in sorted(c.lengths))
      rows.append([
          name, f"{c.seconds:.1f}",
          f"{c.image_s:.1f} ({c.image_rows})",
          f"{c.text_s:.1f} ({c.text_rows})", lengths, f"{c.read_s:.1f}",
          f"{c.fixed_s:.1f} ({c.report_s:.1f})"])
    print(f"\nWhere the timed run's seconds go (rows encoded, padded to "
          f"batches of {batch}; read: the items' records and texts; fixed: "
          f"opening splits, placing params, metrics, reports):\n")
    print(table(["benchmark", "seconds", "image s (rows)",
                 "text s (rows)", "L", "read s", "fixed s (reports)"],
                rows))

    full = {**FULL, **crepe_full(captions, tokenizer, config)}
    rows, sums = [], np.zeros(4)
    for name in names:
      if name not in full:
        rows.append([name, "unknown", "unknown", "unknown", "-", "-",
                     UNKNOWN.get(name, "")])
        continue
      f_items, f_images, f_texts, bound, source, *length = full[name]
      c = timed[name]
      scale = length[0] / mean_length(c.lengths) if length else 1.0
      image_s = f_images * c.image_s / c.image_rows
      text_s = f_texts * scale * c.text_s / c.text_rows
      read_s = f_items * c.read_s / counts[name]
      minutes = (image_s + text_s + read_s + c.fixed_s) / 60
      sums += (f_items, f_images, f_texts, minutes)
      if length:
        source += (f"; text cost scaled by L {length[0]:.1f} (full) / "
                   f"{mean_length(c.lengths):.1f} (run)")
      rows.append([name, f"{f_items:,}", f"{bound}{f_images:,}",
                   f"{bound}{f_texts:,}",
                   f"{image_s / 60:.1f} + {text_s / 60:.1f} + "
                   f"{read_s / 60:.1f} + {c.fixed_s / 60:.1f}",
                   f"{minutes:.1f}", source])
    rows.append(["**total** (known)", f"{sums[0]:,.0f}", f"{sums[1]:,.0f}",
                 f"{sums[2]:,.0f}", "", f"{sums[3]:.1f}", ""])
    print(f"\nPROJECTION (not measured) for the full benchmarks on this "
          f"machine: the timed run's cost per padded image row, per padded "
          f"text row and per item read, times the real distinct counts (per "
          f"split), plus the run's fixed seconds; \"<=\" counts are upper "
          f"bounds; compilation (< {compile_s:.0f} s here) is extra:\n")
    print(table(["benchmark", "items", "distinct images", "distinct texts",
                 "min: images + texts + read + fixed", "minutes",
                 "counts from"],
                rows))
    print(f"\nwall time {time.perf_counter() - begin:.0f} s")


if __name__ == "__main__":
  app.run(main)
