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

Swaps around "and" are refused wherever the two conjuncts cannot be found
safely without a parser; see `_and_swaps` and docs/generate.md. Where a rule
picks among several sites or words, it draws from a generator seeded by the
seed and the caption, so results do not depend on input order. The word
lists the rules use are public: COLOURS, BENCHMARK_SYNONYMS, EXTRA_SYNONYMS,
ATTRIBUTE_CONTRASTS, OBJECT_CONTRASTS, RELATION_CONTRASTS and
ASYMMETRIC_RELATIONS.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping, Sequence
import dataclasses
import random
import re
from typing import NamedTuple

from tfds_builders.coco_hard_pos_neg import coco_hard_pos_neg

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


# ------------------------------------------------------------------ words ---

# A word: letters/digits, joined across hyphens and apostrophes ("year-old",
# "man's"); anything else that is not a space is a one-character token.
_TOKEN_RE = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*|\S")


class _Token(NamedTuple):
  text: str
  lower: str
  start: int
  end: int

  @property
  def is_word(self) -> bool:
    return self.text[0].isalnum()


def _tokens(caption: str) -> list[_Token]:
  return [
      _Token(m.group(), m.group().lower(), m.start(), m.end())
      for m in _TOKEN_RE.finditer(caption)
  ]


def caption_words(caption: str) -> list[str]:
  """The caption's words, lower-cased, as the rules split them."""
  return [t.lower for t in _tokens(caption) if t.is_word]


def _words(text: str) -> frozenset[str]:
  return frozenset(text.split())


_NUMBERS = _words(
    "one two three four five six seven eight nine ten eleven twelve twenty"
    " dozen dozens"
)
_DETERMINERS = _NUMBERS | _words(
    "a an the this these those his her its their my your our some several"
    " many few both each every all another"
)
# Determiners that a bare second conjunct can share without a change of
# count: "a man and woman" -> "a woman and man" (not "two men and women").
_SHARED_DETERMINERS = _words("a an the his her its their my your our")
_PREPOSITIONS = _words(
    "about above across after against along amid among amongst around as at"
    " atop before behind below beneath beside besides between beyond by down"
    " during for from in inside into near next of off on onto out outside"
    " over past through throughout to toward towards under underneath until"
    " up upon via with within without"
)
_CONJUNCTIONS = _words(
    "and or but nor while whilst that which who whom whose where when whereas"
    " then so because if though although than"
)
_ADVERBS = _words(
    "together nearby there here outdoors indoors alone away back again also"
    " just still now only not very too closely"
)
_AUXILIARIES = _words(
    "is are was were be been am has have had do does did can could will would"
    " may might must should"
)
_CLOSED = (_DETERMINERS | _PREPOSITIONS | _CONJUNCTIONS | _ADVERBS
           | _AUXILIARIES)
# Finite verbs common in COCO captions; -ing and -ed forms are found by
# their ending. Several are also nouns ("a drink"): they end a noun phrase
# only after its head ("a dog and a cat play").
_VERBS = _AUXILIARIES | _words(
    "sit sits sat stand stands stood lay lays laid lie lies walk walks ride"
    " rides rode run runs ran play plays eat eats ate hold holds held look"
    " looks wait waits fly flies flew rest rests pose poses graze grazes watch"
    " watches wear wears sleep sleeps stare stares drink drinks hang hangs"
    " hung swim swims jump jumps cross crosses carry carries talk talks share"
    " shares chase chases make makes made take takes took get gets got go goes"
    " went show shows contain contains feature features cut cuts catch catches"
    " throw throws hit hits kick kicks pull pulls push pushes fill fills cover"
    " covers read reads use uses work works cook cooks serve serves seem seems"
    " appear appears face faces lean leans perch perches drive drives travel"
    " travels move moves surround surrounds line lines sell sells hug hugs"
    " kiss kisses smile smiles prepare prepares enjoy enjoys feed feeds pet"
    " pets wade wades roam roams include includes fight fights sing sings wash"
    " washes set sets lit"
)
# -ing and -ed words that are nouns, not participles.
_ING_NOUNS = _words(
    "awning awnings bedding building buildings ceiling ceilings clothing"
    " crossing dressing dumpling dumplings earring earrings evening filling"
    " fillings frosting icing king landing lighting morning opening openings"
    " outing painting paintings pudding railing railings ring rings setting"
    " settings sibling siblings sling spring springs stocking stockings"
    " string strings stuffing swing swings thing things topping toppings"
    " wedding wing wings"
)
_ED_NOUNS = _words("flowerbed hundred seabed speed steed tweed")
# -ing words often used as noun modifiers ("dining chairs").
_ING_MODIFIERS = _words(
    "baking boarding changing cutting dining frying hiking living parking"
    " running serving shopping sleeping swimming waiting washing"
)


