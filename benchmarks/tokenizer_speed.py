"""Captions/s of hardpos_jax's tokenizer vs transformers' CLIP tokenizers.

One timed run each over the same captions, [N, 77] arrays out. Ours starts
with an empty word cache, so its figure includes filling it; transformers'
tokenizers skip ftfy and HTML unescaping, which ours must do to match OpenAI.

  .venv/bin/python benchmarks/tokenizer_speed.py [--data=DIR] [--limit=N]
"""
import json
import random
import tempfile
import time
from pathlib import Path

from absl import app
from absl import flags

from hardpos_jax.tokenizer import Tokenizer, default_bpe_path

_DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
_BPE = flags.DEFINE_string("bpe", None, "BPE vocabulary; None: the default")
_DATA = flags.DEFINE_string("data", str(_DEFAULT_DATA),
                            "benchmark captions: every **/*.json under it")
_LIMIT = flags.DEFINE_integer("limit", None, "at most this many captions")


def _caption_strings(node, key=""):
  """Every string under a key containing 'caption', in file order."""
  if isinstance(node, dict):
    for k, v in node.items():
      yield from _caption_strings(v, k)
  elif isinstance(node, list):
    for v in node:
      yield from _caption_strings(v, key)
  elif isinstance(node, str) and "caption" in key:
    yield node


def load_captions(data_dir: Path, limit: int | None) -> tuple[list[str], str]:
  """Benchmark captions from `data_dir/**/*.json`, else generated ones."""
  captions = [
      c
      for f in sorted(data_dir.glob("**/*.json"))
      for c in _caption_strings(json.loads(f.read_text()))
  ]
  source = f"{data_dir}/**/*.json"
  if not captions:
    rng = random.Random(0)
    words = "a the red small dog cat man in on near holding two white".split()
    captions = [
        " ".join(rng.choices(words, k=rng.randint(3, 12)))
        for _ in range(100_000)
    ]
    source = "generated (no JSON under the data directory)"
  return captions[:limit], source


def _time(fn, captions: list[str]) -> float:
  start = time.perf_counter()
  fn(captions)
  return len(captions) / (time.perf_counter() - start)


def main(argv) -> None:
  del argv
  captions, source = load_captions(Path(_DATA.value), _LIMIT.value)
  print(f"{len(captions)} captions from {source}")
  ours = Tokenizer(_BPE.value or default_bpe_path())
  rates = {"hardpos_jax.Tokenizer": _time(ours, captions)}

  import transformers  # Only the benchmark needs it.

  hf_dir = tempfile.mkdtemp()
  ours.save_hf(hf_dir)
  classes = {"transformers.CLIPTokenizerFast": transformers.CLIPTokenizerFast}
  # transformers 5 dropped the pure-Python tokenizer: both names are one class.
  if transformers.CLIPTokenizer is not transformers.CLIPTokenizerFast:
    classes["transformers.CLIPTokenizer (slow)"] = transformers.CLIPTokenizer
  for name, cls in classes.items():
    hf = cls.from_pretrained(hf_dir)
    rates[name] = _time(
        lambda texts: hf(
            texts,
            padding="max_length",
            truncation=True,
            max_length=ours.context_length,
            return_tensors="np",
        ),
        captions,
    )
  for name, rate in rates.items():
    print(f"{name:36s} {rate:12,.0f} captions/s")


if __name__ == "__main__":
  app.run(main)
