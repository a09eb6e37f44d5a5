"""ARO (Yuksekgonul et al., ICLR 2023): scores, ARO's metrics and report.

Four subsets (TFDS `aro`, manual; see tfds_builders/aro). Each item scores
its image against its options, option 0 the true caption (cosine similarity
of unit embeddings, as `scoring`):

  vg_relation, vg_attribution   2 options: the caption c and the hard
                                negative c_n (ARO's false caption)
  coco_order, flickr30k_order   5 options: the caption and its four
                                word-order perturbations, in ARO's order

Metrics, every comparison strict so that a tie fails (as the rest of
hardpos_jax), with the reference lines of ARO's code
(github.com/mertyg/vision-language-models-are-bows):
  accuracy   VG: mean[s(c) > s(c_n)]; order: mean[s(option 0) > s(option
             k) for every k > 0].
  ties       mean[option 0 ties the best other option].
  aro        the number ARO reports for the subset:
             VG-Relation: its macro accuracy, the mean over relations of the
               per-relation accuracy (dataset_zoo/aro_datasets.py L95-104),
               leaving out the relations its notebook lists as symmetric
               (notebooks/"Replicate ARO! VG-Relation, VG-Attribution.ipynb"
               L66-68; SYMMETRIC_RELATIONS);
             VG-Attribution: the mean over attribute pairs
               (f"{attributes[0]}_{attributes[1]}", L138) with at least 25
               items (L181-190; notebook L96);
             order: Precision@1, mean[argmax of the 5 scores == 0]
               (L277-279, L342-344), where numpy's argmax gives a tie to
               the first option, the true caption.
             For VG, ARO's argmax over [c_n, c] == 1 (L87-88, L177-178) is
             the strict comparison, so its per-group accuracies are those of
             `accuracy`. For the order subsets `aro` = accuracy + ties: a
             perturbation that leaves the caption's text unchanged (e.g. a
             caption with one noun and no adjective) ties exactly and counts
             as right in ARO and wrong in `accuracy`.

Legend: N items, K options per item.
"""

from collections.abc import Mapping, Sequence
import dataclasses
from typing import Any

import numpy as np

from hardpos_jax.evals import encoding
from hardpos_jax.evals import metrics
from hardpos_jax.evals import plots
from hardpos_jax.evals import scoring
from tfds_builders.aro import perturbations

INDEX_KEY = "index"
VG_TEXT_KEYS = ("caption", "hard_negative")
ORDER_TEXT_KEYS = ("caption", *perturbations.PERTURBATIONS)
# Columns of the scores CSV: option 0 (the true caption), then the wrong
# options; VG rows end after s_1 (the hard negative).
SCORE_COLUMNS = ("s_c", "s_1", "s_2", "s_3", "s_4")
# The feature ARO groups each VG subset's items by for its macro accuracy.
GROUP_KEYS = {"vg_relation": "relation_name",
              "vg_attribution": "attributes"}
ORDER_SUBSETS = ("coco_order", "flickr30k_order")
SUBSETS = (*GROUP_KEYS, *ORDER_SUBSETS)
# VG-Attribution's macro keeps attribute pairs with at least this many items
# (aro_datasets.py L183: `if attr_mask.sum() < 25: continue`).
MIN_ATTRIBUTE_PAIR_ITEMS = 25
# The relations ARO's notebook leaves out of VG-Relation's macro accuracy
# (notebook L66, `symmetric`), in its order.
SYMMETRIC_RELATIONS = frozenset((
    "adjusting", "attached to", "between", "bigger than", "biting",
    "boarding", "brushing", "chewing", "cleaning", "climbing", "close to",
    "coming from", "coming out of", "contain", "crossing", "dragging",
    "draped over", "drinking", "drinking from", "driving", "driving down",
    "driving on", "eating from", "eating in", "enclosing", "exiting",
    "facing", "filled with", "floating in", "floating on", "flying",
    "flying above", "flying in", "flying over", "flying through", "full of",
    "going down", "going into", "going through", "grazing in", "growing in",
    "growing on", "guiding", "hanging from", "hanging in", "hanging off",
    "hanging over", "higher than", "holding onto", "hugging", "in between",
    "jumping off", "jumping on", "jumping over", "kept in", "larger than",
    "leading", "leaning over", "leaving", "licking", "longer than",
    "looking in", "looking into", "looking out", "looking over",
    "looking through", "lying next to", "lying on top of", "making",
    "mixed with", "mounted on", "moving", "on the back of", "on the edge of",
    "on the front of", "on the other side of", "opening", "painted on",
    "parked at", "parked beside", "parked by", "parked in",
    "parked in front of", "parked near", "parked next to", "perched on",
    "petting", "piled on", "playing", "playing in", "playing on",
    "playing with", "pouring", "reaching for", "reading", "reflected on",
    "riding on", "running in", "running on", "running through",
    "seen through", "sitting behind", "sitting beside", "sitting by",
    "sitting in front of", "sitting near", "sitting next to",
    "sitting under", "skiing down", "skiing on", "sleeping in",
    "sleeping on", "smiling at", "sniffing", "splashing", "sprinkled on",
    "stacked on", "standing against", "standing around", "standing behind",
    "standing beside", "standing in front of", "standing near",
    "standing next to", "staring at", "stuck in", "surrounding",
    "swimming in", "swinging", "talking to", "topped with", "touching",
    "traveling down", "traveling on", "tying", "typing on", "underneath",
    "wading in", "waiting for", "walking across", "walking by",
    "walking down", "walking next to", "walking through", "working in",
    "working on", "worn on", "wrapped around", "wrapped in", "by", "of",
    "near", "next to", "with", "beside", "on the side of", "around",
))
# Which groups each VG subset's macro accuracy keeps (`macro_accuracy`).
_MACRO_RULES = {
    "vg_relation": {"exclude": SYMMETRIC_RELATIONS},
    "vg_attribution": {"min_count": MIN_ATTRIBUTE_PAIR_ITEMS},
}
# Names in tables and headlines.
_NAMES = {"vg_relation": "VG-Relation", "vg_attribution": "VG-Attribution",
          "coco_order": "COCO-Order", "flickr30k_order": "Flickr30k-Order"}