COLOURS = (
    "white", "black", "blue", "brown", "red", "green", "yellow", "orange",
    "pink", "purple", "gray", "grey", "silver", "gold",
)
# Clothing: "in a pink shirt" describes one person, "in a kitchen" a scene.
_CLOTHING = _words(
    "apron aprons bikini coat coats costume costumes dress dresses gear"
    " glasses hat hats helmet helmets hoodie jacket jackets jeans outfit"
    " outfits pants shirt shirts shorts skirt suit suits sweater t-shirt"
    " uniform uniforms vest wetsuit wetsuits"
)


def _is_participle(token: _Token) -> bool:
  lower = token.lower
  if len(lower) <= 4:  # "ring", "bed", "red".
    return False
  if lower.endswith("ing"):
    return lower not in _ING_NOUNS
  return lower.endswith("ed") and lower not in _ED_NOUNS


def _is_verb_like(token: _Token) -> bool:
  return token.lower in _VERBS or _is_participle(token)


def _is_determiner(token: _Token) -> bool:
  return token.lower in _DETERMINERS or token.text.isdigit()


def _is_content(token: _Token) -> bool:
  """A word that can be part of a noun phrase after its determiner."""
  return token.is_word and token.lower not in _CLOSED and not (
      token.text.isdigit()
  )


# ----------------------------------------------------- editing a caption ---


def _match_case(source: str, word: str) -> str:
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


def _apply(
    caption: str, tokens: list[_Token], edits: list[tuple[int, int, str]]
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
          _match_case(tokens[before].text, _article_for(text)),
      ))
    spans.append((tokens[first].start, tokens[end - 1].end, text))
  pieces, position = [], 0
  for start, end, text in spans:
    pieces += [caption[position:start], text]
    position = end
  return "".join(pieces) + caption[position:]


