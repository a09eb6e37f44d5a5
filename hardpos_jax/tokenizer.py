"""OpenAI's CLIP byte-level BPE tokenizer, id for id.

Matches openai/CLIP `clip/simple_tokenizer.py` and open_clip `tokenizer.py`:
ftfy + HTML clean-up, the same pre-tokenisation regex, byte-level BPE with a
`</w>` end-of-word marker, SOT 49406 / EOT 49407, zero padding to L = 77 and
open_clip's truncation (cut to L tokens, then EOT overwrites the last one).
The literal strings "<|startoftext|>" / "<|endoftext|>" in a text map to
SOT / EOT as in OpenAI's and HF's tokenizers (open_clip 3.x renamed them to
"<start_of_text>" / "<end_of_text>"); no benchmark caption contains either.

Shapes: N texts, L tokens (the context length).
"""
from __future__ import annotations

import functools
import gzip
import html
import json
import os
from collections.abc import Callable, Iterable, Sequence

import ftfy
import numpy as np
import regex

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
_END_OF_WORD = "</w>"

# OpenAI keeps merges[1:49152 - 256 - 2 + 1]: 48,894 merges, so that
# 256 bytes + 256 `</w>` bytes + merges + SOT + EOT = 49,408 ids.
_MAX_MERGES = 49152 - 256 - 2
# HF's merges.txt starts with this line (openai/clip-vit-* on the Hub).
_HF_MERGES_HEADER = "#version: 0.2"

# OpenAI's pattern, IGNORECASE included: it makes `'s` also match the
# case-folding variant "'ſ", which survives `str.lower()`.
_PRETOKENIZE = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
    r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE,
)
_WHITESPACE = regex.compile(r"\s+")


def default_bpe_path() -> str:
  """Returns `$HARDPOS_JAX_BPE`, else the copy scripts/setup.sh fetches."""
  return os.environ.get("HARDPOS_JAX_BPE") or os.path.expanduser(
      "~/.cache/hardpos_jax/bpe_simple_vocab_16e6.txt.gz"
  )


@functools.cache
def _bytes_to_unicode() -> dict[int, str]:
  """OpenAI's reversible byte -> printable character map (GPT-2's)."""
  printable = (
      list(range(ord("!"), ord("~") + 1))
      + list(range(ord("¡"), ord("¬") + 1))
      + list(range(ord("®"), ord("ÿ") + 1))
  )
  chars = printable[:]
  extra = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      chars.append(256 + extra)
      extra += 1
  return dict(zip(printable, map(chr, chars)))


@functools.cache
def _unicode_to_bytes() -> dict[str, int]:
  return {c: b for b, c in _bytes_to_unicode().items()}


def clean_text(text: str) -> str:
  """OpenAI's `whitespace_clean(basic_clean(text)).lower()`.

  basic_clean is ftfy.fix_text, then html.unescape twice, then strip;
  whitespace_clean collapses runs of whitespace to one space.
  """
  # Printable ASCII without "&" is a fixed point of ftfy.fix_text (its fixers
  # act on "&" entities, control characters or non-ASCII only) and of
  # html.unescape; skipping them makes tokenizing the benchmark captions
  # about 4x faster (ftfy dominates the cost).
  if not (text.isascii() and text.isprintable() and "&" not in text):
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
  return _WHITESPACE.sub(" ", text).strip().lower()


def _read_text(path: str, opener: Callable = open) -> str:
  try:
    with opener(path, "rt", encoding="utf-8") as f:
      return f.read()
  except FileNotFoundError:
    raise
  except (OSError, UnicodeDecodeError, EOFError) as e:
    # E.g. gzip.BadGzipFile: say which file, not only what went wrong.
    raise ValueError(f"Cannot read tokenizer file {path}: {e}") from e


def _parse_merges(lines: list[str], path: str, first_line: int) -> list[str]:
  """Checks 'a b' lines; returns them (at most _MAX_MERGES)."""
  if lines and not lines[-1]:
    lines = lines[:-1]  # The newline that ends the file.
  merges = lines[:_MAX_MERGES]
  for i, line in enumerate(merges):
    if len(line.split()) != 2:
      raise ValueError(
          f"{path}, line {i + first_line}: expected a merge 'a b', got "
          f"{line!r}"
      )
  return merges


