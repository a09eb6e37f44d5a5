"""The kinds of benchmark, each a module with the same face.

A kind module has `SCORE_COLUMNS` (its scores CSV's columns), `score_split(
encoders, params, tokenizer, source, subset)` (scores with `index` [N] and
`scores` [N, C]), `summarize({subset: scores})`, `headline(summary)` (the
few numbers a paper reports), `format_table(summary)` and `plot(summary,
path)`. Summaries of any subset of a kind's subsets are valid.
"""

from types import ModuleType

from hardpos_jax.evals import aro
from hardpos_jax.evals import hard_positives
from hardpos_jax.evals import retrieval
from hardpos_jax.evals import sugar_crepe
from hardpos_jax.evals import sugar_crepe_pp
from hardpos_jax.evals import vl_checklist
from hardpos_jax.evals import winoground
from hardpos_jax.evals import zeroshot

KINDS: dict[str, ModuleType] = {
    "hard_positives": hard_positives,
    "sugar_crepe": sugar_crepe,
    "sugar_crepe_pp": sugar_crepe_pp,
    "aro": aro,
    "winoground": winoground,
    "vl_checklist": vl_checklist,
    "retrieval": retrieval,
    "zeroshot": zeroshot,
}


def get(kind: str) -> ModuleType:
  """The kind module `kind`."""
  if kind not in KINDS:
    raise ValueError(f"Unknown kind {kind!r}; choose from {sorted(KINDS)}")
  return KINDS[kind]
