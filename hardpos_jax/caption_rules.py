r"""Caption-editing rules: hard positives and negatives made without a model.

Hard positives (Kamath et al., ECCV 2024) are small edits that keep a
caption's meaning; hard negatives, in the style of NegCLIP and CREPE, are
small edits that change it. `hard_positives` and `hard_negatives` make them
for one caption; `hardpos_jax.generate` runs them over files.

Rules, all on whole words (hyphenated words and contractions are one word):
  hard positives
    swap_adjectives      "a blue and white clock" -> "a white and blue clock"
    swap_verb_phrases    "a man wearing glasses and holding a bottle" ->
                         "a man holding a bottle and wearing glasses"
    swap_list            "a sink, toilet and shower" -> "a sink, shower and
                         toilet"
    swap_noun_phrases    "three giraffes and two antelope" -> "two antelope and
                         three giraffes"
    replace_benchmark    the synonym map of the paper's benchmark
                         (white -> ivory, behind -> to the rear of, ...)
    replace_extra        a few more synonyms common in COCO (couch -> sofa)
  hard negatives
    swap_attributes      "a white cat and a black dog" -> "a black cat and a
                         white dog"
    replace_attribute    a colour, size, state... by a contrasting one
    replace_object       man <-> woman, cat <-> dog, ...
    replace_relation     on <-> under, left <-> right, with <-> without, ...
    swap_phrases         "a cat on a table" -> "a table on a cat"

The swaps around "and" are in `caption_and_swaps`, which refuses them
wherever the two conjuncts cannot be found safely without a parser (see
docs/generate.md); the word lists the rules use are public in
`caption_lexicon`. Where a rule picks among several sites or words, it draws
from a generator seeded by the seed and the caption, so results do not
depend on input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
import dataclasses
import random

from hardpos_jax import caption_and_swaps
from hardpos_jax import caption_lexicon as lexicon
from hardpos_jax import caption_phrases
from hardpos_jax import caption_sites
from hardpos_jax import caption_tokens
from tfds_builders.coco_hard_pos_neg import layout

HARD_POSITIVE_RULES = (
    "swap_adjectives",
    "swap_verb_phrases",
    "swap_list",
    "swap_noun_phrases",
    "replace_benchmark",
    "replace_extra",
)
HARD_NEGATIVE_RULES = (
    "swap_attributes",
    "replace_attribute",
    "replace_object",
    "replace_relation",
    "swap_phrases",
)


@dataclasses.dataclass(frozen=True)
class Edit:
  """A generated caption and the rule that made it."""

  text: str
  rule: str


@dataclasses.dataclass(frozen=True)
class HardPositives:
  """One caption's hard positives of each kind; None where none applies."""

  swap: Edit | None
  replace: Edit | None


# key -> (rule, synonym); the benchmark's map wins where both have a key.
_SYNONYMS = {
    **{k: ("replace_extra", v) for k, v in lexicon.EXTRA_SYNONYMS.items()},
    **{k: ("replace_benchmark", v)
       for k, v in lexicon.BENCHMARK_SYNONYMS.items()},
}
_SYNONYM_INDEX = caption_sites.KeyIndex(_SYNONYMS)


def _rng(seed: int, caption: str, purpose: str) -> random.Random:
  # Seeded by text (hashed with SHA-512 by `random`), so a caption gets the
  # same draw wherever it is in the input.
  return random.Random(f"{seed}\0{purpose}\0{caption}")


def _replace(
    caption: str,
    tokens: list[caption_tokens.Token],
    site: tuple[int, int, str],
    word: str,
) -> str:
  first, end, _ = site
  text = caption_tokens.match_case(tokens[first].text, word)
  return caption_tokens.apply_edits(caption, tokens, [(first, end, text)])


# ---------------------------------------------------------- hard positives ---


def hard_positives(caption: str, seed: int = 0) -> HardPositives:
  """Returns the caption's rule-based swap and replace hard positives.

  Args:
    caption: the caption.
    seed: seeds the choice among several swaps or synonym sites.

  Returns:
    One edit of each kind, different from the caption, or None where no
    rule of that kind applies.
  """
  tokens = caption_tokens.tokenize(caption)
  swaps = [
      Edit(caption_tokens.swap_ranges(caption, tokens, s.left, s.right),
           s.rule)
      for s in caption_and_swaps.find_swaps(tokens)
  ]
  swap = _pick(seed, caption, "swap", swaps)
  replacements = [
      Edit(_replace(caption, tokens, site, word), rule)
      for site in caption_sites.find_sites(tokens, _SYNONYM_INDEX)
      for rule, word in [_SYNONYMS[site[2]]]
  ]
  replace = _pick(seed, caption, "replace", replacements)
  return HardPositives(swap=swap, replace=replace)


def _pick(
    seed: int, caption: str, purpose: str, edits: list[Edit]
) -> Edit | None:
  """Draws one edit that is not the caption.

  Nor the "None" marker, which the coco_hard_pos_neg files read as "no hard
  positive".
  """
  caption_form = caption_tokens.normal_form(caption)
  edits = [
      e for e in edits
      if caption_tokens.normal_form(e.text) != caption_form
      and e.text != layout.NO_HARD_POSITIVE
  ]
  return _rng(seed, caption, purpose).choice(edits) if edits else None


