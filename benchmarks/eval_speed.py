"""Items/s of the evaluator vs a per-item loop in the paper's style.

The benchmark has the real subsets' shape (56,191 items: replace_att 10,575
on 4,947 images, replace_rel 16,868 on 6,776, swap 28,748 with an image
each), or the first `--scale` fraction of each subset, held in memory (no
TFDS reads on either side). Images are smooth random JPEGs of Visual
Genome's typical size. REPLACE items take the released captions and image
ids when `--data` holds the released files (their texts repeat across items,
which the evaluator encodes once); otherwise, and for SWAP, captions of 3-8
words are generated. Both sides use the same model, tokenizer, OpenAI eval
transform and decoding threads.

  * evaluator: `scoring.score_split` on each subset, timed end to end,
    compilation included.
  * where the time goes: the evaluator's parts timed apart (decoding and
    OpenAI's transform of one image on one thread, a compiled image-tower
    and text-tower batch, their compilation), the image tower's rate against
    its FLOP-bound rate at the matmul peak measured in the same run, and the
    full 56,191-item benchmark's time projected from these.
  * per-item loop (run_eval.py's style): batches of 16 items; each item
    decodes its image and tokenizes its 3 captions at 77 tokens; one jitted
    call embeds the 16 images, one the 48 captions. It is timed on the first
    `--loop_items` items (after one untimed batch that compiles) and its
    rate is extrapolated to the whole benchmark.

  .venv/bin/python benchmarks/eval_speed.py [--scale=0.1] [--variant=small]
      [--data=../shared/data/hard_positives]
"""

import concurrent.futures
import functools
import io
import json
import os
from pathlib import Path
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# pylint: disable=g-import-not-at-top,wrong-import-position
from benchmarks import flops
from hardpos_jax.evals import metrics
from hardpos_jax.data import eval_transform
from hardpos_jax.evals import hard_positives
from hardpos_jax.evals import encoding
from hardpos_jax.evals import scoring
from hardpos_jax.models import clip
from hardpos_jax.tokenizer import Tokenizer
# pylint: enable=g-import-not-at-top,wrong-import-position

# (items, images) of the released subsets; swap crops a region per item.
SHAPES = {"replace_att": (10_575, 4_947), "replace_rel": (16_868, 6_776),
          "swap": (28_748, 28_748)}
_DEFAULT_DATA = (Path(__file__).resolve().parents[2] / "shared" / "data"
                 / "hard_positives")
# The released files of the REPLACE subsets (data/ and swapped_data/).
RELEASED_FILES = {"replace_att": "vl_checklist_attributes.json",
                  "replace_rel": "vl_checklist_relations.json"}
# Visual Genome images are mostly 500 pixels on the long side.
IMAGE_SIZE = (500, 375)
LOOP_BATCH = 16  # run_eval.py's batch of items
NOUNS = ("man woman boy girl dog cat horse cow sheep bird car bus truck bike "
         "train boat plane tree bush flower grass table chair bench bed "
         "couch lamp shirt jacket hat shoe bag plate cup bowl bottle sign "
         "building house window door wall fence pole street road sidewalk "
         "sky cloud water wave rock sand snow field mountain hill kite "
         "umbrella clock tower pizza cake").split()
# Attribute -> a synonym, as the benchmark's replace hard positives.
SYNONYMS = {"white": "ivory", "black": "ebony", "blue": "sapphire",
            "brown": "chestnut", "red": "crimson", "green": "emerald",
            "large": "big", "small": "tiny", "long": "lengthy",
            "old": "aged", "young": "youthful", "wet": "damp"}
RELATIONS = ("in", "on", "near", "behind", "under", "holding", "wearing",
             "above", "next to", "riding")
_SCALE = flags.DEFINE_float("scale", 1.0,
                            "fraction of each subset's items and images")
_VARIANT = flags.DEFINE_string("variant", "small",
                               "'small' or a clip.VARIANTS name such as B/32")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "evaluator batch")
_LOOP_ITEMS = flags.DEFINE_integer("loop_items", 800,
                                   "items the per-item loop is timed on")
_DATA = flags.DEFINE_string("data", str(_DEFAULT_DATA),
                            "the released hard_positives files, if any")

# Small enough to time on two CPU cores; `--variant B/32` for the real size.
SMALL = dict(
    image=dict(width=256, depth=4, num_heads=4, mlp_dim=1024, patch_size=32),
    text=dict(width=256, depth=4, num_heads=4, mlp_dim=1024),
    embed_dim=256, image_size=224)


