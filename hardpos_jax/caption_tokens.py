"""Captions as tokens, for the caption rules (`hardpos_jax.caption_rules`).

The tokenizer the rules split a caption with, the word-class tests the noun
phrase chunker and the rules apply to a token, and edits of a caption by
token ranges that keep its case, spacing and articles right.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from hardpos_jax import caption_lexicon

# A word: letters/digits, joined across hyphens and apostrophes ("year-old",
# "man's"); anything else that is not a space is a one-character token.
_TOKEN_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*|\S")


class Token(NamedTuple):
  """A word or a one-character token, and where it lies in the caption."""

  text: str
  lower: str
  start: int
  end: int

  @property
  def is_word(self) -> bool:
    return self.text[0].isalnum()


def tokenize(caption: str) -> list[Token]:
  """The caption's tokens, in order."""
  return [
      Token(m.group(), m.group().lower(), m.start(), m.end())
      for m in _TOKEN_RE.finditer(caption)
  ]


def caption_words(caption: str) -> list[str]:
  """The caption's words, lower-cased, as the rules split them."""
  return [t.lower for t in tokenize(caption) if t.is_word]


def normal_form(text: str) -> str:
  """The form in which two captions count as the same."""
  return " ".join(text.lower().split())


# ------------------------------------------------------------ word classes ---


def is_participle(token: Token) -> bool:
  """An -ing or -ed word that is not a known noun ("building", "seabed")."""
  lower = token.lower
  if len(lower) <= 4:  # "ring", "bed", "red".
    return False
  if lower.endswith("ing"):
    return lower not in caption_lexicon.ING_NOUNS
  return lower.endswith("ed") and lower not in caption_lexicon.ED_NOUNS


def is_verb_like(token: Token) -> bool:
  return token.lower in caption_lexicon.VERBS or is_participle(token)


def is_determiner(token: Token) -> bool:
  return token.lower in caption_lexicon.DETERMINERS or token.text.isdigit()


def is_content(token: Token) -> bool:
  """A word that can be part of a noun phrase after its determiner."""
  return (
      token.is_word
      and token.lower not in caption_lexicon.CLOSED_CLASS
      and not token.text.isdigit()
  )


# ------------------------------------------------------- editing a caption ---


def match_case(source: str, word: str) -> str:
  """Writes `word` in the case style of `source` ("ON", "White", "in")."""
  if len(source) > 1 and source.isupper():
    return word.upper()
  if source[:1].isupper():
    return word[:1].upper() + word[1:]
  return word


def _article_for(word: str) -> str:
  """ "a" or "an" before `word`, by its spelling (a rough vowel sound)."""
  lower = word.lower()
  if lower.startswith(("uni", "use", "usu", "eu", "one", "once")):
    return "a"
  if lower.startswith(("hour", "honest", "honor", "honour", "heir")):
    return "an"
  return "an" if lower[:1] in "aeiou" else "a"


def apply_edits(
    caption: str, tokens: list[Token], edits: list[tuple[int, int, str]]
) -> str:
  """Applies `(first_token, end_token, text)` edits to `caption`.

  An "a"/"an" just before an edit is made to agree with the edit's first
  word ("a white cat" -> "an ivory cat"); nothing else outside the edits
  changes.

  Args:
    caption: the caption.
    tokens: its tokens.
    edits: non-overlapping token ranges `[first, end)` and their new text.

  Returns:
    The edited caption.
  """
  spans = []
  for first, end, text in sorted(edits):
    before = first - 1
    if (
        before >= 0
        and tokens[before].lower in ("a", "an")
        and not any(f <= before < e for f, e, _ in edits)
    ):
      spans.append((
          tokens[before].start,
          tokens[before].end,
          match_case(tokens[before].text, _article_for(text)),
      ))
    spans.append((tokens[first].start, tokens[end - 1].end, text))
  pieces, position = [], 0
  for start, end, text in spans:
    pieces += [caption[position:start], text]
    position = end
  return "".join(pieces) + caption[position:]


def swap_ranges(
    caption: str,
    tokens: list[Token],
    left: tuple[int, int],
    right: tuple[int, int],
) -> str:
  """Exchanges token ranges `left` and `right` (left before right).

  At the start of the caption the capital stays in place: "Two dogs and a
  cat" -> "A cat and two dogs".
  """
  left_text = caption[tokens[left[0]].start : tokens[left[1] - 1].end]
  right_text = caption[tokens[right[0]].start : tokens[right[1] - 1].end]
  if left[0] == 0 and caption[:1].isupper() and not _is_acronym(left_text):
    right_text = right_text[:1].upper() + right_text[1:]
    left_text = left_text[:1].lower() + left_text[1:]
  return apply_edits(
      caption, tokens, [(*left, right_text), (*right, left_text)]
  )


def _is_acronym(text: str) -> bool:
  first = text.split()[0]
  return first == "I" or (len(first) > 1 and first.isupper())
