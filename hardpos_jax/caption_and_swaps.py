"""The SWAP hard positives of the caption rules: swaps around "and".

`find_swaps` finds, for each "and" of a caption, the two conjuncts whose
exchange keeps the meaning: colours (swap_adjectives), -ing verb phrases
(swap_verb_phrases), the last two items of a list (swap_list) or two noun
phrases (swap_noun_phrases). Without a parser, the conjuncts come from the
noun-phrase chunker (`caption_phrases`), and a swap is refused wherever they
cannot be told safely: `find_swaps` and docs/generate.md list the cases.
"""

from __future__ import annotations

from typing import NamedTuple

from hardpos_jax import caption_lexicon as lexicon
from hardpos_jax import caption_phrases
from hardpos_jax import caption_tokens

# What may precede the first conjunct of "X and Y" when the rule cannot
# otherwise tell where X starts: "a man on a bike and a dog" may be
# "[a man on a bike] and [a dog]", so "on" is not here.
_SAFE_CONTEXTS = lexicon.word_set(
    "between of with both has have having contains containing including"
    " includes featuring features shows showing"
)
# Nouns whose "of" takes a coordination as a whole: "a mixture of rice and
# broccoli" (but not "zebras of different sizes and warthogs").
_OF_HEADS = lexicon.word_set(
    "assortment assortments bag bags basket baskets bowl bowls box boxes"
    " bunch bunches collection collections consisting cup cups display"
    " displays full group groups image images kinds lot lots made mixture"
    " pair picture pictures photo photos pieces pile piles plate plates"
    " platter selection set slices stack stacks tray trays types variety"
)
# After the second conjunct these may describe it alone ("a dog and a man
# wearing a hat"), or make it part of a larger phrase ("a pie and a cup of
# tea or coffee", "desks and places to sit").
_UNSHARED_FOLLOWERS = lexicon.word_set(
    "with wearing holding carrying dressed who that which whose or to up"
    " down off out"
)


class Swap(NamedTuple):
  """A swap's rule and the token ranges `[first, end)` it exchanges."""

  rule: str
  left: tuple[int, int]
  right: tuple[int, int]


def find_swaps(tokens: list[caption_tokens.Token]) -> list[Swap]:
  """Returns the meaning-keeping swaps around each "and" of the caption.

  For one "and" at token k, the first rule that applies wins:
    swap_adjectives: two colours, "a blue and white clock".
    swap_verb_phrases: "-ing ... and -ing ..." where the second phrase runs
      to the end of the caption and neither holds a comma or conjunction.
    swap_list: the last two items of a comma list, "a sink, toilet and
      shower" (also with a serial comma).
    swap_noun_phrases: two noun phrases where the first starts the caption
      or follows a comma, "between", "there is/are", or one of "with",
      "both", a verb of containing ("has", "showing") and "of" after a noun
      of _OF_HEADS ("a mixture of rice and broccoli"), after which both
      must have determiners or neither ("a cup of coffee and a donut" is
      refused). After "of", only bare nouns swap there; else "X of Y and Z
      of W" swaps as two whole phrases ("plates of food and two glasses of
      wine"). A bare second conjunct shares a first article ("a man and
      woman" -> "a woman and man"), never a number ("two men and women").
      Neither may end in an attribute ("windows, and grey and red
      furniture"). "Of" phrases and clothing ("in a red shirt") after the
      second conjunct move with it; other prepositional phrases stay, taken
      to describe both; a following "with", "wearing", "who"... refuses the
      swap, as it may describe the second conjunct alone.
  Refused: "and then", clauses ("a man sits, and a dog watches"), verbs
  that are not -ing forms, conjuncts this chunker cannot delimit.
  """
  swaps = []
  for k, token in enumerate(tokens):
    if token.lower != "and" or k == 0 or k + 1 >= len(tokens):
      continue
    swap = (
        _swap_adjectives(tokens, k)
        or _swap_verb_phrases(tokens, k)
        or _swap_noun_phrases(tokens, k)
    )
    if swap is not None:
      swaps.append(swap)
  return swaps


def _swap_adjectives(
    tokens: list[caption_tokens.Token], k: int
) -> Swap | None:
  if (tokens[k - 1].lower in lexicon.COLOURS
      and tokens[k + 1].lower in lexicon.COLOURS):
    return Swap("swap_adjectives", (k - 1, k), (k + 1, k + 2))
  return None


def _is_break(token: caption_tokens.Token) -> bool:
  return not token.is_word or token.lower in lexicon.CONJUNCTIONS


