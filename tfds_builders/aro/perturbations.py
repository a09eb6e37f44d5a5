"""ARO's four word-order perturbations of a caption (COCO- and Flickr30k-Order).

ARO (github.com/mertyg/vision-language-models-are-bows) makes, for each
caption, four false options (dataset_zoo/aro_datasets.py L208-210 and
L307-309, in this order) with the methods of `TextShuffler`
(dataset_zoo/perturbations.py, commit c70fdc2):

  shuffle_nouns_and_adj          L50-63: the nouns change places among
                                 themselves, and so do the adjectives
  shuffle_allbut_nouns_and_adj   L69-82: every other token changes place,
                                 nouns and adjectives stay
  shuffle_within_trigrams        L85-109: tokens in runs of three, each run
                                 shuffled in place
  shuffle_trigrams               L112-118: the runs of three change places

and passes the caption and each option through `pre_caption` (its
dataset_zoo/retrieval.py L15-34, max_words=30), as `pre_caption` here.

Where this differs from ARO, and why (spaCy and nltk are not dependencies
of this project, and spaCy's model cannot be downloaded at build time):
  * Part of speech. ARO tags with spaCy's `en_core_web_sm` and takes Penn
    tags NN, NNS, NNP, NNPS as nouns and JJ, JJR, JJS as adjectives. `tag`
    approximates that with rules over `hardpos_jax.caption_lexicon`'s word
    classes (below); it will disagree with spaCy on some words, so the noun
    and adjective shuffles are close to ARO's, not identical.
  * Tokens. ARO splits with spaCy for the first two and `nltk.word_tokenize`
    for the trigram ones; `tokenize` is one Penn-Treebank-style splitter for
    all four (punctuation and the clitics 's, n't, 're, ... apart; words
    kept whole across hyphens, as nltk does).
  * Randomness. ARO draws from numpy's and Python's global generators in
    dataset order; here the k-th perturbation of item `index` draws from
    `np.random.default_rng([seed, index, k])`, so an item's options depend
    on (seed, index, caption) only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import re

import numpy as np

from hardpos_jax import caption_lexicon as lexicon
from hardpos_jax import caption_tokens

# ARO's COCO_Order / Flickr30k_Order default (aro_datasets.py L197, L284).
MAX_WORDS = 30

NOUN, ADJECTIVE, OTHER = "noun", "adjective", "other"

# A Penn-Treebank-style token: the stem before "n't" ("do" of "don't"),
# "n't", a clitic ("'s"), a word joined across hyphens, or one other
# character.
_TOKEN_RE = re.compile(
    r"[^\W_]+(?=n['’]t\b)|n['’]t\b|['’](?:s|re|ve|ll|d|m)\b"
    r"|[^\W_]+(?:-[^\W_]+)*|\S",
    re.IGNORECASE,
)
_PRONOUNS = lexicon.word_set(
    "i me you he him she it we us they them someone somebody something anyone"
    " anything everyone everything nobody nothing himself herself itself"
    " themselves"
)
# Nouns that end in "-ly", which rule 4 of `tag` would take for adverbs.
_LY_NOUNS = lexicon.word_set(
    "family belly jelly lily butterfly assembly supply bully rally"
)


def _is_participle(lower: str) -> bool:
  """An -ing or -ed word that is not a known noun (the caption rules' test)."""
  return caption_tokens.is_participle(
      caption_tokens.Token(lower, lower, 0, len(lower)))


# Adjectives common in COCO and Flickr30k captions: the colours, the
# attributes of the lexicon's contrast lists that are not participles
# ("standing"), and more; "many", "few" and "several" are JJ in the Penn tag
# set although the lexicon counts them as determiners.
ADJECTIVES = (
    frozenset(lexicon.COLOURS)
    | frozenset(w for w in lexicon.ATTRIBUTE_CONTRASTS
                if not _is_participle(w))
    | lexicon.word_set(
        "many few several other different various same single double giant"
        " whole adult beautiful blond blonde busy calm colorful colourful cute"
        " delicious electric fancy fat favorite fluffy fresh furry grassy"
        " hairy healthy heavy high indoor outdoor live local low lovely"
        " friendly lonely ugly curly modern multiple narrow nice plain pretty"
        " rainy rocky rural sandy shallow sharp shiny skinny snowy soft square"
        " steep thick thin vintage wide wild tan"
    )
)


def pre_caption(caption: str, max_words: int = MAX_WORDS) -> str:
  """ARO's caption cleaning (retrieval.py L15-34), exactly.

  Lower-cases, turns `.!"()*#:;~` into spaces, collapses runs of two or more
  white-space characters, strips, and keeps the first `max_words` words.
  """
  caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
  caption = re.sub(r"\s{2,}", " ", caption)
  caption = caption.rstrip("\n").strip(" ")
  words = caption.split(" ")
  if len(words) > max_words:
    caption = " ".join(words[:max_words])
  return caption


def tokenize(caption: str) -> list[str]:
  """The caption's tokens (see the module docstring), case kept."""
  return _TOKEN_RE.findall(caption)


def _is_word(token: str) -> bool:
  """Letters, maybe hyphenated: not punctuation, a clitic or a number."""
  return token.replace("-", "").isalpha()


def _comparative_base(lower: str) -> str | None:
  """The known adjective of a comparative or superlative ("bigger")."""
  for suffix in ("er", "est"):
    if lower.endswith(suffix) and len(lower) > len(suffix) + 2:
      stem = lower[: -len(suffix)]
      # bigg-er -> big, larg-er -> large, happi-er -> happy.
      for base in (stem, stem[:-1], stem + "e", stem[:-1] + "y"):
        if base in ADJECTIVES:
          return base
  return None


def tag(tokens: Sequence[str]) -> list[str]:
  """NOUN, ADJECTIVE or OTHER per token: a rule-based stand-in for spaCy.

  Rules, in order, on the lower-cased token:
    1. punctuation, clitics and anything with a digit: OTHER (spaCy: CD,
       POS, punctuation tags);
    2. a known adjective (ADJECTIVES) or its -er/-est form: ADJECTIVE;
    3. determiners, prepositions, conjunctions, adverbs, auxiliaries and
       pronouns: OTHER;
    4. a verb of the lexicon or an "-ly" word (not "family"): NOUN right
       after a determiner or adjective ("a drink"), else OTHER;
    5. an -ing/-ed participle: OTHER, but an -ing noun modifier before a
       content word is a NOUN ("dining table", as spaCy tags it);
    6. anything else: NOUN (captions' open-class words are mostly nouns,
       proper nouns included).

  Args:
    tokens: the T tokens of a caption (`tokenize`).

  Returns:
    T tags.
  """
  lowers = [t.lower() for t in tokens]
  tags = []
  for i, lower in enumerate(lowers):
    before = tags[i - 1] if i else OTHER
    after = lowers[i + 1] if i + 1 < len(lowers) else ""
    if not _is_word(lower):
      tags.append(OTHER)
    elif lower in ADJECTIVES or _comparative_base(lower):
      tags.append(ADJECTIVE)
    elif lower in lexicon.CLOSED_CLASS or lower in _PRONOUNS:
      tags.append(OTHER)
    elif lower in lexicon.VERBS or (lower.endswith("ly")
                                    and lower not in _LY_NOUNS):
      after_determiner = i > 0 and lowers[i - 1] in lexicon.DETERMINERS
      tags.append(NOUN if after_determiner or before == ADJECTIVE else OTHER)
    elif _is_participle(lower):
      modifier = (lower in lexicon.ING_MODIFIERS and _is_word(after)
                  and after not in lexicon.CLOSED_CLASS)
      tags.append(NOUN if modifier else OTHER)
    else:
      tags.append(NOUN)
  return tags


def _shuffle_places(tokens: list[str], places: Sequence[int],
                    rng: np.random.Generator) -> None:
  """Permutes the tokens at `places` among themselves, in place.

  As ARO's `text[idx] = np.random.permutation(text[idx])`: place idx[i]
  gets the token that was at idx[order[i]].
  """
  order = rng.permutation(len(places))
  moved = [tokens[places[j]] for j in order]
  for place, token in zip(places, moved):
    tokens[place] = token


def shuffle_nouns_and_adj(caption: str, rng: np.random.Generator) -> str:
  """Nouns change places among nouns, then adjectives among adjectives."""
  tokens = tokenize(caption)
  tags = tag(tokens)
  for kind in (NOUN, ADJECTIVE):
    _shuffle_places(tokens, [i for i, t in enumerate(tags) if t == kind], rng)
  return " ".join(tokens)


def shuffle_allbut_nouns_and_adj(caption: str,
                                 rng: np.random.Generator) -> str:
  """Every token but the nouns and adjectives changes place."""
  tokens = tokenize(caption)
  tags = tag(tokens)
  _shuffle_places(tokens, [i for i, t in enumerate(tags) if t == OTHER], rng)
  return " ".join(tokens)


def _trigrams(tokens: list[str]) -> list[list[str]]:
  """Runs of three tokens, the last one shorter (ARO's get_trigrams)."""
  return [tokens[i:i + 3] for i in range(0, len(tokens), 3)]


def shuffle_within_trigrams(caption: str, rng: np.random.Generator) -> str:
  """Each run of three tokens is shuffled in place."""
  trigrams = _trigrams(tokenize(caption))
  return " ".join(" ".join(trigram[j] for j in rng.permutation(len(trigram)))
                  for trigram in trigrams)


def shuffle_trigrams(caption: str, rng: np.random.Generator) -> str:
  """The runs of three tokens change places, each kept in order."""
  trigrams = _trigrams(tokenize(caption))
  return " ".join(" ".join(trigrams[j])
                  for j in rng.permutation(len(trigrams)))


# ARO's perturbations in its order (aro_datasets.py L209-210): the false
# options 1-4 of each item.
PERTURBATIONS: dict[str, Callable[[str, np.random.Generator], str]] = {
    "shuffle_nouns_and_adj": shuffle_nouns_and_adj,
    "shuffle_allbut_nouns_and_adj": shuffle_allbut_nouns_and_adj,
    "shuffle_within_trigrams": shuffle_within_trigrams,
    "shuffle_trigrams": shuffle_trigrams,
}


def options(caption: str, seed: int, index: int) -> list[str]:
  """An order item's five options, as ARO's `caption_options`.

  Args:
    caption: the caption as released.
    seed: the dataset's seed.
    index: the item's number (ARO's test-case position).

  Returns:
    [pre_caption(caption), then pre_caption of each PERTURBATIONS output
    of the raw caption] (aro_datasets.py L235-238); the true caption is
    option 0.
  """
  perturbed = [fn(caption, np.random.default_rng([seed, index, k]))
               for k, fn in enumerate(PERTURBATIONS.values())]
  return [pre_caption(caption), *map(pre_caption, perturbed)]
