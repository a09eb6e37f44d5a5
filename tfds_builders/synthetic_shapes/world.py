"""The synthetic compositional world: scenes, pictures, captions and truth.

A scene holds two or three objects, each with a shape, a colour and a size,
placed in distinct columns and distinct rows of a 3x3 grid, so that every pair
of objects is unambiguously left/right of and above/below each other. Colours
and shapes are distinct within a scene, so a (colour, shape) phrase names at
most one object, and swapping or replacing an attribute always makes a phrase
name no object.

A caption states a `Claim`: phrases joined by "and" (every phrase names a
distinct object) or two phrases joined by a relation. `render` writes a claim
in words (every concept has one or more surface words), `parse` reads it back
and `holds` decides whether a claim is true of a scene. Hard negatives change
the claim's meaning to a false one; hard positives change its wording only, as
in Kamath et al.: a synonym (kind "replace"), or the phrases around "and"
swapped / a relation stated from the other side (kind "swap").

The training captions (`pretrain`, `train`) follow the world's conventions,
as web alt-text and COCO captions follow those of everyday English: a
concept is named by its canonical word (a synonym with probability
SYNONYM_P) and phrases joined by "and" come left to right (another order
with probability UNUSUAL_ORDER_P). The benchmark writes its captions and hard
negatives in the conventions and its hard positives against them (the rare
synonym; the phrases around "and" in the unusual order), as the paper's
benchmark edits ("ivory", "to the rear of", swapped lists) are rare wordings.
A model can therefore score captions by how conventional they look, which is
the surface cue the paper says hard-negative fine-tuning latches onto.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import io
import itertools
import re

import numpy as np
from PIL import Image
from PIL import ImageDraw

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "diamond", "hexagon")
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
CONVERSE = {
    "left of": "right of",
    "right of": "left of",
    "above": "below",
    "below": "above",
}
# Surface words of each concept; the first is the canonical one. No surface
# word names two concepts, so `parse` is unambiguous. Colour and size synonyms
# follow the paper's REPLACE map where it has one (red->crimson, ...).
SURFACES = {
    "red": ("red", "crimson"),
    "green": ("green", "emerald"),
    "blue": ("blue", "sapphire"),
    "yellow": ("yellow", "golden"),
    "purple": ("purple", "violet"),
    "white": ("white", "ivory"),
    "small": ("small", "tiny"),
    "large": ("large", "big"),
    "circle": ("circle", "disc"),
    "square": ("square",),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
    "hexagon": ("hexagon",),
    "left of": ("left of", "to the left of"),
    "right of": ("right of", "to the right of"),
    "above": ("above", "over"),
    "below": ("below", "beneath", "under"),
}
PREFIXES = ("", "a picture of ", "an image of ", "there is ", "a photo of ")

GRID = 3
# Object diameter as a fraction of the image side; cells are 1/3 wide, so a
# large object with the largest jitter still stays inside its own cell.
DIAMETER = {"small": 0.14, "large": 0.26}
JITTER = 0.03
# The conventions of the training captions (module docstring).
SYNONYM_P = 0.1
UNUSUAL_ORDER_P = 0.1
MAX_HARD_NEGATIVES = 4
MAX_REPLACE_POSITIVES = 2

_SPLIT_CODES = {
    "pretrain": 0,
    "train": 1,
    "test_replace_att": 2,
    "test_replace_rel": 3,
    "test_swap": 4,
}
SPLITS = tuple(_SPLIT_CODES)


@dataclasses.dataclass(frozen=True)
class Obj:
  """One object: attributes, grid cell (column, row; row 0 is the top)."""

  shape: str
  colour: str
  size: str
  column: int
  row: int
  dx: float
  dy: float


@dataclasses.dataclass(frozen=True)
class Scene:
  """The objects, and the grey level (0-255) of the background."""

  objects: tuple[Obj, ...]
  background: int


@dataclasses.dataclass(frozen=True)
class Phrase:
  """A noun phrase "a [size] colour shape"; size None means not mentioned."""

  colour: str
  shape: str
  size: str | None = None


@dataclasses.dataclass(frozen=True)
class Claim:
  """Phrases joined by "and" (relation None) or two phrases and a relation."""

  phrases: tuple[Phrase, ...]
  relation: str | None = None


Words = Mapping[str, str]  # concept -> the surface word used for it


def sample_scene(rng: np.random.Generator) -> Scene:
  """Draws two or three objects with distinct colours, shapes, cells."""
  n = int(rng.integers(2, GRID + 1))
  columns = rng.permutation(GRID)[:n]
  rows = rng.permutation(GRID)[:n]
  colours = rng.choice(list(COLOURS), n, replace=False)
  shapes = rng.choice(SHAPES, n, replace=False)
  sizes = rng.choice(SIZES, n)
  jitter = rng.uniform(-JITTER, JITTER, (n, 2))
  objects = tuple(
      Obj(str(shapes[i]), str(colours[i]), str(sizes[i]), int(columns[i]),
          int(rows[i]), float(jitter[i, 0]), float(jitter[i, 1]))
      for i in range(n))
  return Scene(objects, int(rng.integers(90, 170)))


def scene_rng(split: str, scene_index: int) -> np.random.Generator:
  """The generator of a scene and then of its captions, fixed per scene."""
  if split not in _SPLIT_CODES:
    raise ValueError(f"Unknown split {split!r}; choices: {SPLITS}")
  return np.random.default_rng([_SPLIT_CODES[split], scene_index])


def scene_image_id(split: str, scene_index: int) -> str:
  return f"{split}/{scene_index}"


def scene_from_image_id(image_id: str) -> Scene:
  """The scene behind an example's `image_id` (e.g. "train/12")."""
  split, _, index = image_id.partition("/")
  if not index.isdigit():
    raise ValueError(f"Bad synthetic_shapes image_id {image_id!r}")
  return sample_scene(scene_rng(split, int(index)))


