"""Registered benchmarks, and what `--evals` selects.

Names (EVALUATORS):
  hard_positives   the released benchmark (TFDS `hard_positives`, manual)
  synthetic        the same three subsets from `synthetic_shapes_benchmark`'s
                   test splits (config `default`); nothing to download
  synthetic_tiny   the same from its `tiny` config, for tests and smoke runs
  sugar_crepe      SugarCrepe's seven subsets (TFDS `sugar_crepe`, manual)
  sugar_crepe_pp   SugarCrepe++'s five subsets, ITT and TOT (TFDS
                   `sugar_crepe_pp`, manual)
  aro              ARO's VG-Relation, VG-Attribution, COCO-Order and
                   Flickr30k-Order (TFDS `aro`, manual)
  winoground       Winoground's 400 items: text, image and group scores, per
                   collapsed tag (TFDS `winoground`, manual)
  vl_checklist     VL-CheckList's Object, Attribute and Relation, a subset
                   per corpus file (TFDS `vl_checklist`, manual)
  retrieval_coco   COCO 5k (Karpathy test) image<->text Recall@1/5/10
                   (TFDS `coco_captions/2014`)
  retrieval_coco_val  the same on Karpathy's 5k validation images, for
                   model selection
  zeroshot_cifar10, zeroshot_cifar100, zeroshot_imagenet
                   zero-shot top-1/top-5 with OpenAI's prompt ensembles
                   (TFDS `cifar10`, `cifar100`, `imagenet2012`, manual)

A selection (`select`) is a list of `name` (every subset), `name/subset`
(one subset; several may be given) or `suite`: every evaluator
whose data is present (prepared in the data directory, or its released
files in the manual directory), the others skipped with one note.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import time
from typing import Any

from absl import logging

from hardpos_jax import console
from hardpos_jax import sharding
from hardpos_jax.data import input_pipeline
from hardpos_jax.evals import aro
from hardpos_jax.evals import hard_positives
from hardpos_jax.evals import kinds
from hardpos_jax.evals import reports
from hardpos_jax.evals import retrieval
from hardpos_jax.evals import sugar_crepe
from hardpos_jax.evals import sugar_crepe_pp
from hardpos_jax.evals import vl_checklist
from hardpos_jax.evals import winoground
from hardpos_jax.evals import zeroshot
from hardpos_jax.evals.encoding import Encoders
from tfds_builders import common


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """A benchmark: which splits to score and how to report them.

  Attributes:
    name: the registry name; output files are named after it.
    kind: a key of KINDS.
    splits: {subset: (TFDS dataset with config, split)}.
  """

  name: str
  kind: str
  splits: Mapping[str, tuple[str, str]]

  def open(self, subsets: Sequence[str] | None = None, *,
           optional: bool = False, data_dir: str | None = None,
           manual_dir: str | None = None
           ) -> tuple[dict[str, Any], dict[str, str]]:
    """Opens the subsets' splits, preparing from `manual_dir` what is not
    built yet.

    Args:
      subsets: which of `splits`; None opens all.
      optional: leave out a subset whose data is absent instead of raising
        `common.MissingDataError`; never download.
      data_dir: TFDS data directory; None means TFDS's default.
      manual_dir: the released files (`input_pipeline.data_source`).

    Returns:
      ({subset: random-access split}, {absent subset: why}).
    """
    sources, absent = {}, {}
    for subset in self.splits if subsets is None else subsets:
      dataset, split = self.splits[subset]
      try:
        sources[subset] = input_pipeline.data_source(
            dataset, split, data_dir, manual_dir, download=not optional)
      except common.MissingDataError as e:
        if not optional:
          raise
        absent[subset] = str(e).splitlines()[0]
    return sources, absent

  def score(self, encoders: Encoders, params: Any, tokenizer: Any,
            sources: Mapping[str, Any], out_dir: str | None = None) -> dict:
    """Scores opened subsets and summarises; writes the reports to `out_dir`.

    Args:
      encoders: from `create_encoders` for the model's config.
      params: the model's params (any placement).
      tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
      sources: {subset: split} from `open`.
      out_dir: where to write the reports; None writes nothing.

    Returns:
      The summary: `eval` (the name), `kind`, `seconds` and the kind's
      `summarize` output (fractions in [0, 1], counts).
    """
    start = time.perf_counter()
    kind = kinds.get(self.kind)
    params = sharding.replicate(params, encoders.mesh)
    scores = {}
    for subset, source in sources.items():
      scores[subset] = kind.score_split(encoders, params, tokenizer, source,
                                        subset)
      logging.info("%s/%s: %d items, %d images, %d texts at L=%d",
                   self.name, subset, len(scores[subset].index),
                   scores[subset].num_images, scores[subset].num_texts,
                   scores[subset].text_length)
    summary = {"eval": self.name, "kind": self.kind,
               **kind.summarize(scores),
               "seconds": time.perf_counter() - start}
    if out_dir is not None:
      reports.write(summary, scores, out_dir)
    return summary

  def evaluate(self, encoders: Encoders, params: Any, tokenizer: Any, *,
               data_dir: str | None = None, manual_dir: str | None = None,
               out_dir: str | None = None) -> dict:
    """`open` every subset (missing data raises), then `score` them."""
    sources, _ = self.open(data_dir=data_dir, manual_dir=manual_dir)
    return self.score(encoders, params, tokenizer, sources, out_dir)


EVALUATORS = {
    "hard_positives": Evaluator("hard_positives", "hard_positives",
                                hard_positives.benchmark_splits()),
    "synthetic": Evaluator("synthetic", "hard_positives",
                           hard_positives.synthetic_splits("default")),
    "synthetic_tiny": Evaluator("synthetic_tiny", "hard_positives",
                                hard_positives.synthetic_splits("tiny")),
    "sugar_crepe": Evaluator("sugar_crepe", "sugar_crepe",
                             sugar_crepe.benchmark_splits()),
    "sugar_crepe_pp": Evaluator("sugar_crepe_pp", "sugar_crepe_pp",
                                sugar_crepe_pp.benchmark_splits()),
    "aro": Evaluator("aro", "aro", aro.benchmark_splits()),
    "winoground": Evaluator("winoground", "winoground",
                            winoground.benchmark_splits()),
    "vl_checklist": Evaluator("vl_checklist", "vl_checklist",
                              vl_checklist.benchmark_splits()),
    "retrieval_coco": Evaluator("retrieval_coco", "retrieval",
                                retrieval.benchmark_splits("coco_5k")),
    "retrieval_coco_val": Evaluator("retrieval_coco_val", "retrieval",
                                    retrieval.benchmark_splits("coco_val")),
    **{f"zeroshot_{task}": Evaluator(f"zeroshot_{task}", "zeroshot",
                                     zeroshot.benchmark_splits(task))
       for task in zeroshot.TASKS},
}

SUITE = "suite"


def get(name: str) -> Evaluator:
  """The registered evaluator `name`."""
  if name not in EVALUATORS:
    raise ValueError(f"Unknown eval {name!r}; choose from "
                     f"{sorted(EVALUATORS)}, name/subset or {SUITE!r}")
  return EVALUATORS[name]


@dataclasses.dataclass(frozen=True)
class Selected:
  """One evaluator of a selection.

  Attributes:
    evaluator: the benchmark.
    subsets: the subsets to score, in the evaluator's order.
    optional: skip subsets whose data is absent (`suite`) instead of
      failing.
  """

  evaluator: Evaluator
  subsets: tuple[str, ...]
  optional: bool = False


def select(names: Sequence[str]) -> list[Selected]:
  """Parses a selection; an unknown name or subset lists the choices.

  Args:
    names: e.g. ["hard_positives/replace_att", "hard_positives/replace_rel",
      "sugar_crepe"] or ["suite"].

  Returns:
    One `Selected` per evaluator, in the order first named.
  """
  subsets: dict[str, list[str]] = {}
  named: set[str] = set()  # Named outright: their data must be there.
  for entry in names:
    if entry == SUITE:
      for name in EVALUATORS:
        subsets.setdefault(name, []).extend(EVALUATORS[name].splits)
      continue
    name, _, subset = entry.partition("/")
    evaluator = get(name)
    named.add(name)
    if subset and subset not in evaluator.splits:
      raise ValueError(f"{name} has no subset {subset!r}; choose from "
                       f"{list(evaluator.splits)}")
    subsets.setdefault(name, []).extend(
        [subset] if subset else evaluator.splits)
  return [Selected(EVALUATORS[name],
                   tuple(s for s in EVALUATORS[name].splits if s in chosen),
                   optional=name not in named)
          for name, chosen in subsets.items()]


def evaluate(encoders: Encoders, params: Any, tokenizer: Any,
             selection: Sequence[str], *, data_dir: str | None = None,
             manual_dir: str | None = None, out_dir: str | None = None
             ) -> dict[str, dict]:
  """Runs a selection (`select`) with one model's params.

  Every selected split is opened before any is scored, so missing data for
  a named benchmark stops the run at once; `suite`'s absent data is one
  note. With `out_dir`, each evaluator's reports and, last, the combined
  headline table (`reports.write_combined`, one row) are written there.

  Args:
    encoders: from `create_encoders` for the model's config.
    params: the model's params (any placement).
    tokenizer: a `hardpos_jax.tokenizer.Tokenizer`.
    selection: e.g. ["hard_positives/replace_att", "sugar_crepe"], ["suite"].
    data_dir, manual_dir: see `Evaluator.open`.
    out_dir: where to write the reports; None writes nothing.

  Returns:
    {name: summary} of the evaluators that had data.
  """
  opened, absent = [], []
  for s in select(selection):
    sources, missing = s.evaluator.open(
        s.subsets, optional=s.optional, data_dir=data_dir,
        manual_dir=manual_dir)
    opened += [(s.evaluator, sources)] if sources else []
    absent += [f"{s.evaluator.name}/{n}" for n in missing]
  if absent:
    console.say(f"No data for {len(absent)} subsets, skipped: "
                f"{_abbreviate(absent)} (see docs/data.md)", lead_only=True)
  params = sharding.replicate(params, encoders.mesh)
  summaries = {evaluator.name: evaluator.score(encoders, params, tokenizer,
                                               sources, out_dir)
               for evaluator, sources in opened}
  if out_dir is not None:
    reports.write_combined(reports.combined({"model": summaries}), out_dir)
  return summaries


def _abbreviate(names: Sequence[str]) -> str:
  """"a/x, a/y, b/z" as "a (2 subsets), b/z"."""
  groups: dict[str, list[str]] = {}
  for name in names:
    groups.setdefault(name.split("/")[0], []).append(name)
  return ", ".join(g[0] if len(g) == 1 else f"{k} ({len(g)} subsets)"
                   for k, g in groups.items())
