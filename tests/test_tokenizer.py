"""CLIP BPE tokenizer: OpenAI's ids, transformers parity, truncation, errors."""
import gzip
import html
import json
import os
import pickle
import random
import re
from pathlib import Path

import ftfy
import numpy as np
import pytest

from hardpos_jax.tokenizer import Tokenizer, clean_text, default_bpe_path

_REAL_BPE = default_bpe_path()
_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Strings that exercise each step: ftfy (mojibake, ligatures, width, curly
# quotes, escapes, control characters), HTML entities, every regex branch,
# multi-byte UTF-8, combining marks, literal special tokens, long inputs.
TRICKY = [
    "",
    "   ",
    "Café naïve résumé ŽLUŤOUČKÝ KŮŇ",
    "東京タワーの写真 and 한국어 문장 and ภาษาไทย",
    "Привет мир, مرحبا بالعالم, नमस्ते दुनिया",
    "emoji 😀🐱 family 👨‍👩‍👧 flag 🇫🇷!",
    "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.",
    "sÃ³ voilÃ  le travail",
    "&lt;b&gt;bold&lt;/b&gt; fish &amp;amp; chips &#39;x&#39; &quot;y&quot;",
    "a <b> tag stops ftfy's &amp;amp; unescaping",
    "It's a dog's life, isn't it? They'll've I'M SHOUTING, we'd",
    "’curly’ “quotes” and ﬁnancial ﬂow in ｆｕｌｌｗｉｄｔｈ",
    "123,456.78 and 3.14159 x² ½ ① Ⅻ",
    "hello!!! ... ??? --- @#$%^&*()_+ e-mail@example.com http://x.y/z?q=1",
    "tab\tand\nnewline  \r\n  spaces\u00a0nbsp\u2003em",
    "e\u0301 combining, zero\u200bwidth",
    "\x1b[31mred\x1b[0m control\x00char\x07s\x0bvt",
    "<|startoftext|> literal <|endoftext|> tokens",
    "a" * 300,
    " ".join(["lengthy caption words"] * 40),
]


def _write_bpe(path, merges, header='"bpe_simple_vocab_16e6.txt#version: 0.2'):
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("\n".join([header, *merges]) + "\n")
  return str(path)


def _reference_clean(text):
  """openai/CLIP's whitespace_clean(basic_clean(text)).lower()."""
  text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
  return re.sub(r"\s+", " ", text).strip().lower()


def _benchmark_captions(limit):
  """About `limit` captions from the benchmark files, evenly spread."""
  texts = []
  for f in sorted(_SHARED_DATA.glob("hard_positives/*/*.json")):
    for row in json.loads(f.read_text()):
      texts += [row["true_caption"], row["false_caption"]]
  for f in sorted(_SHARED_DATA.glob("sugar_crepe/*.json")):
    for row in json.loads(f.read_text()).values():
      texts += [row["caption"], row["negative_caption"]]
  return texts[:: max(1, len(texts) // limit)]


def _require_real_vocab():
  if not os.path.isfile(_REAL_BPE):
    pytest.skip(f"OpenAI BPE file absent at {_REAL_BPE}; run scripts/setup.sh")


@pytest.fixture(scope="module")
def real():
  _require_real_vocab()
  return Tokenizer()


@pytest.fixture(scope="module")
def small_path(tmp_path_factory):
  """The first 1,000 real merges: most words split into several pieces."""
  _require_real_vocab()
  with gzip.open(_REAL_BPE, "rt", encoding="utf-8") as f:
    lines = [next(f).rstrip("\n") for _ in range(1001)]
  path = tmp_path_factory.mktemp("bpe") / "small.txt.gz"
  return _write_bpe(path, lines[1:], header=lines[0])


@pytest.mark.parametrize(
    "text, ids",
    [
        # HF's CLIP docs.
        ("a photo of a cat", [320, 1125, 539, 320, 2368]),
        ("a photo of a dog", [320, 1125, 539, 320, 1929]),
        # apple/ml-stable-diffusion's tokenizer tests.
        (
            "a photo of an astronaut riding a horse on mars",
            [320, 1125, 539, 550, 18376, 6765, 320, 4558, 525, 7496],
        ),
        (
            "Apple CoreML developer tools on a Macbook Air are fast",
            [3055, 19622, 5780, 10929, 5771, 525, 320, 20617, 1922, 631, 1953],
        ),
    ],
)
def test_known_openai_ids(real, text, ids):
  assert real.encode(text) == ids
  row = real(text)
  assert row.shape == (1, 77) and row.dtype == np.int32
  expected = np.zeros(77, np.int32)
  expected[: len(ids) + 2] = [49406, *ids, 49407]
  np.testing.assert_array_equal(row[0], expected)


def test_real_vocabulary_layout(real):
  assert (real.vocab_size, real.sot_token_id, real.eot_token_id) == (
      49408,
      49406,
      49407,
  )
  assert real.context_length == 77
  # OpenAI maps the literal special strings in text to their ids.
  assert real.encode("a <|endoftext|> b") == [
      *real.encode("a"),
      49407,
      *real.encode("b"),
  ]


@pytest.mark.parametrize("which", ["real", "small"])
def test_matches_transformers(request, tmp_path, which):
  """Same ids as transformers' CLIPTokenizer on files written by save_hf.

  transformers does NFC + whitespace + lower-case but not ftfy or HTML
  unescaping, so it gets our cleaned text; clean_text is checked against
  OpenAI's recipe separately.
  """
  transformers = pytest.importorskip("transformers")
  if which == "real":
    tok = request.getfixturevalue("real")
  else:
    tok = Tokenizer(request.getfixturevalue("small_path"))
  tok.save_hf(str(tmp_path))
  hf = transformers.CLIPTokenizer.from_pretrained(str(tmp_path))
  assert len(hf) == tok.vocab_size
  texts = TRICKY + _benchmark_captions(3000)
  got = [[tok.sot_token_id, *tok.encode(t), tok.eot_token_id] for t in texts]
  want = hf([clean_text(t) for t in texts])["input_ids"]
  mismatches = [(t, g, w) for t, g, w in zip(texts, got, want) if g != w]
  assert not mismatches, mismatches[:3]


def test_clean_text_matches_openai_recipe():
  """The printable-ASCII shortcut in clean_text must change nothing."""
  rng = random.Random(0)
  alphabet = "abcXYZ &;#<>'\"\t\n\r\x0b\x0c\x00\x1b\x7f019.,!amplt"
  fuzz = [
      "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
      for _ in range(2000)
  ]
  texts = TRICKY + fuzz + _benchmark_captions(2000)
  assert [clean_text(t) for t in texts] == [_reference_clean(t) for t in texts]
  assert clean_text("  Caf\u00e9\u00a0&amp;amp;  BAR\n") == "café & bar"
  assert clean_text("sÃ³") == "só"


def test_from_hf_dir_and_from_path_match_bpe_file(small_path, tmp_path):
  tok = Tokenizer(small_path, context_length=16)
  tok.save_hf(str(tmp_path))
  for other in (
      Tokenizer.from_hf_dir(str(tmp_path), context_length=16),
      Tokenizer.from_path(str(tmp_path), context_length=16),
      Tokenizer.from_path(small_path, context_length=16),
  ):
    assert other.vocab_size == tok.vocab_size == 512 + 1000 + 2
    np.testing.assert_array_equal(other(TRICKY), tok(TRICKY))


def test_truncation_keeps_eot_last_and_flags(real):
  # "a" is one token, so n words give n + 2 ids.
  tokens, cut = real.tokenize_with_truncation(
      ["a " * 75, "a " * 76, "a photo of a cat", " ".join(["cat"] * 200)]
  )
  assert tokens.shape == (4, 77) and tokens.dtype == np.int32
  np.testing.assert_array_equal(cut, [False, True, False, True])
  np.testing.assert_array_equal(tokens[:2, 1:76], 320)
  np.testing.assert_array_equal(tokens[:2, 76], 49407)
  np.testing.assert_array_equal(tokens[:, 0], 49406)
  np.testing.assert_array_equal(tokens[3, 1:76], real.encode("cat") * 75)
  np.testing.assert_array_equal(tokens[3, 76], 49407)
  # A per-call context length overrides the default.
  short, cut = real.tokenize_with_truncation("a photo of a cat", 4)
  np.testing.assert_array_equal(short, [[49406, 320, 1125, 49407]])
  assert cut.tolist() == [True]
  np.testing.assert_array_equal(
      real(["a cat"], context_length=4), [[49406, 320, 2368, 49407]]
  )


@pytest.mark.parametrize("n_merges", [0, 1, 7])
def test_any_merge_count(tmp_path, n_merges):
  merges = ["a t</w>", "c at</w>", "t h", "th e</w>", "o f</w>", "p h", "ph o"]
  tok = Tokenizer(_write_bpe(tmp_path / "v.txt.gz", merges[:n_merges]))
  assert tok.vocab_size == 512 + n_merges + 2
  assert (tok.sot_token_id, tok.eot_token_id) == (
      tok.vocab_size - 2,
      tok.vocab_size - 1,
  )
  ids = tok.encode("the cat")
  assert len(ids) == {0: 6, 1: 5, 7: 2}[n_merges]
  assert tok.decode(ids) == "the cat "
  text = "naïve 😀 東京"
  assert tok.decode(tok.encode(text)) == "naïve 😀 東京 "


def test_word_cache_and_pickle(real, monkeypatch):
  tok = pickle.loads(pickle.dumps(real))
  before = pickle.dumps(tok)
  calls = []
  bpe = tok._bpe
  monkeypatch.setattr(tok, "_bpe", lambda w: calls.append(w) or bpe(w))
  ids = tok.encode("the dog and the other dog")
  assert sorted(calls) == ["and", "dog", "other", "the"]
  assert tok.encode("the dog") == ids[:2]
  assert len(calls) == 4
  monkeypatch.undo()
  # The cache stays out of pickles: workers start small and identical.
  assert pickle.dumps(tok) == before
  np.testing.assert_array_equal(
      pickle.loads(before)(TRICKY), real(TRICKY)
  )


def test_default_bpe_path_env(monkeypatch, tmp_path):
  monkeypatch.setenv("HARDPOS_JAX_BPE", str(tmp_path / "v.txt.gz"))
  assert default_bpe_path() == str(tmp_path / "v.txt.gz")
  with pytest.raises(FileNotFoundError, match="setup.sh.*HARDPOS_JAX_BPE"):
    Tokenizer()
  monkeypatch.delenv("HARDPOS_JAX_BPE")
  assert default_bpe_path() == os.path.expanduser(
      "~/.cache/hardpos_jax/bpe_simple_vocab_16e6.txt.gz"
  )


def test_bad_inputs(tmp_path):
  good = _write_bpe(tmp_path / "good.txt.gz", ["t h"])
  with pytest.raises(FileNotFoundError, match="missing.txt.gz"):
    Tokenizer(str(tmp_path / "missing.txt.gz"))
  (tmp_path / "plain.txt.gz").write_text("not gzip")
  with pytest.raises(ValueError, match="plain.txt.gz"):
    Tokenizer(str(tmp_path / "plain.txt.gz"))
  bad = _write_bpe(tmp_path / "bad.txt.gz", ["t h", "oops"])
  with pytest.raises(ValueError, match="bad.txt.gz, line 3"):
    Tokenizer(bad)
  dup = _write_bpe(tmp_path / "dup.txt.gz", ["t h", "th e", "t he"])
  with pytest.raises(ValueError, match="'the'"):
    Tokenizer(dup)
  (tmp_path / "vocab.json").write_text("{}")
  with pytest.raises(ValueError, match="lacks merges.txt"):
    Tokenizer.from_path(str(tmp_path))
  (tmp_path / "merges.txt").write_text("#version: 0.2\nt h\n")
  with pytest.raises(ValueError, match="vocab.json is not the CLIP vocab"):
    Tokenizer.from_hf_dir(str(tmp_path))
  with pytest.raises(ValueError, match="expected an OpenAI BPE"):
    Tokenizer.from_path(str(tmp_path / "vocab.json"))
  tok = Tokenizer(good)
  with pytest.raises(ValueError, match=r"\[515\]"):
    tok.decode([1, 515])
  with pytest.raises(ValueError, match="context_length"):
    tok("x", context_length=0)
  with pytest.raises(ValueError, match="context_length"):
    Tokenizer(good, context_length=0)