def object_centre(obj: Obj, image_size: int) -> tuple[int, int]:
  """Pixel (x, y) of the object's centre, which every shape covers."""
  cx = ((obj.column + 0.5) / GRID + obj.dx) * image_size
  cy = ((obj.row + 0.5) / GRID + obj.dy) * image_size
  return round(cx), round(cy)


def draw(scene: Scene, image_size: int) -> np.ndarray:
  """Renders a scene. Returns uint8 [image_size, image_size, 3]."""
  image = Image.new("RGB", (image_size, image_size), (scene.background,) * 3)
  pen = ImageDraw.Draw(image)
  for obj in scene.objects:
    x, y = object_centre(obj, image_size)
    r = round(DIAMETER[obj.size] * image_size / 2)
    fill = COLOURS[obj.colour]
    if obj.shape == "circle":
      pen.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif obj.shape == "square":
      h = round(r * 0.85)  # about the circle's area
      pen.rectangle((x - h, y - h, x + h, y + h), fill=fill)
    elif obj.shape == "triangle":
      pen.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=fill)
    elif obj.shape == "diamond":
      pen.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
    elif obj.shape == "hexagon":
      angles = np.arange(6) * np.pi / 3
      pen.polygon([(x + r * np.cos(a), y + r * np.sin(a)) for a in angles],
                  fill=fill)
    else:
      raise ValueError(f"Unknown shape {obj.shape!r}; choices: {SHAPES}")
  return np.asarray(image)


def encode_png(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="PNG")
  return buffer.getvalue()


# --- Truth -------------------------------------------------------------------


def _matches(phrase: Phrase, obj: Obj) -> bool:
  return (phrase.colour == obj.colour and phrase.shape == obj.shape and
          phrase.size in (None, obj.size))


def _related(a: Obj, relation: str, b: Obj) -> bool:
  if relation == "left of":
    return a.column < b.column
  if relation == "right of":
    return a.column > b.column
  if relation == "above":
    return a.row < b.row
  if relation == "below":
    return a.row > b.row
  raise ValueError(f"Unknown relation {relation!r}; choices: {RELATIONS}")


def holds(claim: Claim, scene: Scene) -> bool:
  """Whether the claim is true of the scene (phrases name distinct objects)."""
  for objs in itertools.permutations(scene.objects, len(claim.phrases)):
    if all(_matches(p, o) for p, o in zip(claim.phrases, objs)):
      if claim.relation is None or _related(objs[0], claim.relation, objs[1]):
        return True
  return False


