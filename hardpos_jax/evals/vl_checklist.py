"""VL-CheckList (Zhao et al., 2022): summary and report.

Each item scores its image against POS[0] (`caption`) and NEG[0]
(`hard_negative`) by cosine similarity s, as VL-CheckList's OpenCLIP engine
(om-ai-lab/VL-CheckList example_models/open_clip/engine.py, `predict`), and
is right when s(POS) > s(NEG), strictly, so a tie fails
(vl_checklist/evaluate.py, `Evaluate.eval`, task "itc", line 202 at commit
8855c61: `if result_tmp[i][0] > result_tmp[i][1]`).

A subset is one corpus file ("<category>/<split>", e.g.
"object/location_center_swig_agent"). Accuracies are then averaged without
weights, level by level, as VL-CheckList does:
  file      mean over the file's items (evaluate.py line 227:
            `accuracy = float(num_t) / (num_t + num_f)`)
  source    mean over the type's files of one source; vl_checklist/
            corpus.json groups them, e.g. swig: swig_agent, swig_destination,
            swig_item, swig_tool (vl_checklist/radar.py, `generate_chart`,
            lines 124-135 at commit d91565c: `data_score.append(score /
            file_num)`)
  type      mean over its sources (radar.py line 136:
            `score_list.append(sum(data_score) / data_num)`)
  category  mean over its types: Object's 6, Attribute's 5, Relation's 2
            (facebookresearch/DCI reproduction/densely_captioned_images/
            repro/eval/run_vlc.py, `score_vlc`, line 109: `[sum(
            score_list[0:6])/6, sum(score_list[6:11])/5,
            sum(score_list[11:])/2]`)
  overall   mean over the categories (neither repository computes one)
  micro     over all items pooled, for reference

VL-CheckList's shipped configs (configs/sample.yaml and
configs/our_clip_*.yaml, `MAX_NUM: 2000`; DCI's run_vlc.py too) score only
the first MAX_NUM / 2 rows of each file (evaluate.py lines 173-174:
`d.data[name] = d.data[name][: int(max_number / 2)]`), after dropping rows
whose image is missing (data_loader.py, `load_itc_samples`). `first_1000`
repeats the aggregation on each file's first FIRST_ROWS items by row (the
rows a build with `skip_bad_examples=True` kept), for comparison with
numbers made that way; the other numbers use every row.
"""

from collections.abc import Callable, Mapping

import numpy as np

from hardpos_jax.evals import metrics
from hardpos_jax.evals import plots
from hardpos_jax.evals import scoring
from tfds_builders.vl_checklist.vl_checklist import CorpusFile
from tfds_builders.vl_checklist.vl_checklist import FILES

# Scored features and their columns in the scores CSV.
TEXT_KEYS = ("caption", "hard_negative")
SCORE_COLUMNS = ("s_c", "s_n")
INDEX_KEY = "index"
# MAX_NUM / 2 of VL-CheckList's shipped configs: the rows per file it scores.
FIRST_ROWS = 1000

# {subset: its corpus file}, in FILES' order.
SUBSETS: dict[str, CorpusFile] = {f"{f.category}/{f.split}": f
                                  for f in FILES}


def benchmark_splits() -> dict[str, tuple[str, str]]:
  """{subset: (TFDS dataset, split)}: every corpus file of the release."""
  return {name: (f"vl_checklist/{f.category}", f.split)
          for name, f in SUBSETS.items()}


# Scores a split's items against their TEXT_KEYS texts (any subset).
score_split = scoring.item_scorer(TEXT_KEYS, INDEX_KEY)


def _mean_by(results: Mapping[str, dict], group: Callable[[str], str]
             ) -> dict[str, dict]:
  """{group(name): macro of its results}, groups in order of appearance."""
  groups: dict[str, list[dict]] = {}
  for name, result in results.items():
    groups.setdefault(group(name), []).append(result)
  return {key: metrics.macro(members) for key, members in groups.items()}