def _swap(
    caption: str,
    tokens: list[_Token],
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
  return _apply(
      caption, tokens, [(*left, right_text), (*right, left_text)]
  )


def _is_acronym(text: str) -> bool:
  first = text.split()[0]
  return first == "I" or (len(first) > 1 and first.isupper())


def normal_form(text: str) -> str:
  """The form in which two captions count as the same."""
  return " ".join(text.lower().split())


# ---------------------------------------------------------- site guards ---


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

  def allows(self, tokens: list[_Token], first: int, end: int) -> bool:
    prev = tokens[first - 1] if first > 0 else None
    nxt = tokens[end] if end < len(tokens) else None
    if prev is not None and (
        prev.lower in self.prev
        or (self.prev_participle and _is_participle(prev))
    ):
      return False
    if nxt is not None and nxt.lower in self.next:
      return False
    if self.needs_object and (
        nxt is None
        or not nxt.is_word
        or nxt.lower in _PREPOSITIONS | _CONJUNCTIONS | _ADVERBS
    ):
      return False
    if self.prev_required and (prev is None or prev.lower not in
                               self.prev_required):
      return False
    if self.next_required and (nxt is None or nxt.lower not in
                               self.next_required):
      return False
    if self.object_words and end < len(tokens):
      object_end = _np_forward(tokens, end) or end
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
        next=_words(
            "front between order half line addition charge case fact"
            " particular general love use progress unison action pieces place"
        ),
        prev=_words("dress dresses"),
        prev_participle=True,
        needs_object=True,
        object_words=_CLOTHING | frozenset(COLOURS),
    ),
    # Passive "by" ("pulled by horses") is not "near".
    "by": _Guard(
        prev=_words("side one made held taken driven drawn ridden eaten"),
        next=_words("itself himself herself themselves side hand"),
        prev_participle=True,
        needs_object=True,
    ),
    "old": _Guard(
        prev=_words("year years month months week weeks day days how"),
        next=_words("fashion fashioned"),
    ),
    "clear": _Guard(next_required=_words("sky skies day water weather night")),
    "looking": _Guard(
        prev=_words("good nice funny strange odd weird cool"),
        next=_words("for like forward"),
    ),
    "hanging": _Guard(next=_words("out")),
    "smiling": _Guard(next=_PREPOSITIONS | _words("while")),
    # After a determiner these are noun modifiers: "a sitting area".
    "sitting": _Guard(prev=_DETERMINERS),
    "standing": _Guard(prev=_DETERMINERS, next=_words("ovation room")),
    "walking": _Guard(prev=_DETERMINERS, next=_words("stick sticks")),
    "eating": _Guard(prev=_DETERMINERS, next=_words("area utensils")),
    # "riding on a horse" would become "traveling on on a horse".
    "riding": _Guard(next=_PREPOSITIONS, needs_object=True),
    "under": _Guard(
        next=_words("construction way control pressure repair age"),
        needs_object=True,
    ),
    "black": _Guard(idioms=_COLOUR_IDIOMS),
    "white": _Guard(idioms=_COLOUR_IDIOMS),
    "on": _Guard(
        prev=_words("turned turn turns put puts"),
        next=_words("display sale fire"),
        needs_object=True,
    ),
    "with": _Guard(prev=_words("along together"), prev_participle=True,
                   needs_object=True),
    "up": _Guard(
        prev=_words("close set made make makes lined picked pick cut tied"
                    " dressed lit hooked piled")
    ),
    "down": _Guard(prev=_words("upside")),
    # "left" is also a verb; "right" also an adverb ("right next to").
    "left": _Guard(prev_required=_words("the to its his her their my your")),
    "right": _Guard(prev_required=_words("the to its his her their my your")),
    "full": _Guard(next=_words("of")),
    "dog": _Guard(prev=_words("hot")),
    "dogs": _Guard(prev=_words("hot")),
    "bear": _Guard(prev=_words("teddy")),
    "bears": _Guard(prev=_words("teddy")),
    "plate": _Guard(prev=_words("license")),
}
for _word in (
    "above", "below", "near", "next to", "on top of", "behind", "beside",
    "beneath", "underneath", "atop", "inside", "into", "out of", "far from",
    "in front of", "without", "close to",
):
  _GUARDS.setdefault(_word, _PREPOSITION)


def _guard_allows(key: str, tokens: list[_Token], first: int, end: int) -> bool:
  guard = _GUARDS.get(key)
  return guard is None or guard.allows(tokens, first, end)


# ----------------------------------------------------------- word lists ---


class _KeyIndex:
  """Lower-case keys of one or more words, grouped by their length."""

  def __init__(self, keys: Iterable[str]):
    self.by_length = collections.defaultdict(set)
    for key in keys:
      self.by_length[len(key.split())].add(key)
    self.lengths = sorted(self.by_length, reverse=True)