def benchmark_splits() -> dict[str, tuple[str, str]]:
  """{subset: (TFDS dataset, split)} of the released benchmark."""
  return {s: (f"aro/{s}", "test") for s in SUBSETS}


@dataclasses.dataclass(frozen=True)
class GroupedScores(scoring.SplitScores):
  """`SplitScores` of a VG subset with each item's group.

  Attributes:
    groups: str [N] each item's relation, or attribute pair as ARO joins it
      ("white_black"), in `index` order.
  """

  groups: np.ndarray


def _group(value: Any) -> str:
  """ARO's group label of a relation (text) or attribute pair (sequence)."""
  if isinstance(value, (bytes, str)):
    return scoring.as_text(value)
  return "_".join(scoring.as_text(v) for v in value)


class _GroupReader:
  """A split that notes each item's group as scoring reads its records, so
  that the split is read once."""

  def __init__(self, source: Any, key: str):
    self._source = source
    self._key = key
    self.groups: dict[int, str] = {}

  def __len__(self) -> int:
    return len(self._source)

  def __getitems__(self, positions: Sequence[int]) -> list[dict]:
    records = self._source.__getitems__(positions)
    for record in records:
      self.groups[int(record[INDEX_KEY])] = _group(record[self._key])
    return records


_score_vg = scoring.item_scorer(VG_TEXT_KEYS, INDEX_KEY)
_score_order = scoring.item_scorer(ORDER_TEXT_KEYS, INDEX_KEY)


def score_split(encoders: encoding.Encoders, params: Any, tokenizer: Any,
                source: Any, subset: str) -> scoring.SplitScores:
  """Scores every item of an ARO subset against its options.

  Args:
    encoders: the towers and mesh.
    params: the model params (any placement; replicated onto the mesh).
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    source: the subset's split of TFDS `aro/<subset>`.
    subset: a name in SUBSETS.

  Returns:
    `SplitScores` with `scores` float32 [N, K] in option order (K = 2 for
    VG, whose scores are `GroupedScores` with each item's group; K = 5 for
    the order subsets).
  """
  if subset in ORDER_SUBSETS:
    return _score_order(encoders, params, tokenizer, source, subset)
  if subset not in GROUP_KEYS:
    raise ValueError(f"Unknown ARO subset {subset!r}; choose from {SUBSETS}")
  reader = _GroupReader(source, GROUP_KEYS[subset])
  scores = _score_vg(encoders, params, tokenizer, reader, subset)
  return GroupedScores(
      **{f.name: getattr(scores, f.name)
         for f in dataclasses.fields(scoring.SplitScores)},
      groups=np.asarray([reader.groups[int(i)] for i in scores.index], str))


def group_accuracies(correct: np.ndarray, groups: np.ndarray
                     ) -> dict[str, dict[str, float]]:
  """Accuracy per group, as ARO's `evaluate_scores` records it
  (aro_datasets.py L95-104).

  Args:
    correct: bool [N] per-item outcomes.
    groups: str [N] each item's group.

  Returns:
    {group: {"count": items, "accuracy": mean of `correct`}}, groups sorted.
  """
  correct, groups = np.asarray(correct, bool), np.asarray(groups)
  return {str(g): {"count": int((groups == g).sum()),
                   "accuracy": float(correct[groups == g].mean())}
          for g in np.unique(groups)}