# --- Words -------------------------------------------------------------------


def concepts(claim: Claim) -> list[str]:
  """Concepts a claim mentions, in order of first mention."""
  out = []
  for i, p in enumerate(claim.phrases):
    out += [c for c in (p.size, p.colour, p.shape) if c is not None]
    if i == 0 and claim.relation is not None:
      out.append(claim.relation)
  return list(dict.fromkeys(out))


def sample_words(rng: np.random.Generator,
                 synonym_p: float = SYNONYM_P) -> dict[str, str]:
  """A surface word for every concept: a synonym with probability
  `synonym_p` (uniform among the concept's others), else the canonical one."""
  words = {}
  for concept, surfaces in SURFACES.items():
    rare = len(surfaces) > 1 and rng.random() < synonym_p
    words[concept] = str(rng.choice(surfaces[1:])) if rare else surfaces[0]
  return words


def _render_phrase(p: Phrase, words: Words) -> str:
  parts = [words.get(c, SURFACES[c][0]) for c in (p.size, p.colour, p.shape)
           if c is not None]
  article = "an" if parts[0][0] in "aeiou" else "a"
  return " ".join([article] + parts)


def render(claim: Claim, words: Words, prefix: str = "") -> str:
  """Writes a claim with the given surface words (canonical where missing)."""
  phrases = [_render_phrase(p, words) for p in claim.phrases]
  if claim.relation is not None:
    relation = words.get(claim.relation, SURFACES[claim.relation][0])
    return f"{prefix}{phrases[0]} {relation} {phrases[1]}"
  if len(phrases) == 1:
    return prefix + phrases[0]
  return prefix + ", ".join(phrases[:-1]) + " and " + phrases[-1]


_CONCEPT_OF = {w: c for c, ws in SURFACES.items() for w in ws}
_RELATION_WORDS = sorted(
    (w for r in RELATIONS for w in SURFACES[r]), key=len, reverse=True)


def _parse_phrase(text: str, caption: str) -> Phrase:
  tokens = text.split(" ")
  if len(tokens) not in (3, 4) or tokens[0] not in ("a", "an"):
    raise ValueError(f"Cannot parse phrase {text!r} of caption {caption!r}")
  if (tokens[0] == "an") != (tokens[1][0] in "aeiou"):
    raise ValueError(f"Wrong article in {text!r} of caption {caption!r}")
  found = [_CONCEPT_OF.get(t) for t in tokens[1:]]
  *size, colour, shape = found
  if (colour not in COLOURS or shape not in SHAPES or
      (size and size[0] not in SIZES)):
    raise ValueError(f"Cannot parse phrase {text!r} of caption {caption!r}")
  return Phrase(colour, shape, size[0] if size else None)


def parse(caption: str) -> Claim:
  """Reads a caption written by `render` (any surface words and prefix)."""
  text = caption
  for prefix in sorted(PREFIXES, key=len, reverse=True):
    if prefix and text.startswith(prefix):
      text = text[len(prefix):]
      break
  for word in _RELATION_WORDS:
    parts = text.split(f" {word} ")
    if len(parts) == 2:
      return Claim(tuple(_parse_phrase(t, caption) for t in parts),
                   _CONCEPT_OF[word])
  parts = re.split(r", | and ", text)
  return Claim(tuple(_parse_phrase(t, caption) for t in parts))


# --- Captions, hard negatives, hard positives --------------------------------


def _phrase(obj: Obj, rng: np.random.Generator, size_p: float) -> Phrase:
  return Phrase(obj.colour, obj.shape,
                obj.size if rng.random() < size_p else None)


