"""Tests of hardpos_jax.generate and llm_backend: backends, files, CLI."""

import csv
import json
import pathlib
import re
import subprocess
import sys

from absl import flags
from PIL import Image
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from hardpos_jax import caption_rules
from hardpos_jax import generate
from hardpos_jax import llm_backend
import records
from tfds_builders import registered  # pylint: disable=unused-import
from tfds_builders.coco_hard_pos_neg import layout

tf.config.set_visible_devices([], "GPU")
tfds.disable_progress_bar()

REPO = pathlib.Path(__file__).resolve().parents[1]


# ----------------------------------------------------- the LLM backend ---


@pytest.mark.parametrize(
    "reply, kind, expected",
    [
        (" two antelopes and three giraffes\nInput: x", "swap",
         "two antelopes and three giraffes"),
        ('Output: "two antelope and three giraffes"', "swap",
         "two antelope and three giraffes"),
        ("a dog and a bird", "swap", None),  # Not the same words.
        ("three giraffes and two antelope", "swap", None),  # A copy.
        ("ivory giraffes and two antelope", "replace",
         "ivory giraffes and two antelope"),
        ("ivory giraffes and two gazelles", "replace", None),  # Two changes.
        ("None", "replace", None),
        ("\n\n", "replace", None),
        ("\x0e\x0e\ufffd", "replace", None),
    ],
)
def test_parse_llm_output(reply, kind, expected):
  caption = "three giraffes and two antelope"
  assert llm_backend.parse_llm_output(reply, caption, kind) == expected