# The synonym map of the paper's REPLACE benchmark, recovered from its
# released files (each HP against its caption); "sitting", "walking" and "hanging" are
# in both its attribute and relation maps with the same synonym.
BENCHMARK_SYNONYMS = {
    "white": "ivory",
    "black": "ebony",
    "blue": "sapphire",
    "brown": "chestnut",
    "red": "crimson",
    "green": "emerald",
    "silver": "metallic",
    "large": "big",
    "small": "tiny",
    "long": "lengthy",
    "big": "large",
    "huge": "big",
    "standing": "upright",
    "sitting": "seated",
    "walking": "strolling",
    "wet": "damp",
    "smiling": "happy",
    "old": "aged",
    "clear": "unclouded",
    "eating": "ingesting",
    "young": "youthful",
    "hanging": "dangling",
    "looking": "gazing",
    "in": "within",
    "wearing": "in",
    "behind": "to the rear of",
    "holding": "grasping",
    "on top of": "on",
    "near": "next to",
    "next to": "near",
    "under": "beneath",
    "by": "near",
    "wears": "in",
    "above": "on top of",
    "riding": "traveling on",
    # The released files turn "riding on" into "traveling on" too.
    "riding on": "traveling on",
}
# Ours: frequent COCO words with a synonym that keeps the meaning.
EXTRA_SYNONYMS = {
    "couch": "sofa",
    "couches": "sofas",
    "sofa": "couch",
    "sofas": "couches",
    "photo": "picture",
    "photos": "pictures",
    "photograph": "picture",
    "picture": "photo",
    "pictures": "photos",
    "bicycle": "bike",
    "bicycles": "bikes",
    "bike": "bicycle",
    "bikes": "bicycles",
    "motorbike": "motorcycle",
    "airplane": "plane",
    "airplanes": "planes",
    "television": "TV",
    "kid": "child",
    "kids": "children",
    "child": "kid",
    "children": "kids",
    "lady": "woman",
    "ladies": "women",
    "beside": "next to",
    "close to": "near",
    "atop": "on top of",
    "filled with": "full of",
    "cellphone": "cell phone",
    "cell phone": "cellphone",
    "automobile": "car",
    "beneath": "underneath",
}
# key -> (rule, synonym); the benchmark's map wins where both have a key.
_SYNONYMS = {
    **{k: ("replace_extra", v) for k, v in EXTRA_SYNONYMS.items()},
    **{k: ("replace_benchmark", v) for k, v in BENCHMARK_SYNONYMS.items()},
}
_SYNONYM_INDEX = _KeyIndex(_SYNONYMS)

_BASIC_COLOURS = ("white", "black", "blue", "brown", "red", "green", "yellow",
                  "orange", "pink", "purple", "gray")
# Contrast lists for hard negatives: word -> words that change the meaning.
ATTRIBUTE_CONTRASTS = {
    **{
        colour: tuple(
            c for c in _BASIC_COLOURS
            if c != colour and {c, colour} != {"gray", "grey"}
        )
        for colour in COLOURS
    },
    "small": ("large", "big"),
    "big": ("small",),
    "large": ("small",),
    "little": ("big",),
    "huge": ("tiny",),
    "tiny": ("huge",),
    "tall": ("short",),
    "short": ("tall",),
    "long": ("short",),
    "young": ("old",),
    "old": ("young",),
    "new": ("old",),
    "empty": ("full",),
    "full": ("empty",),
    "open": ("closed",),
    "closed": ("open",),
    "wet": ("dry",),
    "dry": ("wet",),
    "clean": ("dirty",),
    "dirty": ("clean",),
    "hot": ("cold",),
    "cold": ("hot",),
    "wooden": ("metal",),
    "metal": ("wooden",),
    "plastic": ("wooden",),
    "dark": ("bright",),
    "bright": ("dark",),
    "sunny": ("cloudy",),
    "cloudy": ("sunny",),
    "standing": ("sitting",),
    "sitting": ("standing",),
    "asleep": ("awake",),
    "awake": ("asleep",),
    "happy": ("sad",),
    "sad": ("happy",),
}
_OBJECT_PAIRS = (
    ("man", "woman"), ("men", "women"), ("boy", "girl"), ("boys", "girls"),
    ("father", "mother"), ("brother", "sister"), ("husband", "wife"),
    ("gentleman", "lady"), ("male", "female"), ("cat", "dog"),
    ("cats", "dogs"), ("kitten", "puppy"), ("horse", "cow"),
    ("horses", "cows"), ("giraffe", "zebra"), ("giraffes", "zebras"),
    ("elephant", "bear"), ("elephants", "bears"), ("car", "truck"),
    ("cars", "trucks"), ("bus", "train"), ("buses", "trains"),
    ("bicycle", "motorcycle"), ("pizza", "sandwich"),
    ("pizzas", "sandwiches"), ("fork", "knife"), ("forks", "knives"),
    ("plate", "bowl"), ("plates", "bowls"), ("couch", "bed"),
    ("chair", "bench"), ("surfboard", "skateboard"),
    ("skateboard", "snowboard"), ("kitchen", "bathroom"),
    ("banana", "apple"), ("bananas", "apples"), ("kite", "umbrella"),
)
OBJECT_CONTRASTS: dict[str, tuple[str, ...]] = {}
for _a, _b in _OBJECT_PAIRS:
  OBJECT_CONTRASTS[_a] = OBJECT_CONTRASTS.get(_a, ()) + (_b,)
  OBJECT_CONTRASTS[_b] = OBJECT_CONTRASTS.get(_b, ()) + (_a,)