def _swap_verb_phrases(
    tokens: list[caption_tokens.Token], k: int
) -> Swap | None:
  verb = tokens[k + 1]
  if not (caption_tokens.is_participle(verb) and verb.lower.endswith("ing")):
    return None
  if (verb.lower in lexicon.ING_MODIFIERS and k + 2 < len(tokens)
      and caption_tokens.is_content(tokens[k + 2])):
    return None  # "a table and dining chairs" holds no verb phrase.
  end = len(tokens)
  while end > k + 1 and tokens[end - 1].text in ".!":
    end -= 1
  if any(_is_break(t) for t in tokens[k + 1 : end]):
    return None
  for j in range(k - 1, -1, -1):
    if _is_break(tokens[j]):
      return None
    if (
        tokens[j].lower.endswith("ing")
        and caption_tokens.is_participle(tokens[j])
        and not (j > 0 and caption_tokens.is_determiner(tokens[j - 1]))
    ):
      if j == k - 1 and end > k + 2:
        return None  # "cutting and preparing a pizza": a shared object.
      return Swap("swap_verb_phrases", (j, k), (k + 1, end))
  return None


def _swap_noun_phrases(
    tokens: list[caption_tokens.Token], k: int
) -> Swap | None:
  serial_comma = tokens[k - 1].text == ","
  left_end = k - 1 if serial_comma else k
  left = caption_phrases.noun_phrase_start(tokens, left_end)
  right_first = k + 1
  right_np = caption_phrases.noun_phrase_end(tokens, right_first)
  if left is None or right_np is None:
    return None
  context = tokens[left - 1].lower if left > 0 else None
  if serial_comma and context != ",":
    return None  # "a man holds a bat, and a dog ..." is two clauses.
  if context == "," and left > 1 and tokens[left - 2].lower in (
      lexicon.ATTRIBUTE_CONTRASTS):
    return None  # "brown, leather furniture" is no list.
  left_det = caption_tokens.is_determiner(tokens[left])
  right_det = caption_tokens.is_determiner(tokens[right_first])
  right_end = caption_phrases.extend_of(tokens, right_np)
  if right_end is None:
    return None
  if context == "of" and (left_det or right_det or left < 2
                          or tokens[left - 2].lower not in _OF_HEADS):
    # "plates of food and two glasses of wine": the parallel "of" makes
    # "[plates of food] and [two glasses of wine]" likely.
    outer = caption_phrases.noun_phrase_start(tokens, left - 1)
    if outer is None or right_end == right_np:
      return None
    left, context = outer, tokens[outer - 1].lower if outer > 0 else None
    if context == "of":
      return None  # "a picture of plates of food and ...": too deep.
    left_det = caption_tokens.is_determiner(tokens[left])
  if context is not None and context not in _SAFE_CONTEXTS | {","}:
    is_there = context in ("is", "are") and left > 1 and tokens[
        left - 2].lower == "there"
    if not is_there:
      return None
  if context in _SAFE_CONTEXTS - {"between"} and left_det != right_det:
    return None
  right_end = caption_phrases.extend_attire(tokens, right_end)
  if right_end is None:
    return None
  if right_end < len(tokens) and (
      caption_tokens.is_determiner(tokens[right_end])
      or tokens[right_end].lower in _UNSHARED_FOLLOWERS
  ):
    return None
  if tokens[left_end - 1].lower in lexicon.ATTRIBUTE_CONTRASTS or tokens[
      right_end - 1].lower in lexicon.ATTRIBUTE_CONTRASTS:
    return None  # "windows, and grey and red furniture": no noun.
  rule = "swap_list" if context == "," else "swap_noun_phrases"
  if not left_det and not right_det and left_end - left == 1 and (
      right_end - right_first > 1):
    return None  # "young and older people": "young" may be a modifier.
  if left_det and not right_det:
    # "a man and woman": the bare noun shares the article; a number or a
    # modifier might be shared too ("two men and women", "black cats and
    # dogs"), "a" no plural ("an umbrella and boots"), and two words may be
    # one modifier ("a pineapple and ham pizza").
    if (tokens[left].lower not in lexicon.SHARED_DETERMINERS
        or k - left != 2 or right_end - right_first > 1 or (
            tokens[left].lower in ("a", "an")
            and tokens[right_end - 1].lower.endswith("s"))):
      return None
    return Swap(rule, (left + 1, left_end), (right_first, right_end))
  return Swap(rule, (left, left_end), (right_first, right_end))