def sample_claim(scene: Scene, rng: np.random.Generator, form: str,
                 size_p: float = 0.5,
                 unusual_order_p: float = UNUSUAL_ORDER_P) -> Claim:
  """A true claim of the given form: "single", "and", "and_all", "relation".

  Args:
    scene: the scene the claim describes.
    rng: randomness for the objects and words chosen.
    form: "single" (one phrase), "and" (two phrases), "and_all" (every object)
      or "relation" (two phrases and a true relation).
    size_p: probability that a phrase mentions its object's size.
    unusual_order_p: probability that phrases joined by "and" keep the random
      order drawn instead of going left to right (relation claims always keep
      it).

  Returns:
    A claim that `holds` for the scene.
  """
  n = {"single": 1, "and": 2, "relation": 2, "and_all": len(scene.objects)}
  if form not in n:
    raise ValueError(f"Unknown claim form {form!r}; choices: {tuple(n)}")
  picked = rng.permutation(len(scene.objects))[:n[form]]
  objs = [scene.objects[i] for i in picked]
  if form != "relation" and rng.random() >= unusual_order_p:
    objs.sort(key=lambda o: o.column)
  phrases = tuple(_phrase(o, rng, size_p) for o in objs)
  if form != "relation":
    return Claim(phrases)
  a, b = objs
  true = [r for r in RELATIONS if _related(a, r, b)]
  return Claim(phrases, str(rng.choice(true)))


def _with(claim: Claim, i: int, **changes) -> Claim:
  phrases = list(claim.phrases)
  phrases[i] = dataclasses.replace(phrases[i], **changes)
  return dataclasses.replace(claim, phrases=tuple(phrases))


def swap_attribute(claim: Claim, attribute: str, i: int = 0,
                   j: int = 1) -> Claim:
  """Phrases i and j exchange an attribute ("colour", "shape" or "size")."""
  a, b = claim.phrases[i], claim.phrases[j]
  claim = _with(claim, i, **{attribute: getattr(b, attribute)})
  return _with(claim, j, **{attribute: getattr(a, attribute)})


def replace_attribute(claim: Claim, i: int, attribute: str,
                      rng: np.random.Generator) -> Claim:
  """Phrase i gets another value of the attribute; it then names no object."""
  choices = {"colour": tuple(COLOURS), "shape": SHAPES, "size": SIZES}
  old = getattr(claim.phrases[i], attribute)
  new = rng.choice([v for v in choices[attribute] if v != old])
  return _with(claim, i, **{attribute: str(new)})


def replace_relation(claim: Claim, scene: Scene) -> list[Claim]:
  """Relation claims with the relation replaced by each false one."""
  others = [dataclasses.replace(claim, relation=r) for r in RELATIONS
            if r != claim.relation]
  return [c for c in others if not holds(c, scene)]


def converse(claim: Claim) -> Claim:
  """"A left of B" -> "B right of A": same meaning, phrases swapped."""
  a, b = claim.phrases
  return Claim((b, a), CONVERSE[claim.relation])


def swap_around_and(claim: Claim) -> Claim:
  """"A, B and C" -> "A, C and B": same meaning, phrases swapped."""
  *head, b, c = claim.phrases
  return Claim((*head, c, b))


def hard_negatives(claim: Claim, scene: Scene,
                   rng: np.random.Generator) -> list[Claim]:
  """False claims one edit away from a true claim, distinct, in random order.

  The edits: two phrases exchange their colour, shape or size; one phrase's
  colour, shape or size is replaced; the relation is replaced by a false one;
  the relation's two phrases are exchanged.
  """
  out = []
  if len(claim.phrases) >= 2:
    i, j = sorted(rng.permutation(len(claim.phrases))[:2])
    p, q = claim.phrases[i], claim.phrases[j]
    out += [swap_attribute(claim, "colour", i, j),
            swap_attribute(claim, "shape", i, j)]
    if None not in (p.size, q.size) and p.size != q.size:
      out.append(swap_attribute(claim, "size", i, j))
  i = int(rng.integers(len(claim.phrases)))
  out += [replace_attribute(claim, i, a, rng) for a in ("colour", "shape")]
  if claim.phrases[i].size is not None:
    out.append(replace_attribute(claim, i, "size", rng))
  if claim.relation is not None:
    out += replace_relation(claim, scene)
    out.append(Claim(claim.phrases[::-1], claim.relation))
  out = list(dict.fromkeys(out))
  return [out[k] for k in rng.permutation(len(out))]