OBJECT_CONTRASTS["bike"] = ("motorcycle",)
RELATION_CONTRASTS = {
    "on": ("under",),
    "under": ("on", "above"),
    "on top of": ("under", "beneath"),
    "atop": ("under",),
    "above": ("below", "under"),
    "below": ("above",),
    "beneath": ("above",),
    "underneath": ("on top of",),
    "over": ("under",),
    "behind": ("in front of",),
    "in front of": ("behind",),
    "inside": ("outside",),
    "outside": ("inside",),
    "into": ("out of",),
    "out of": ("into",),
    "left": ("right",),
    "right": ("left",),
    "up": ("down",),
    "down": ("up",),
    "top": ("bottom",),
    "bottom": ("top",),
    "with": ("without",),
    "without": ("with",),
    "near": ("far from",),
    "next to": ("far from",),
    "far from": ("next to",),
}
# Relations whose sides cannot be exchanged without changing the meaning
# (not "next to", "near", "with": those are symmetric).
ASYMMETRIC_RELATIONS = _words(
    "on under in inside above below behind atop underneath beneath into onto"
    " riding holding eating chasing carrying wearing pulling feeding pushing"
    " throwing catching kicking biting hugging petting drinking"
) | {"on top of", "in front of", "inside of"}
# Words between a noun phrase and its preposition: "a cat (is sitting) on".
_LINKS = _words(
    "is are sitting standing lying laying sits stands lies lays rests resting"
    " perched parked placed hanging hangs seated located"
)