# ---------------------------------------------------------- hard negatives ---


def hard_negatives(
    caption: str, positives: Iterable[str] = (), seed: int = 0
) -> list[Edit]:
  """Returns the caption's rule-based hard negatives, at most one per rule.

  Args:
    caption: the caption.
    positives: its hard positives; no negative equals one of them.
    seed: seeds the choice of site and contrast word.

  Returns:
    Edits in the order of HARD_NEGATIVE_RULES, each different from the
    caption, from `positives` and from the others.
  """
  tokens = caption_tokens.tokenize(caption)
  rng = _rng(seed, caption, "negatives")
  made = [rule(caption, tokens, rng) for rule in _NEGATIVE_RULES]
  seen = {caption_tokens.normal_form(t) for t in (caption, *positives)}
  negatives = []
  for rule, text in zip(HARD_NEGATIVE_RULES, made):
    if text is not None and caption_tokens.normal_form(text) not in seen:
      seen.add(caption_tokens.normal_form(text))
      negatives.append(Edit(text, rule))
  return negatives


def _swap_attributes(caption, tokens, rng) -> str | None:
  """Exchanges two colours, or two other attributes, of different nouns."""
  spots = [
      i for i in range(len(tokens) - 1)
      if tokens[i].lower in lexicon.ATTRIBUTE_CONTRASTS
      and caption_tokens.is_content(tokens[i + 1])
      and tokens[i + 1].lower not in lexicon.ATTRIBUTE_CONTRASTS
  ]
  pairs = [
      (i, j) for i in spots for j in spots
      if i < j and tokens[i].lower != tokens[j].lower
      and ((tokens[i].lower in lexicon.COLOURS)
           == (tokens[j].lower in lexicon.COLOURS))
  ]
  if not pairs:
    return None
  i, j = rng.choice(pairs)
  return caption_tokens.apply_edits(caption, tokens, [
      (i, i + 1, caption_tokens.match_case(tokens[i].text, tokens[j].lower)),
      (j, j + 1, caption_tokens.match_case(tokens[j].text, tokens[i].lower)),
  ])


def _contrast_rule(contrasts: Mapping[str, Sequence[str]], *,
                   skip_present: bool):
  """A rule replacing one site of `contrasts` by a contrasting word.

  Args:
    contrasts: word -> the words that may replace it.
    skip_present: do not use words already in the caption ("an orange and
      white cat" -> "a white and white cat" may not change the meaning).
  """
  index = caption_sites.KeyIndex(contrasts)

  def rule(caption, tokens, rng) -> str | None:
    present = {t.lower for t in tokens} if skip_present else set()
    choices = {
        site: [w for w in contrasts[site[2]] if w not in present]
        for site in caption_sites.find_sites(tokens, index)
    }
    sites = [site for site, words in choices.items() if words]
    if not sites:
      return None
    site = rng.choice(sites)
    return _replace(caption, tokens, site, rng.choice(choices[site]))

  return rule


# Words between a noun phrase and its preposition: "a cat (is sitting) on".
_LINKS = lexicon.word_set(
    "is are sitting standing lying laying sits stands lies lays rests resting"
    " perched parked placed hanging hangs seated located"
)


def _swap_phrases(caption, tokens, rng) -> str | None:
  """Exchanges the noun phrases around an asymmetric relation."""
  candidates = []
  for first, end, _ in caption_sites.find_sites(tokens, _ASYMMETRIC_INDEX):
    before = first
    while (before > 0 and first - before < 2
           and tokens[before - 1].lower in _LINKS):
      before -= 1
    left = caption_phrases.noun_phrase_start(tokens, before)
    if left is not None:
      left = caption_phrases.extend_of_backward(tokens, left)
    right_np = caption_phrases.noun_phrase_end(tokens, end)
    right = (None if right_np is None
             else caption_phrases.extend_of(tokens, right_np))
    if left is None or right is None:
      continue
    if (left > 0 and tokens[left - 1].lower == "and"
        and not caption_tokens.is_determiner(tokens[left])):
      continue  # Maybe half of "an orange and white cat".
    texts = [caption[tokens[a].start : tokens[b - 1].end].lower()
             for a, b in ((left, before), (end, right))]
    if texts[0] != texts[1]:
      candidates.append(((left, before), (end, right)))
  if not candidates:
    return None
  return caption_tokens.swap_ranges(caption, tokens, *rng.choice(candidates))


_ASYMMETRIC_INDEX = caption_sites.KeyIndex(lexicon.ASYMMETRIC_RELATIONS)
_NEGATIVE_RULES: tuple[
    Callable[[str, list[caption_tokens.Token], random.Random], str | None],
    ...,
] = (
    _swap_attributes,
    _contrast_rule(lexicon.ATTRIBUTE_CONTRASTS, skip_present=True),
    # "a man and a woman" -> "a woman and a woman" changes the count.
    _contrast_rule(lexicon.OBJECT_CONTRASTS, skip_present=False),
    _contrast_rule(lexicon.RELATION_CONTRASTS, skip_present=False),
    _swap_phrases,
)