def synonym_words(claim: Claim, words: Words, rng: np.random.Generator,
                  among: Sequence[str] | None = None) -> list[dict[str, str]]:
  """Wordings that differ from `words` in one concept's surface word.

  Args:
    claim: the claim being reworded.
    words: its current wording.
    rng: randomness for the concept order and the new word.
    among: concepts that may be reworded (default: any the claim mentions).

  Returns:
    One new wording per rewordable concept, in random order.
  """
  candidates = [c for c in concepts(claim) if len(SURFACES[c]) > 1 and
                (among is None or c in among)]
  out = []
  for k in rng.permutation(len(candidates)):
    concept = candidates[k]
    current = words.get(concept, SURFACES[concept][0])
    new = rng.choice([w for w in SURFACES[concept] if w != current])
    out.append({**words, concept: str(new)})
  return out


# --- Examples of each split --------------------------------------------------


def train_example(scene: Scene, rng: np.random.Generator,
                  with_hard: bool) -> dict[str, object]:
  """Caption (plus hard negatives and positives if `with_hard`) of a scene.

  Returns:
    A dict with `caption`, `hard_negatives`, `hard_positives` and
    `hard_positive_kinds` (lists of str, empty unless `with_hard`).
  """
  forms = ["single", "and", "relation"] + (
      ["and_all"] if len(scene.objects) > 2 else [])
  claim = sample_claim(scene, rng, str(rng.choice(forms)))
  words = sample_words(rng)
  prefix = str(rng.choice(PREFIXES))
  out = {"caption": render(claim, words, prefix), "hard_negatives": [],
         "hard_positives": [], "hard_positive_kinds": []}
  if not with_hard:
    return out
  negatives = hard_negatives(claim, scene, rng)[:MAX_HARD_NEGATIVES]
  out["hard_negatives"] = [render(c, words, prefix) for c in negatives]
  if claim.relation is not None:
    out["hard_positives"].append(render(converse(claim), words, prefix))
    out["hard_positive_kinds"].append("swap")
  elif len(claim.phrases) > 1:
    out["hard_positives"].append(render(swap_around_and(claim), words, prefix))
    out["hard_positive_kinds"].append("swap")
  for w in synonym_words(claim, words, rng)[:MAX_REPLACE_POSITIVES]:
    out["hard_positives"].append(render(claim, w, prefix))
    out["hard_positive_kinds"].append("replace")
  return out


def benchmark_item(split: str, scene: Scene,
                   rng: np.random.Generator) -> dict[str, str]:
  """One benchmark item of a scene, mirroring the paper's three subsets.

  REPLACE-ATT: an attribute replaced, HP an attribute synonym; REPLACE-REL: the
  relation replaced, HP a relation synonym; SWAP: colours swapped across "and",
  HP the phrases around "and" swapped. The caption and the hard negative are
  in the conventions (canonical words, left to right), the hard positive
  against them (module docstring).

  Returns:
    A dict with str `caption`, `hard_negative` and `hard_positive`.
  """
  words = sample_words(rng, synonym_p=0.0)
  if split == "test_replace_att":
    claim = sample_claim(scene, rng, str(rng.choice(["single", "and"])),
                         unusual_order_p=0.0)
    i = int(rng.integers(len(claim.phrases)))
    sized = claim.phrases[i].size is not None
    attribute = "size" if sized and rng.random() < 0.3 else "colour"
    negative = replace_attribute(claim, i, attribute, rng)
    attributes = [a for p in claim.phrases for a in (p.colour, p.size) if a]
    positive = claim, synonym_words(claim, words, rng, attributes)[0]
  elif split == "test_replace_rel":
    claim = sample_claim(scene, rng, "relation")
    negatives = replace_relation(claim, scene)
    negative = negatives[int(rng.integers(len(negatives)))]
    positive = claim, synonym_words(claim, words, rng, [claim.relation])[0]
  elif split == "test_swap":
    claim = sample_claim(scene, rng, "and", size_p=0.0, unusual_order_p=0.0)
    negative = swap_attribute(claim, "colour")
    positive = swap_around_and(claim), words
  else:
    raise ValueError(f"Unknown test split {split!r}; choices: {SPLITS[2:]}")
  return {"caption": render(claim, words), "hard_negative":
          render(negative, words), "hard_positive": render(*positive)}