def _sites(
    tokens: list[_Token], index: _KeyIndex
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


# ------------------------------------------------------- noun phrases ---


def _np_forward(tokens: list[_Token], first: int) -> int | None:
  """Returns the end of the noun phrase starting at `first`, or None.

  A noun phrase is an optional determiner and 1-4 content words. A verb,
  -ing or -ed word right after the determiner is a modifier ("a cutting
  board"); after a content word it ends the phrase ("a dog sitting").
  """
  i = first
  has_determiner = i < len(tokens) and _is_determiner(tokens[i])
  if has_determiner:
    i += 1
  start = i
  while i < len(tokens) and _is_content(tokens[i]):
    if i > start and _is_verb_like(tokens[i]):
      break
    i += 1
  if i == start or i - start > 4:
    return None
  if not has_determiner and _is_verb_like(tokens[start]):
    return None  # A verb phrase: "and waiting on the shore".
  return i


def _np_backward(tokens: list[_Token], end: int) -> int | None:
  """Returns the first token of the noun phrase ending at `end`, or None."""
  i = end - 1
  count = 0
  while i >= 0:
    token = tokens[i]
    if _is_determiner(token):
      return i if count else None
    if not _is_content(token):
      break
    # "a cat sitting" ends before "sitting"; "of uncooked rice" does not.
    if _is_verb_like(token) and i > 0 and _is_content(tokens[i - 1]):
      break
    count += 1
    i -= 1
  if not count or count > 4:
    return None
  return i + 1


def _extend_of(tokens: list[_Token], end: int) -> int | None:
  """Extends a phrase ending at `end` over "of" phrases ("a cup of tea")."""
  while end < len(tokens) and tokens[end].lower == "of":
    end = _np_forward(tokens, end + 1)
    if end is None:
      return None
  return end


def _extend_of_backward(tokens: list[_Token], first: int) -> int | None:
  """Extends a phrase starting at `first` back over "of" ("a cup of tea")."""
  while first > 0 and tokens[first - 1].lower == "of":
    first = _np_backward(tokens, first - 1)
    if first is None:
      return None
  return first


def _extend_attire(tokens: list[_Token], end: int) -> int | None:
  """Extends a phrase over an "in" phrase of clothing or colour after it.

  Such a phrase describes the phrase before it ("a woman in a pink shirt"),
  so it moves with it; other prepositional phrases ("in a kitchen") are
  taken to describe both conjuncts and stay in place.
  """
  if end >= len(tokens) or tokens[end].lower != "in":
    return end
  np_end = _np_forward(tokens, end + 1)
  if np_end is None:
    return end
  if not any(t.lower in _CLOTHING or t.lower in COLOURS
             for t in tokens[end + 1 : np_end]):
    return end
  return _extend_of(tokens, np_end)


# ---------------------------------------------------- swaps around "and" ---

# What may precede the first conjunct of "X and Y" when the rule cannot
# otherwise tell where X starts: "a man on a bike and a dog" may be
# "[a man on a bike] and [a dog]", so "on" is not here.
_SAFE_CONTEXTS = _words(
    "between of with both has have having contains containing including"
    " includes featuring features shows showing"
)
# Nouns whose "of" takes a coordination as a whole: "a mixture of rice and
# broccoli" (but not "zebras of different sizes and warthogs").
_OF_HEADS = _words(
    "assortment assortments bag bags basket baskets bowl bowls box boxes"
    " bunch bunches collection collections consisting cup cups display"
    " displays full group groups image images kinds lot lots made mixture"
    " pair picture pictures photo photos pieces pile piles plate plates"
    " platter selection set slices stack stacks tray trays types variety"
)
# After the second conjunct these may describe it alone ("a dog and a man
# wearing a hat"), or make it part of a larger phrase ("a pie and a cup of
# tea or coffee", "desks and places to sit").
_UNSHARED_FOLLOWERS = _words(
    "with wearing holding carrying dressed who that which whose or to up"
    " down off out"
)


def _and_swaps(caption: str, tokens: list[_Token]) -> list[Edit]:
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
      rule, left, right = swap
      swaps.append(Edit(_swap(caption, tokens, left, right), rule))
  return swaps


_Swap = tuple[str, tuple[int, int], tuple[int, int]]


def _swap_adjectives(tokens: list[_Token], k: int) -> _Swap | None:
  if tokens[k - 1].lower in COLOURS and tokens[k + 1].lower in COLOURS:
    return "swap_adjectives", (k - 1, k), (k + 1, k + 2)
  return None


def _is_break(token: _Token) -> bool:
  return not token.is_word or token.lower in _CONJUNCTIONS


def _swap_verb_phrases(tokens: list[_Token], k: int) -> _Swap | None:
  verb = tokens[k + 1]
  if not (_is_participle(verb) and verb.lower.endswith("ing")):
    return None
  if (verb.lower in _ING_MODIFIERS and k + 2 < len(tokens)
      and _is_content(tokens[k + 2])):
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
        and _is_participle(tokens[j])
        and not (j > 0 and _is_determiner(tokens[j - 1]))
    ):
      if j == k - 1 and end > k + 2:
        return None  # "cutting and preparing a pizza": a shared object.
      return "swap_verb_phrases", (j, k), (k + 1, end)
  return None