def macro_accuracy(correct: np.ndarray, groups: np.ndarray, *,
                   exclude: frozenset[str] = frozenset(),
                   min_count: int = 1) -> tuple[float | None, int]:
  """ARO's macro accuracy: the unweighted mean of per-group accuracies.

  Args:
    correct: bool [N] per-item outcomes.
    groups: str [N] each item's group.
    exclude: groups left out (VG-Relation: SYMMETRIC_RELATIONS).
    min_count: groups with fewer items are left out (VG-Attribution:
      MIN_ATTRIBUTE_PAIR_ITEMS).

  Returns:
    (the mean, or None when no group is kept; how many groups were kept).
  """
  kept = [r["accuracy"] for g, r in group_accuracies(correct, groups).items()
          if g not in exclude and r["count"] >= min_count]
  return (float(np.mean(kept)) if kept else None), len(kept)


def vg_metrics(s_c: np.ndarray, s_n: np.ndarray, groups: np.ndarray,
               subset: str) -> dict[str, Any]:
  """A VG subset's metrics (see the module docstring).

  Args:
    s_c: [N] scores of the true captions.
    s_n: [N] scores of the false captions.
    groups: str [N] each item's relation or attribute pair.
    subset: "vg_relation" or "vg_attribution": which macro rule applies.

  Returns:
    {"count", "accuracy", "ties", "aro" (None when no group is kept),
    "aro_groups" (groups in the macro)}.
  """
  s_c, s_n = np.asarray(s_c), np.asarray(s_n)
  result = metrics.accuracy(s_c, s_n)  # Checks shapes and finiteness.
  macro, kept = macro_accuracy(s_c > s_n, groups, **_MACRO_RULES[subset])
  return {**result, "ties": float((s_c == s_n).mean()), "aro": macro,
          "aro_groups": kept}


def order_metrics(scores: np.ndarray) -> dict[str, Any]:
  """An order subset's metrics (see the module docstring).

  Args:
    scores: [N, K] scores of each item's options, option 0 the true one.

  Returns:
    {"count", "accuracy", "ties", "aro"}.
  """
  scores = np.asarray(scores)
  if scores.ndim != 2 or scores.shape[1] < 2:
    raise ValueError(f"Expected scores [N, K >= 2], got {scores.shape}")
  best_other = scores[:, 1:].max(axis=1)
  # Checks finiteness; s(option 0) > its best rival is ARO's argmax == 0
  # without ties.
  result = metrics.accuracy(scores[:, 0], best_other)
  return {**result, "ties": float((scores[:, 0] == best_other).mean()),
          "aro": float((np.argmax(scores, axis=1) == 0).mean())}


def summarize(scores: Mapping[str, scoring.SplitScores]) -> dict:
  """Metrics per subset.

  Args:
    scores: {subset: its scores}, any of SUBSETS.

  Returns:
    {"subsets": {subset: metrics and counts}}.
  """
  subsets = {}
  for name, s in scores.items():
    result = (order_metrics(s.scores) if name in ORDER_SUBSETS else
              vg_metrics(*s.scores.T, s.groups, name))
    subsets[name] = {**result, **s.counts()}
  return {"subsets": subsets}


def headline(summary: dict) -> dict[str, float]:
  """ARO's table: VG macro accuracies and the order accuracies (strict)."""
  out = {}
  for name, row in summary["subsets"].items():
    if name in ORDER_SUBSETS:
      out[_NAMES[name]] = row["accuracy"]
    elif row["aro"] is not None:
      out[f"{_NAMES[name]} (macro)"] = row["aro"]
  return out


def _percent(value: float | None) -> str:
  return "n/a" if value is None else f"{100 * value:.1f}"


def format_table(summary: dict) -> str:
  """A markdown table of `summary` (from `summarize`), metrics in percent."""
  lines = ["| subset | items | images | texts | accuracy | ties | "
           "ARO's number |", "|---|---|---|---|---|---|---|"]
  for name, row in summary["subsets"].items():
    aro = _percent(row["aro"])
    if name in GROUP_KEYS:
      aro += f" (macro over {row['aro_groups']})"
    lines.append(f"| {_NAMES[name]} | {row['count']} | {row['images']} | "
                 f"{row['texts']} | {_percent(row['accuracy'])} | "
                 f"{_percent(row['ties'])} | {aro} |")
  return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
  """Writes a PNG of the accuracy and ARO's number per subset."""
  rows = summary["subsets"]
  plots.bars(path, summary["eval"], [_NAMES[n] for n in rows], {
      "accuracy (ties fail)": [r["accuracy"] for r in rows.values()],
      "ARO's number": [r["aro"] for r in rows.values()]}, full_scale=True)
