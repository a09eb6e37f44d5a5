"""A small noun-phrase chunker for the caption rules (no parser).

Where the noun phrase that starts or ends at a token runs, and the "of" and
clothing phrases that extend it. The swaps around "and", the guards of
replacement sites and the phrase swaps of hard negatives find their
conjuncts and objects with it.
"""

from __future__ import annotations

from hardpos_jax import caption_lexicon as lexicon
from hardpos_jax import caption_tokens


def noun_phrase_end(
    tokens: list[caption_tokens.Token], first: int
) -> int | None:
  """Returns the end of the noun phrase starting at `first`, or None.

  A noun phrase is an optional determiner and 1-4 content words. A verb,
  -ing or -ed word right after the determiner is a modifier ("a cutting
  board"); after a content word it ends the phrase ("a dog sitting").
  """
  i = first
  has_determiner = i < len(tokens) and caption_tokens.is_determiner(tokens[i])
  if has_determiner:
    i += 1
  start = i
  while i < len(tokens) and caption_tokens.is_content(tokens[i]):
    if i > start and caption_tokens.is_verb_like(tokens[i]):
      break
    i += 1
  if i == start or i - start > 4:
    return None
  if not has_determiner and caption_tokens.is_verb_like(tokens[start]):
    return None  # A verb phrase: "and waiting on the shore".
  return i


def noun_phrase_start(
    tokens: list[caption_tokens.Token], end: int
) -> int | None:
  """Returns the first token of the noun phrase ending at `end`, or None."""
  i = end - 1
  count = 0
  while i >= 0:
    token = tokens[i]
    if caption_tokens.is_determiner(token):
      return i if count else None
    if not caption_tokens.is_content(token):
      break
    # "a cat sitting" ends before "sitting"; "of uncooked rice" does not.
    if (caption_tokens.is_verb_like(token) and i > 0
        and caption_tokens.is_content(tokens[i - 1])):
      break
    count += 1
    i -= 1
  if not count or count > 4:
    return None
  return i + 1


def extend_of(tokens: list[caption_tokens.Token], end: int) -> int | None:
  """Extends a phrase ending at `end` over "of" phrases ("a cup of tea")."""
  while end < len(tokens) and tokens[end].lower == "of":
    end = noun_phrase_end(tokens, end + 1)
    if end is None:
      return None
  return end


def extend_of_backward(
    tokens: list[caption_tokens.Token], first: int
) -> int | None:
  """Extends a phrase starting at `first` back over "of" ("a cup of tea")."""
  while first > 0 and tokens[first - 1].lower == "of":
    first = noun_phrase_start(tokens, first - 1)
    if first is None:
      return None
  return first


def extend_attire(tokens: list[caption_tokens.Token], end: int) -> int | None:
  """Extends a phrase over an "in" phrase of clothing or colour after it.

  Such a phrase describes the phrase before it ("a woman in a pink shirt"),
  so it moves with it; other prepositional phrases ("in a kitchen") are
  taken to describe both conjuncts and stay in place.
  """
  if end >= len(tokens) or tokens[end].lower != "in":
    return end
  np_end = noun_phrase_end(tokens, end + 1)
  if np_end is None:
    return end
  if not any(t.lower in lexicon.CLOTHING or t.lower in lexicon.COLOURS
             for t in tokens[end + 1 : np_end]):
    return end
  return extend_of(tokens, np_end)