def _swap_noun_phrases(tokens: list[_Token], k: int) -> _Swap | None:
  serial_comma = tokens[k - 1].text == ","
  left_end = k - 1 if serial_comma else k
  left = _np_backward(tokens, left_end)
  right_first = k + 1
  right_np = _np_forward(tokens, right_first)
  if left is None or right_np is None:
    return None
  context = tokens[left - 1].lower if left > 0 else None
  if serial_comma and context != ",":
    return None  # "a man holds a bat, and a dog ..." is two clauses.
  if context == "," and left > 1 and tokens[left - 2].lower in (
      ATTRIBUTE_CONTRASTS):
    return None  # "brown, leather furniture" is no list.
  left_det = _is_determiner(tokens[left])
  right_det = _is_determiner(tokens[right_first])
  right_end = _extend_of(tokens, right_np)
  if right_end is None:
    return None
  if context == "of" and (left_det or right_det or left < 2
                          or tokens[left - 2].lower not in _OF_HEADS):
    # "plates of food and two glasses of wine": the parallel "of" makes
    # "[plates of food] and [two glasses of wine]" likely.
    outer = _np_backward(tokens, left - 1)
    if outer is None or right_end == right_np:
      return None
    left, context = outer, tokens[outer - 1].lower if outer > 0 else None
    if context == "of":
      return None  # "a picture of plates of food and ...": too deep.
    left_det = _is_determiner(tokens[left])
  if context is not None and context not in _SAFE_CONTEXTS | {","}:
    is_there = context in ("is", "are") and left > 1 and tokens[
        left - 2].lower == "there"
    if not is_there:
      return None
  if context in _SAFE_CONTEXTS - {"between"} and left_det != right_det:
    return None
  right_end = _extend_attire(tokens, right_end)
  if right_end is None:
    return None
  if right_end < len(tokens) and (
      _is_determiner(tokens[right_end])
      or tokens[right_end].lower in _UNSHARED_FOLLOWERS
  ):
    return None
  if tokens[left_end - 1].lower in ATTRIBUTE_CONTRASTS or tokens[
      right_end - 1].lower in ATTRIBUTE_CONTRASTS:
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
    if (tokens[left].lower not in _SHARED_DETERMINERS or k - left != 2
        or right_end - right_first > 1 or (
            tokens[left].lower in ("a", "an")
            and tokens[right_end - 1].lower.endswith("s"))):
      return None
    return rule, (left + 1, left_end), (right_first, right_end)
  return rule, (left, left_end), (right_first, right_end)


# ------------------------------------------ hard positives and negatives ---


def _rng(seed: int, caption: str, purpose: str) -> random.Random:
  # Seeded by text (hashed with SHA-512 by `random`), so a caption gets the
  # same draw wherever it is in the input.
  return random.Random(f"{seed}\0{purpose}\0{caption}")


def _replace(
    caption: str,
    tokens: list[_Token],
    site: tuple[int, int, str],
    word: str,
) -> str:
  first, end, _ = site
  return _apply(caption, tokens, [(first, end,
                                   _match_case(tokens[first].text, word))])