class Tokenizer:
  """CLIP BPE tokenizer; picklable, with a per-word cache like OpenAI's.

  Attributes:
    vocab_size: 512 byte tokens + merges + 2 (49,408 for OpenAI's file).
    sot_token_id, eot_token_id: the last two ids.
    context_length: L, the default row length of `__call__`.
  """

  def __init__(self, bpe_path: str | None = None, context_length: int = 77):
    """Reads an OpenAI-style `.txt.gz` merges file (header line first).

    Args:
      bpe_path: the merges file; None means `default_bpe_path()`.
      context_length: default L for `__call__`, at least 1.

    Raises:
      FileNotFoundError: the file is missing.
      ValueError: the file is not gzip/UTF-8 or has a malformed merge.
    """
    path = default_bpe_path() if bpe_path is None else os.fspath(bpe_path)
    if not os.path.isfile(path):
      raise FileNotFoundError(
          f"CLIP BPE vocabulary not found at {path}. Run `bash "
          "scripts/setup.sh` to fetch it, or set HARDPOS_JAX_BPE to its path."
      )
    lines = _read_text(path, gzip.open).split("\n")
    # Like OpenAI, the first line is a header whatever it says.
    self._build(_parse_merges(lines[1:], path, 2), context_length, path)

  @classmethod
  def from_hf_dir(cls, path: str, context_length: int = 77) -> "Tokenizer":
    """Reads a HF `vocab.json` + `merges.txt` pair (e.g. openai/clip-vit-*).

    The ids come from the merges, as OpenAI builds them; vocab.json must agree
    with them exactly, so this tokenizer and `transformers` give the same ids.

    Raises:
      FileNotFoundError: either file is missing.
      ValueError: a malformed merge, or vocab.json disagrees with merges.txt.
    """
    path = os.fspath(path)
    vocab_path = os.path.join(path, "vocab.json")
    merges_path = os.path.join(path, "merges.txt")
    lines = _read_text(merges_path).split("\n")
    first_line = 1
    if lines and lines[0].startswith("#version"):
      lines, first_line = lines[1:], 2
    tok = cls.__new__(cls)
    tok._build(
        _parse_merges(lines, merges_path, first_line),
        context_length,
        merges_path,
    )
    try:
      vocab = json.loads(_read_text(vocab_path))
    except json.JSONDecodeError as e:
      raise ValueError(f"{vocab_path} is not valid JSON: {e}") from e
    if vocab != tok._encoder:
      raise ValueError(
          f"{vocab_path} is not the CLIP vocabulary that {merges_path} "
          f"makes (bytes, bytes + </w>, merges, {SOT}, {EOT}: "
          f"{len(tok._encoder)} tokens in that order)."
      )
    return tok

  @classmethod
  def from_path(cls, path: str, context_length: int = 77) -> "Tokenizer":
    """A `.txt.gz` merges file, or a directory with vocab.json + merges.txt."""
    path = os.fspath(path)
    if os.path.isdir(path):
      missing = [
          name
          for name in ("vocab.json", "merges.txt")
          if not os.path.isfile(os.path.join(path, name))
      ]
      if missing:
        raise ValueError(
            f"Tokenizer directory {path} lacks {', '.join(missing)}; expected "
            "a HF CLIP tokenizer directory (vocab.json + merges.txt)."
        )
      return cls.from_hf_dir(path, context_length)
    if path.endswith(".txt.gz"):
      return cls(path, context_length)
    raise ValueError(
        f"Cannot load a tokenizer from {path}: expected an OpenAI BPE "
        "`.txt.gz` file or a directory with vocab.json + merges.txt."
    )

  def _build(self, merges: list[str], context_length: int, path: str) -> None:
    """OpenAI's construction: bytes, bytes + `</w>`, merges, SOT, EOT."""
    if context_length < 1:
      raise ValueError(f"context_length must be >= 1, got {context_length}")
    byte_chars = list(_bytes_to_unicode().values())
    pairs = [tuple(m.split()) for m in merges]
    vocab = (
        byte_chars
        + [c + _END_OF_WORD for c in byte_chars]
        + ["".join(p) for p in pairs]
        + [SOT, EOT]
    )
    encoder = {tok: i for i, tok in enumerate(vocab)}
    if len(encoder) != len(vocab):
      first = next(t for i, t in enumerate(vocab) if encoder[t] != i)
      raise ValueError(f"{path}: two merges both make the token {first!r}")
    self._encoder = encoder
    self._decoder = vocab
    self._merges = merges
    self._ranks = {p: i for i, p in enumerate(pairs)}
    self._context_length = context_length
    self._reset_cache()

  def _reset_cache(self) -> None:
    # Pre-seeded as OpenAI does, so the literal strings in text map to them.
    self._cache = {SOT: [self.sot_token_id], EOT: [self.eot_token_id]}

  def __getstate__(self) -> dict:
    # The cache can grow to every word seen; workers rebuild their own.
    state = self.__dict__.copy()
    del state["_cache"]
    return state

  def __setstate__(self, state: dict) -> None:
    self.__dict__.update(state)
    self._reset_cache()

  @property
  def vocab_size(self) -> int:
    return len(self._decoder)

  @property
  def sot_token_id(self) -> int:
    return len(self._decoder) - 2

  @property
  def eot_token_id(self) -> int:
    return len(self._decoder) - 1

  @property
  def context_length(self) -> int:
    return self._context_length

  def _bpe(self, word: str) -> list[int]:
    """OpenAI's `bpe()` on one pre-token; returns its ids."""
    byte_map = _bytes_to_unicode()
    chars = "".join(byte_map[b] for b in word.encode("utf-8"))
    parts = list(chars[:-1]) + [chars[-1] + _END_OF_WORD]
    ranks = self._ranks
    while len(parts) > 1:
      # The lowest-ranked adjacent pair is merged everywhere, left to right.
      best = min(
          zip(parts, parts[1:]), key=lambda p: ranks.get(p, float("inf"))
      )
      if best not in ranks:
        break
      first, second = best
      merged = []
      i = 0
      while i < len(parts):
        if i + 1 < len(parts) and parts[i] == first and parts[i + 1] == second:
          merged.append(first + second)
          i += 2
        else:
          merged.append(parts[i])
          i += 1
      parts = merged
    return [self._encoder[p] for p in parts]

  def encode(self, text: str) -> list[int]:
    """Cleaned, BPE-encoded ids of `text`, without SOT/EOT."""
    cache = self._cache
    ids = []
    for word in _PRETOKENIZE.findall(clean_text(text)):
      word_ids = cache.get(word)
      if word_ids is None:
        word_ids = cache[word] = self._bpe(word)
      ids.extend(word_ids)
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    """OpenAI's decode: `</w>` becomes a space; pad 0 decodes as '!'.

    Pass the ids without padding (e.g. `row[:n]`), as with OpenAI's.
    """
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < len(self._decoder)]
    if bad:
      raise ValueError(
          f"Token ids {bad[:5]} are outside [0, {len(self._decoder)})"
      )
    chars = "".join(self._decoder[i] for i in ids)
    data = bytearray(map(_unicode_to_bytes().__getitem__, chars))
    return data.decode("utf-8", errors="replace").replace(_END_OF_WORD, " ")

  def tokenize_with_truncation(
      self, texts: Sequence[str] | str, context_length: int | None = None
  ) -> tuple[np.ndarray, np.ndarray]:
    """SOT + ids + EOT per text, zero-padded or cut to L (EOT kept last).

    Args:
      texts: one string or N strings.
      context_length: L; None means `self.context_length`.

    Returns:
      tokens: [N, L] int32.
      truncated: [N] bool, True where the text did not fit in L tokens.
    """
    if isinstance(texts, str):
      texts = [texts]
    length = self._context_length if context_length is None else context_length
    if length < 1:
      raise ValueError(f"context_length must be >= 1, got {length}")
    tokens = np.zeros((len(texts), length), np.int32)
    truncated = np.zeros((len(texts),), bool)
    for row, text in enumerate(texts):
      ids = [self.sot_token_id, *self.encode(text), self.eot_token_id]
      if len(ids) > length:
        # open_clip: `tokens[:L]` then `tokens[-1] = eot`.
        ids = ids[:length]
        ids[-1] = self.eot_token_id
        truncated[row] = True
      tokens[row, : len(ids)] = ids
    return tokens, truncated

  def __call__(
      self, texts: Sequence[str] | str, context_length: int | None = None
  ) -> np.ndarray:
    """Returns [N, L] int32 tokens (see `tokenize_with_truncation`)."""
    return self.tokenize_with_truncation(texts, context_length)[0]

  def save_hf(self, directory: str) -> None:
    """Writes `vocab.json` + `merges.txt` as HF's CLIPTokenizer reads them."""
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    vocab_path = os.path.join(directory, "vocab.json")
    with open(vocab_path, "w", encoding="utf-8") as f:
      json.dump(self._encoder, f, ensure_ascii=False)
    merges_path = os.path.join(directory, "merges.txt")
    with open(merges_path, "w", encoding="utf-8") as f:
      f.write("\n".join([_HF_MERGES_HEADER, *self._merges]) + "\n")


def used_length(ids: np.ndarray, multiple: int = 8) -> int:
  """The shortest L, a multiple of `multiple`, that holds every row's EOT.

  With a causal mask and EOT pooling, tokens after EOT never reach the
  pooled embedding, so a text tower run at this L gives the same embeddings
  as at the full context. The last column with any non-zero id is the last
  EOT: EOT is never 0 and ends each text, while a text may hold id 0 ("!").

  Args:
    ids: [N, C] int token ids, zero-padded.
    multiple: round L up to this (fewer distinct shapes to compile).

  Returns:
    L <= C.
  """
  if not ids.size:
    return ids.shape[1]
  used = int(np.flatnonzero(ids.any(axis=0)).max()) + 1
  return min(ids.shape[1], -(-used // multiple) * multiple)