def _aggregate(files: Mapping[str, dict]) -> dict:
  """Sources, types, categories and overall from per-file accuracies.

  Args:
    files: {subset: {"count", "accuracy"}}, any subsets of SUBSETS.

  Returns:
    {"sources": {"<type>/<source>": ...}, "types": {"<type>": ...},
    "categories": {category: ...}, "overall": ...}, each {"count" (items),
    "accuracy" (unweighted mean of the level below)}; types are lower case,
    e.g. "object/location/center".
  """
  sources = _mean_by(files, lambda name: "/".join(
      (SUBSETS[name].type.lower(), SUBSETS[name].source)))
  types = _mean_by(sources, lambda key: key.rsplit("/", 1)[0])
  categories = _mean_by(types, lambda key: key.split("/", 1)[0])
  return {"sources": sources, "types": types, "categories": categories,
          "overall": metrics.macro(list(categories.values()))}


def summarize(scores: Mapping[str, scoring.SplitScores]) -> dict:
  """Accuracy per file, source, type, category and overall.

  Args:
    scores: {subset: its scores}, any subsets of SUBSETS; each
      `scores` [N, 2] holds s(POS[0]), s(NEG[0]) in row order.

  Returns:
    {"files": {subset: accuracy and counts}, "sources", "types",
    "categories", "overall" (see `_aggregate`), "micro": accuracy over all
    items, "first_1000": the same aggregation over each file's first
    FIRST_ROWS items}.
  """
  accuracies = {name: metrics.accuracy(*s.scores.T)
                for name, s in scores.items()}
  # Items are sorted by row (`scoring.read_items`), so these are the first.
  first = {name: metrics.accuracy(*s.scores[:FIRST_ROWS].T)
           for name, s in scores.items()}
  pooled = np.concatenate([s.scores for s in scores.values()])
  files = {name: {**accuracies[name], **s.counts()}
           for name, s in scores.items()}
  return {"files": files, **_aggregate(accuracies),
          "micro": metrics.accuracy(*pooled.T),
          "first_1000": _aggregate(first)}


def headline(summary: dict) -> dict[str, float]:
  """Each category's accuracy and their mean, as VL-CheckList's tables."""
  return {**{c: r["accuracy"] for c, r in summary["categories"].items()},
          "overall": summary["overall"]["accuracy"]}


def _rows(summary: dict) -> list[tuple[str, dict, dict | None]]:
  """(name, all rows, first FIRST_ROWS rows per file) per table row."""
  first = summary["first_1000"]
  return [*((name, row, first["types"][name])
            for name, row in summary["types"].items()),
          *((name, row, first["categories"][name])
            for name, row in summary["categories"].items()),
          ("overall", summary["overall"], first["overall"]),
          ("micro (items pooled)", summary["micro"], None)]


def format_table(summary: dict) -> str:
  """A markdown table of `summary` (from `summarize`), accuracy in percent:
  types, categories, overall and micro."""
  lines = ["| type | items | accuracy | accuracy, first "
           f"{FIRST_ROWS} rows per file |", "|---|---|---|---|"]
  for name, row, first in _rows(summary):
    cut = "" if first is None else f"{100 * first['accuracy']:.1f}"
    lines.append(f"| {name} | {row['count']} | {100 * row['accuracy']:.1f} "
                 f"| {cut} |")
  return "\n".join(lines)


def plot(summary: dict, path: str) -> None:
  """Writes a PNG of the accuracy per type, category and overall."""
  rows = [r for r in _rows(summary) if r[2] is not None]
  plots.bars(path, summary["eval"], [r[0] for r in rows], {
      "every row": [r[1]["accuracy"] for r in rows],
      f"first {FIRST_ROWS} rows per file": [r[2]["accuracy"] for r in rows]},
             figwidth=10, ylabel="accuracy (%)", rotation=30,
             chance=0.5)  # Chance: two captions.