class MemorySource:
  """A split held in memory, read like a TFDS data source."""

  def __init__(self, records: list[dict]):
    self.records = records

  def __len__(self) -> int:
    return len(self.records)

  def __getitems__(self, positions: list[int]) -> list[dict]:
    return [self.records[p] for p in positions]


def _jpeg(seed: int) -> bytes:
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (6, 8, 3), np.uint8)
  image = Image.fromarray(small).resize(IMAGE_SIZE, Image.Resampling.BILINEAR)
  out = io.BytesIO()
  image.save(out, format="JPEG", quality=90)
  return out.getvalue()


def _item(rng: np.random.Generator) -> dict[str, str]:
  """A caption of 3-8 words, a hard negative and a hard positive."""
  a, b = rng.choice(NOUNS, 2, replace=False)
  att, other = rng.choice(list(SYNONYMS), 2, replace=False)
  words = ["a", att, a]
  if rng.random() < 0.7:
    words += [rng.choice(RELATIONS), "the", rng.choice(list(SYNONYMS)), b]
  negative = [other if w == att else w for w in words]
  positive = [SYNONYMS[att] if w == att else w for w in words]
  return {"caption": " ".join(words), "hard_negative": " ".join(negative),
          "hard_positive": " ".join(positive)}


def _released_items(data_dir: Path, subset: str,
                    num_items: int) -> list[tuple[str, dict]] | None:
  """(image id, texts) of a subset's first items, if its files are there."""
  paths = [data_dir / folder / RELEASED_FILES.get(subset, "-")
           for folder in ("data", "swapped_data")]
  if not all(p.is_file() for p in paths):
    return None
  data, swapped = (json.loads(p.read_text())[:num_items] for p in paths)
  return [(r["image_id"], {"caption": r["true_caption"],
                           "hard_negative": r["false_caption"],
                           "hard_positive": s["true_caption"]})
          for r, s in zip(data, swapped)]


def make_benchmark(scale: float, data_dir: Path,
                   workers: concurrent.futures.Executor) -> dict:
  """{subset: (MemorySource, where its captions come from)}."""
  sources, seed = {}, 0
  for subset, (num_items, num_images) in SHAPES.items():
    num_items = max(1, round(scale * num_items))
    items, origin = _released_items(data_dir, subset, num_items), "released"
    if items is None:
      num_images = max(1, min(num_items, round(scale * num_images)))
      rng = np.random.default_rng(seed)
      items = [(i % num_images, _item(rng)) for i in range(num_items)]
      origin = "generated"
    keys = list(dict.fromkeys(key for key, _ in items))
    images = dict(zip(keys, workers.map(_jpeg,
                                        range(seed, seed + len(keys)))))
    seed += len(keys)
    sources[subset] = (MemorySource([
        {"image": images[key], "index": i, **texts}
        for i, (key, texts) in enumerate(items)]), origin)
  return sources


def per_item_loop(config: dict, params, tokenizer: Tokenizer, source,
                  count: int, workers) -> tuple[np.ndarray, float]:
  """Scores the first `count` items in batches of 16; returns ([n, 3], s)."""
  image_fn, text_fn = (functools.partial(fn, params)
                       for fn in clip.towers(config))
  keys = hard_positives.TEXT_KEYS

  def batch_scores(records):
    pixels = np.stack(list(workers.map(
        lambda r: eval_transform.clip_eval_image(
            eval_transform.decode_rgb(r["image"]), config["image_size"]),
        records)))
    ids = tokenizer([r[k] for r in records for k in keys], 77)
    zimg = np.asarray(image_fn(pixels))
    ztxt = np.asarray(text_fn(ids)).reshape(len(records), len(keys), -1)
    return np.einsum("nd,nkd->nk", zimg, ztxt)

  batches = [source.__getitems__(list(range(i, min(i + LOOP_BATCH, count))))
             for i in range(0, count, LOOP_BATCH)]
  batch_scores(batches[0])  # Compiles; the paper's loop pays no compile.
  start = time.perf_counter()
  scores = [batch_scores(b) for b in batches if len(b) == LOOP_BATCH]
  return np.concatenate(scores), time.perf_counter() - start