def hard_positives(caption: str, seed: int = 0) -> HardPositives:
  """Returns the caption's rule-based swap and replace hard positives.

  Args:
    caption: the caption.
    seed: seeds the choice among several swaps or synonym sites.

  Returns:
    One edit of each kind, different from the caption, or None where no
    rule of that kind applies.
  """
  tokens = _tokens(caption)
  swap = _pick(seed, caption, "swap", _and_swaps(caption, tokens))
  replacements = [
      Edit(_replace(caption, tokens, site, word), rule)
      for site in _sites(tokens, _SYNONYM_INDEX)
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
  edits = [
      e for e in edits
      if normal_form(e.text) != normal_form(caption)
      and e.text != coco_hard_pos_neg.NO_HARD_POSITIVE
  ]
  return _rng(seed, caption, purpose).choice(edits) if edits else None


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
  tokens = _tokens(caption)
  rng = _rng(seed, caption, "negatives")
  made = [rule(caption, tokens, rng) for rule in _NEGATIVE_RULES]
  seen = {normal_form(caption)} | {normal_form(p) for p in positives}
  negatives = []
  for rule, text in zip(HARD_NEGATIVE_RULES, made):
    if text is not None and normal_form(text) not in seen:
      seen.add(normal_form(text))
      negatives.append(Edit(text, rule))
  return negatives


def _swap_attributes(caption, tokens, rng) -> str | None:
  """Exchanges two colours, or two other attributes, of different nouns."""
  spots = [
      i for i in range(len(tokens) - 1)
      if tokens[i].lower in ATTRIBUTE_CONTRASTS
      and _is_content(tokens[i + 1])
      and tokens[i + 1].lower not in ATTRIBUTE_CONTRASTS
  ]
  pairs = [
      (i, j) for i in spots for j in spots
      if i < j and tokens[i].lower != tokens[j].lower
      and (tokens[i].lower in COLOURS) == (tokens[j].lower in COLOURS)
  ]
  if not pairs:
    return None
  i, j = rng.choice(pairs)
  return _apply(caption, tokens, [
      (i, i + 1, _match_case(tokens[i].text, tokens[j].lower)),
      (j, j + 1, _match_case(tokens[j].text, tokens[i].lower)),
  ])


def _contrast_rule(contrasts: Mapping[str, Sequence[str]], *,
                   skip_present: bool):
  """A rule replacing one site of `contrasts` by a contrasting word.

  Args:
    contrasts: word -> the words that may replace it.
    skip_present: do not use words already in the caption ("an orange and
      white cat" -> "a white and white cat" may not change the meaning).
  """
  index = _KeyIndex(contrasts)

  def rule(caption, tokens, rng) -> str | None:
    present = {t.lower for t in tokens} if skip_present else set()
    choices = {
        site: [w for w in contrasts[site[2]] if w not in present]
        for site in _sites(tokens, index)
    }
    sites = [site for site, words in choices.items() if words]
    if not sites:
      return None
    site = rng.choice(sites)
    return _replace(caption, tokens, site, rng.choice(choices[site]))

  return rule


def _swap_phrases(caption, tokens, rng) -> str | None:
  """Exchanges the noun phrases around an asymmetric relation."""
  candidates = []
  for first, end, _ in _sites(tokens, _ASYMMETRIC_INDEX):
    before = first
    while before > 0 and first - before < 2 and tokens[before - 1].lower in (
        _LINKS
    ):
      before -= 1
    left = _np_backward(tokens, before)
    if left is not None:
      left = _extend_of_backward(tokens, left)
    right_np = _np_forward(tokens, end)
    right = None if right_np is None else _extend_of(tokens, right_np)
    if left is None or right is None:
      continue
    if left > 0 and tokens[left - 1].lower == "and" and not _is_determiner(
        tokens[left]):
      continue  # Maybe half of "an orange and white cat".
    texts = [caption[tokens[a].start : tokens[b - 1].end].lower()
             for a, b in ((left, before), (end, right))]
    if texts[0] != texts[1]:
      candidates.append(((left, before), (end, right)))
  if not candidates:
    return None
  return _swap(caption, tokens, *rng.choice(candidates))


_ASYMMETRIC_INDEX = _KeyIndex(ASYMMETRIC_RELATIONS)
_NEGATIVE_RULES: tuple[Callable[[str, list[_Token], random.Random],
                                str | None], ...] = (
    _swap_attributes,
    _contrast_rule(ATTRIBUTE_CONTRASTS, skip_present=True),
    # "a man and a woman" -> "a woman and a woman" changes the count.
    _contrast_rule(OBJECT_CONTRASTS, skip_present=False),
    _contrast_rule(RELATION_CONTRASTS, skip_present=False),
    _swap_phrases,
)