def write_tiny_gpt2(path):
  """Writes a randomly initialised byte-level GPT-2 with its tokenizer."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top

  # GPT-2's byte-to-character table: printable bytes map to themselves.
  printable = [b for b in range(256)
               if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
  others = [b for b in range(256) if b not in printable]
  chars = printable + [256 + i for i in range(len(others))]
  vocab = {chr(c): i for i, c in enumerate(chars)}
  vocab["<|endoftext|>"] = len(vocab)
  transformers.GPT2Tokenizer(vocab=vocab, merges=[]).save_pretrained(path)
  torch.manual_seed(0)
  config = transformers.GPT2Config(
      vocab_size=len(vocab), n_positions=1024, n_embd=16, n_layer=1, n_head=2,
      bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)
  transformers.GPT2LMHeadModel(config).save_pretrained(path)


def test_llm_backend_plumbing(tmp_path):
  write_tiny_gpt2(tmp_path / "gpt2")
  backend = llm_backend.LLMBackend(str(tmp_path / "gpt2"), max_new_tokens=8)
  prompts = []
  pipe = backend._pipe

  def recording_pipe(texts, **kwargs):
    prompts.extend(texts)
    return pipe(texts, **kwargs)

  recording_pipe.tokenizer = pipe.tokenizer
  backend._pipe = recording_pipe
  captions = ["a cat and a dog", "a red bus"]
  result = generate.generate(captions, backend)
  # SWAP is asked only where there is an "and"; REPLACE of every caption.
  assert prompts == [
      llm_backend.SWAP_PROMPT.format(caption=captions[0]),
      llm_backend.REPLACE_PROMPT.format(caption=captions[0]),
      llm_backend.REPLACE_PROMPT.format(caption=captions[1]),
  ]
  assert "Input: a bathroom with a sink, toilet and shower" in prompts[0]
  # A random model answers noise, which must become None.
  assert result.hard_positives == [
      caption_rules.HardPositives(None, None),
      caption_rules.HardPositives(None, None)
  ]
  assert len(result.hard_negatives) == 2

  # A parseable reply is kept, with its rule.
  def answering_pipe(texts, **kwargs):
    del kwargs
    return [[{"generated_text": " a dog and a cat\n"}] for _ in texts]

  answering_pipe.tokenizer = pipe.tokenizer
  backend._pipe = answering_pipe
  assert backend.hard_positives(["a cat and a dog"]) == [
      caption_rules.HardPositives(
          swap=caption_rules.Edit("a dog and a cat", "llm_swap"), replace=None)
  ]


def test_backend_choice(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match=r"Unknown backend 'gpt'.*'llm', "):
    generate.make_backend("gpt")
  with pytest.raises(ValueError, match="needs --llm_model"):
    generate.make_backend("llm")
  with pytest.raises(ValueError, match="not a local model directory"):
    generate.make_backend("llm", llm_model=str(tmp_path / "missing"))
  # The rule backend never imports transformers.
  monkeypatch.setitem(sys.modules, "transformers", None)
  generate.generate(["a cat and a dog"], generate.make_backend("rules"))
  # Importing the module claimed no flags.
  assert "llm_model" not in flags.FLAGS and "backend" not in flags.FLAGS


# --------------------------------------------------------------- files ---


def test_read_captions(tmp_path):
  coco = tmp_path / "captions.json"
  coco.write_text(json.dumps({"images": [], "annotations": [
      {"id": 1, "image_id": 2, "caption": "a cat"},
      {"id": 3, "image_id": 2, "caption": "a dog"}]}))
  jsonl = tmp_path / "captions.jsonl"
  jsonl.write_text('"a cat"\n{"caption": "a dog", "id": 7}\n')
  table = tmp_path / "captions.csv"
  table.write_text('id,caption\n1,a cat\n2,"a dog, barking"\n')
  assert generate.read_captions(coco) == ["a cat", "a dog"]
  assert generate.read_captions(jsonl) == ["a cat", "a dog"]
  assert generate.read_captions(table) == ["a cat", "a dog, barking"]


@pytest.mark.parametrize(
    "name, content, needle",
    [
        ("c.jsonl", '"a cat"\n"a dog"\n{"caption": "a\n', "c.jsonl, line 3"),
        ("c.jsonl", '"a cat"\n\n"a dog"\n', "c.jsonl, line 2"),
        ("c.jsonl", '"a cat"\n{"text": "a dog"}\n',
         "c.jsonl, line 2: no 'caption' key"),
        ("c.jsonl", '"a cat"\n"  "\n', "c.jsonl, line 2: the caption is empty"),
        ("c.json", '{"annotations": [{"caption": "a"}, {"caption": 3}]}',
         "c.json, annotations[1]: the caption 3 is not a string"),
        ("c.json", '{"annotations": [\n{"caption": "a"},,\n]}',
         "c.json, line 2"),
        ("c.json", '[{"caption": "a"}]', "not a COCO captions file"),
        ("c.csv", "id,text\n1,a cat\n", "c.csv, line 1: no 'caption' column"),
        ("c.csv", "id,caption\n1,a cat\n2,\n", "c.csv, line 3"),
    ],
)
def test_bad_input_names_file_and_line(tmp_path, name, content, needle):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(generate.InputError, match=re.escape(needle)):
    generate.read_captions(path)


def test_unknown_or_missing_input(tmp_path):
  with pytest.raises(ValueError, match=r"'\.txt'.*'\.csv', '\.json'"):
    generate.read_captions(tmp_path / "captions.txt")
  with pytest.raises(generate.InputError, match="missing.jsonl cannot be"):
    generate.read_captions(tmp_path / "missing.jsonl")


def read_jsonl(path):
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_outputs_are_aligned_and_atomic(tmp_path, capsys):
  captions = ["a cat and a dog on a bed", "zzz qqq", "a white bus"]
  source = tmp_path / "captions.jsonl"
  source.write_text("".join(json.dumps(c) + "\n" for c in captions))
  out = tmp_path / "out"
  counts = generate.generate_files(source, out, seed=1)
  expected = generate.generate(captions, generate.RuleBackend(1), seed=1)
  swap = read_jsonl(out / generate.SWAP_FILE)
  replace = read_jsonl(out / generate.REPLACE_FILE)
  hard_negatives = read_jsonl(out / generate.HARD_NEGATIVE_FILE)
  assert swap == [p.swap.text if p.swap else "None"
                  for p in expected.hard_positives]
  assert replace == [p.replace.text if p.replace else "None"
                     for p in expected.hard_positives]
  assert hard_negatives == [[e.text for e in n]
                            for n in expected.hard_negatives]
  assert swap[1] == replace[1] == "None" and hard_negatives[1] == []
  assert counts == expected.counts
  assert counts["captions"] == 3 and counts["with_swap_hp"] == 1
  printed = capsys.readouterr().out
  assert re.search(r"hp_swap_noun_phrases +1\n", printed)

  # A failure while writing leaves the previous files, and no temporary
  # ones, behind.
  (out / generate.HARD_NEGATIVE_FILE).unlink()
  (out / generate.HARD_NEGATIVE_FILE).parent.rmdir()
  (out / generate.HARD_NEGATIVE_FILE).parent.write_text("in the way")
  before = (out / generate.SWAP_FILE).read_text()
  with pytest.raises(OSError):
    generate.generate_files(source, out, seed=2)
  assert (out / generate.SWAP_FILE).read_text() == before
  assert sorted(p.name for p in out.rglob("*")) == [
      "hard_negatives", "hard_positives_ft", "replace_hp.jsonl",
      "swap_hp.jsonl"]


def test_cli(tmp_path):
  captions = ["three giraffes and two antelope",
              "a white cat sitting near a black dog under a small table"]
  table = tmp_path / "captions.csv"
  with table.open("w", newline="") as f:
    csv.writer(f).writerows([["caption"]] + [[c] for c in captions])
  result = subprocess.run(
      [sys.executable, "-m", "hardpos_jax.generate", f"--input={table}",
       f"--output={tmp_path / 'out'}", "--seed=3"],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert re.search(r"hp_swap_noun_phrases +1\n", result.stdout)
  assert read_jsonl(tmp_path / "out" / generate.SWAP_FILE) == [
      "two antelope and three giraffes", "None"]
  # Another process draws the same choices from the same seed.
  expected = generate.generate(captions, generate.RuleBackend(3), seed=3)
  assert read_jsonl(tmp_path / "out" / generate.REPLACE_FILE) == [
      p.replace.text if p.replace else "None"
      for p in expected.hard_positives]
  assert read_jsonl(tmp_path / "out" / generate.HARD_NEGATIVE_FILE) == [
      [e.text for e in n] for n in expected.hard_negatives]


def test_import_needs_no_tensorflow():
  # A fresh interpreter: this one has imported TF and TFDS already.
  check = ("import sys, hardpos_jax.generate; print(sorted(m for m in"
           " ('tensorflow', 'tensorflow_datasets') if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", check], cwd=REPO,
                          capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == "[]", result.stdout


def test_builder_reads_generated_files(tmp_path):
  manual_dir = tmp_path / "manual"
  captions = ["a white cat and a black dog on a bed", "zzz qqq",
              "a man riding a horse on a beach"]
  coco = {
      "images": [{"id": 9, "file_name": "000000000009.jpg"}],
      "annotations": [{"id": i + 10, "image_id": 9, "caption": c}
                      for i, c in enumerate(captions)],
  }
  captions_path = manual_dir / layout.CAPTIONS_FILE
  captions_path.parent.mkdir(parents=True)
  captions_path.write_text(json.dumps(coco))
  (manual_dir / layout.IMAGE_DIR).mkdir()
  Image.new("RGB", (16, 12), (200, 30, 40)).save(
      manual_dir / layout.IMAGE_DIR / "000000000009.jpg")
  generate.generate_files(captions_path, manual_dir)
  expected = generate.generate(captions, generate.RuleBackend(0))

  builder = tfds.builder("coco_hard_pos_neg", config="coco",
                         data_dir=tmp_path / "tfds")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  examples = {int(r["caption_id"]): r for r in records.caption_rows(
      builder.as_data_source(split="train"))}
  assert sorted(examples) == [10, 11, 12]
  for i, (positive, negative) in enumerate(
      zip(expected.hard_positives, expected.hard_negatives)):
    example = examples[i + 10]
    kinds = [k for k, e in (("swap", positive.swap),
                            ("replace", positive.replace)) if e]
    texts = [e.text for e in (positive.swap, positive.replace) if e]
    assert [t.decode() for t in example["hard_positives"]] == texts
    assert [k.decode() for k in example["hard_positive_kinds"]] == kinds
    assert [t.decode() for t in example["hard_negatives"]] == [
        e.text for e in negative]
  assert len(examples[10]["hard_positives"]) == 2
  assert len(examples[11]["hard_positives"]) == 0
  assert len(examples[12]["hard_negatives"]) == 3