def timed(fn, repeats: int = 3) -> tuple[float, float]:
  """(seconds of the first call, median seconds of `repeats` more)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def where_time_goes(config: dict, params, encoders: encoding.Encoders,
                    sources: dict, scores: dict) -> None:
  """Times the evaluator's parts apart and projects the full benchmark."""
  size, batch = config["image_size"], encoders.batch_size
  jpegs = [r["image"] for r in sources["swap"].records[:32]]
  start = time.perf_counter()
  pixels = [eval_transform.clip_eval_image(eval_transform.decode_rgb(j), size)
            for j in jpegs]
  decode_s = (time.perf_counter() - start) / len(jpegs)
  # Fresh towers, so that their first call compiles.
  image_fn, text_fn = clip.towers(config, encoders.precision,
                                  encoders.replicated)
  params = jax.device_put(params, encoders.replicated)
  images = jax.device_put(np.stack((pixels * batch)[:batch]),
                          encoders.batch_sharding)
  image_first, image_s = timed(lambda: image_fn(params, images))
  length = max(s.text_length for s in scores.values())
  texts = jax.device_put(np.ones((batch, length), np.int32),
                         encoders.batch_sharding)
  text_first, text_s = timed(lambda: text_fn(params, texts))
  peak = flops.matmul_peak("float32")
  bound = peak / flops.forward_flops(config, 1, 0, 0)
  rate = batch / image_s
  print(f"image: decode + transform {1e3 * decode_s:.1f} ms per image on one "
        f"thread; tower {rate:.1f} images/s compiled, batch {batch} "
        f"({100 * rate / bound:.0f} % of the {bound:.1f} images/s FLOP bound "
        f"at the {peak / 1e9:.0f} GFLOP/s matmul peak); compile "
        f"{image_first - image_s:.1f} s")
  print(f"text:  tower {batch / text_s:.0f} texts/s at L={length}; compile "
        f"{text_first - text_s:.1f} s per length")
  items = sum(len(s.index) for s in scores.values())
  full_items = sum(n for n, _ in SHAPES.values())
  full_images = sum(m for _, m in SHAPES.values())
  full_texts = sum(s.num_texts for s in scores.values()) * full_items / items
  lengths = len({s.text_length for s in scores.values()})
  compile_s = image_first - image_s + lengths * (text_first - text_s)
  towers_s = (full_images * image_s + full_texts * text_s) / batch
  print(f"projected full benchmark ({full_items} items, {full_images} images, "
        f"~{full_texts:.0f} texts): {(compile_s + towers_s) / 60:.1f} min on "
        f"the towers ({compile_s:.0f} s compiling), plus "
        f"{full_images * decode_s / os.cpu_count() / 60:.1f} min of decoding "
        f"if it does not overlap")


def main(argv) -> None:
  del argv
  tokenizer = Tokenizer()
  config = (clip.model_config(**SMALL) if _VARIANT.value == "small"
            else clip.model_config(_VARIANT.value))
  params = clip.init_params(config, jax.random.key(0))
  mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
  workers = concurrent.futures.ThreadPoolExecutor(os.cpu_count())
  start = time.perf_counter()
  sources = make_benchmark(_SCALE.value, Path(_DATA.value), workers)
  origins = {k: origin for k, (_, origin) in sources.items()}
  sources = {k: source for k, (source, _) in sources.items()}
  total = sum(len(s) for s in sources.values())
  print(f"{total} items generated in {time.perf_counter() - start:.0f} s; "
        f"model {_VARIANT.value}, {jax.device_count()} "
        f"{jax.devices()[0].platform} device(s), {os.cpu_count()} CPU threads")

  encoders = encoding.create_encoders(config, mesh, _BATCH_SIZE.value)
  start = time.perf_counter()
  scores = {subset: scoring.score_split(encoders, params, tokenizer, source,
                                        hard_positives.TEXT_KEYS,
                                        hard_positives.INDEX_KEY)
            for subset, source in sources.items()}
  seconds = time.perf_counter() - start
  for subset, s in scores.items():
    print(f"  {subset}: {len(s.index)} items, {s.num_images} images, "
          f"{s.num_texts} {origins[subset]} texts at L={s.text_length}")
  print(f"evaluator      {total / seconds:10.1f} items/s  ({seconds:.1f} s, "
        "compilation included)")
  where_time_goes(config, params, encoders, sources, scores)

  sample = min(_LOOP_ITEMS.value, len(sources["swap"]))
  loop_scores, loop_seconds = per_item_loop(config, params, tokenizer,
                                            sources["swap"], sample, workers)
  rate = len(loop_scores) / loop_seconds
  print(f"per-item loop  {rate:10.1f} items/s  (timed on {len(loop_scores)} "
        f"swap items; {total / rate:.0f} s for all {total}, extrapolated)")
  print(f"speed-up       {total / seconds / rate:10.1f}x")
  diff = np.abs(loop_scores - scores["swap"].scores[:len(loop_scores)]).max()
  same = (metrics.hard_positive_metrics(*loop_scores.T)
          == metrics.hard_positive_metrics(
              *scores["swap"].scores[:len(loop_scores)].T))
  print(f"check: largest score difference on the timed items {diff:.1e}, "
        f"same metrics: {same}")


if __name__ == "__main__":
  app.run(main)
