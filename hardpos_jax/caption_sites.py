"""Where the keys of a word list occur in a caption, for the caption rules.

`find_sites` finds whole-word matches of one- or more-word keys (a synonym
or contrast map's), longest first, except where the key's guard refuses its
context: "in" of "in front of", "old" of "two years old", "dog" of "hot dog",
"black" of "black and white", ...
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
import dataclasses

from hardpos_jax import caption_lexicon as lexicon
from hardpos_jax import caption_phrases
from hardpos_jax import caption_tokens


class KeyIndex:
  """Lower-case keys of one or more words, grouped by their length."""

  def __init__(self, keys: Iterable[str]):
    self.by_length = collections.defaultdict(set)
    for key in keys:
      self.by_length[len(key.split())].add(key)
    self.lengths = sorted(self.by_length, reverse=True)


def find_sites(
    tokens: list[caption_tokens.Token], index: KeyIndex
) -> list[tuple[int, int, str]]:
  """Finds whole-word, non-overlapping matches of keys, longest first.

  Returns:
    `(first_token, end_token, key)` per match that its guard allows.
  """
  lowers = [t.lower for t in tokens]
  sites, i = [], 0
  while i < len(tokens):
    for length in index.lengths:
      key = " ".join(lowers[i : i + length])
      if key in index.by_length[length] and _guard_allows(
          key, tokens, i, i + length):
        sites.append((i, i + length, key))
        i += length
        break
    else:
      i += 1
  return sites


# ------------------------------------------------------------------ guards ---


@dataclasses.dataclass(frozen=True)
class _Guard:
  """Contexts in which a word is not replaced.

  Attributes:
    prev: blocked words just before it.
    next: blocked words just after it.
    prev_participle: blocked after an -ed/-ing word ("dressed in").
    needs_object: it must be followed by a word that can start a noun phrase
      (a preposition, not an adverb: "from above").
    prev_required: if set, the word before it must be one of these.
    next_required: if set, the word after it must be one of these.
    idioms: word sequences in which it is not replaced ("black and white").
    object_words: blocked words in the noun phrase after it ("in a hat").
  """

  prev: frozenset[str] = frozenset()
  next: frozenset[str] = frozenset()
  prev_participle: bool = False
  needs_object: bool = False
  prev_required: frozenset[str] = frozenset()
  next_required: frozenset[str] = frozenset()
  idioms: tuple[tuple[str, ...], ...] = ()
  object_words: frozenset[str] = frozenset()

  def allows(
      self, tokens: list[caption_tokens.Token], first: int, end: int
  ) -> bool:
    prev = tokens[first - 1] if first > 0 else None
    nxt = tokens[end] if end < len(tokens) else None
    if prev is not None and (
        prev.lower in self.prev
        or (self.prev_participle and caption_tokens.is_participle(prev))
    ):
      return False
    if nxt is not None and nxt.lower in self.next:
      return False
    if self.needs_object and (
        nxt is None
        or not nxt.is_word
        or nxt.lower in (lexicon.PREPOSITIONS | lexicon.CONJUNCTIONS
                         | lexicon.ADVERBS)
    ):
      return False
    if self.prev_required and (prev is None or prev.lower not in
                               self.prev_required):
      return False
    if self.next_required and (nxt is None or nxt.lower not in
                               self.next_required):
      return False
    if self.object_words and end < len(tokens):
      object_end = caption_phrases.noun_phrase_end(tokens, end) or end
      if any(t.lower in self.object_words for t in tokens[end:object_end]):
        return False
    lowers = [t.lower for t in tokens]
    for idiom in self.idioms:
      for offset, word in enumerate(idiom):
        start = first - offset
        if (word == lowers[first] and start >= 0
            and lowers[start : start + len(idiom)] == list(idiom)):
          return False
    return True


_PREPOSITION = _Guard(needs_object=True)
_COLOUR_IDIOMS = (("black", "and", "white"), ("white", "and", "black"))
_GUARDS = {
    # "in front of", "dressed in", "in half", "in a red shirt" break with
    # "within".
    "in": _Guard(
        next=lexicon.word_set(
            "front between order half line addition charge case fact"
            " particular general love use progress unison action pieces place"
        ),
        prev=lexicon.word_set("dress dresses"),
        prev_participle=True,
        needs_object=True,
        object_words=lexicon.CLOTHING | frozenset(lexicon.COLOURS),
    ),
    # Passive "by" ("pulled by horses") is not "near".
    "by": _Guard(
        prev=lexicon.word_set(
            "side one made held taken driven drawn ridden eaten"),
        next=lexicon.word_set("itself himself herself themselves side hand"),
        prev_participle=True,
        needs_object=True,
    ),
    "old": _Guard(
        prev=lexicon.word_set(
            "year years month months week weeks day days how"),
        next=lexicon.word_set("fashion fashioned"),
    ),
    "clear": _Guard(
        next_required=lexicon.word_set("sky skies day water weather night")),
    "looking": _Guard(
        prev=lexicon.word_set("good nice funny strange odd weird cool"),
        next=lexicon.word_set("for like forward"),
    ),
    "hanging": _Guard(next=lexicon.word_set("out")),
    "smiling": _Guard(next=lexicon.PREPOSITIONS | lexicon.word_set("while")),
    # After a determiner these are noun modifiers: "a sitting area".
    "sitting": _Guard(prev=lexicon.DETERMINERS),
    "standing": _Guard(prev=lexicon.DETERMINERS,
                       next=lexicon.word_set("ovation room")),
    "walking": _Guard(prev=lexicon.DETERMINERS,
                      next=lexicon.word_set("stick sticks")),
    "eating": _Guard(prev=lexicon.DETERMINERS,
                     next=lexicon.word_set("area utensils")),
    # "riding on a horse" would become "traveling on on a horse".
    "riding": _Guard(next=lexicon.PREPOSITIONS, needs_object=True),
    "under": _Guard(
        next=lexicon.word_set(
            "construction way control pressure repair age"),
        needs_object=True,
    ),
    "black": _Guard(idioms=_COLOUR_IDIOMS),
    "white": _Guard(idioms=_COLOUR_IDIOMS),
    "on": _Guard(
        prev=lexicon.word_set("turned turn turns put puts"),
        next=lexicon.word_set("display sale fire"),
        needs_object=True,
    ),
    "with": _Guard(prev=lexicon.word_set("along together"),
                   prev_participle=True, needs_object=True),
    "up": _Guard(
        prev=lexicon.word_set("close set made make makes lined picked pick cut"
                              " tied dressed lit hooked piled")
    ),
    "down": _Guard(prev=lexicon.word_set("upside")),
    # "left" is also a verb; "right" also an adverb ("right next to").
    "left": _Guard(
        prev_required=lexicon.word_set("the to its his her their my your")),
    "right": _Guard(
        prev_required=lexicon.word_set("the to its his her their my your")),
    "full": _Guard(next=lexicon.word_set("of")),
    "dog": _Guard(prev=lexicon.word_set("hot")),
    "dogs": _Guard(prev=lexicon.word_set("hot")),
    "bear": _Guard(prev=lexicon.word_set("teddy")),
    "bears": _Guard(prev=lexicon.word_set("teddy")),
    "plate": _Guard(prev=lexicon.word_set("license")),
}
for _word in (
    "above", "below", "near", "next to", "on top of", "behind", "beside",
    "beneath", "underneath", "atop", "inside", "into", "out of", "far from",
    "in front of", "without", "close to",
):
  _GUARDS.setdefault(_word, _PREPOSITION)


def _guard_allows(
    key: str, tokens: list[caption_tokens.Token], first: int, end: int
) -> bool:
  guard = _GUARDS.get(key)
  return guard is None or guard.allows(tokens, first, end)
