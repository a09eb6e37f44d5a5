r"""`python -m hardpos_jax.generate`: hard positives and negatives for captions.

  python -m hardpos_jax.generate --input=captions_train2017.json \
      --output=manual_dir [--seed=0] [--backend=rules|llm] [--llm_model=DIR]

Reads captions (a COCO captions JSON, a JSONL of strings or {"caption": ...}
objects, or a CSV with a `caption` column) and writes, in the layout of the
`coco_hard_pos_neg` builder's manual_dir, one line per caption in input
order:

  <output>/hard_positives_ft/swap_hp.jsonl      a JSON string, "None" if none
  <output>/hard_positives_ft/replace_hp.jsonl   a JSON string, "None" if none
  <output>/hard_negatives/hard_negatives.jsonl  a JSON list of strings

Hard positives (Kamath et al., ECCV 2024) come from a backend: `rules` (the
default, the rules of `caption_rules`) or `llm`, a local causal LM prompted
as in the paper's release (llm_backend.py). Hard negatives are always made
by `caption_rules.hard_negatives`, and never equal the caption or one of its
hard positives. Every random choice is seeded by `--seed` and the caption,
so results do not depend on input order.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
import csv
import dataclasses
import json
import os
import pathlib
from typing import Any, Protocol

from absl import app
from absl import flags

from hardpos_jax import caption_rules
from hardpos_jax import llm_backend
from tfds_builders.coco_hard_pos_neg import layout

# Output files, relative to --output: the coco_hard_pos_neg manual_dir.
SWAP_FILE = layout.HARD_POSITIVE_FILES["swap"]
REPLACE_FILE = layout.HARD_POSITIVE_FILES["replace"]
HARD_NEGATIVE_FILE = layout.HARD_NEGATIVE_FILE
NO_HARD_POSITIVE = layout.NO_HARD_POSITIVE


class InputError(ValueError):
  """Bad captions input; the message names the file and line or entry."""


class Backend(Protocol):
  """Makes hard positives for a list of captions."""

  def hard_positives(
      self, captions: Sequence[str]
  ) -> list[caption_rules.HardPositives]:
    """Returns one HardPositives per caption, in order."""


class RuleBackend:
  """Hard positives by the rules of `caption_rules`."""

  def __init__(self, seed: int = 0):
    self.seed = seed

  def hard_positives(
      self, captions: Sequence[str]
  ) -> list[caption_rules.HardPositives]:
    return [caption_rules.hard_positives(c, self.seed) for c in captions]


BACKENDS = {
    "rules": lambda seed, llm_model: RuleBackend(seed),
    "llm": lambda seed, llm_model: llm_backend.LLMBackend(
        llm_model, seed=seed),
}


def make_backend(name: str, *, seed: int = 0,
                 llm_model: str | None = None) -> Backend:
  """Returns the backend `name` of BACKENDS; "llm" needs `llm_model`."""
  if name not in BACKENDS:
    raise ValueError(f"Unknown backend {name!r}; choices: {sorted(BACKENDS)}")
  if name == "llm" and not llm_model:
    raise ValueError("The llm backend needs --llm_model, a local directory.")
  return BACKENDS[name](seed, llm_model)


@dataclasses.dataclass(frozen=True)
class Generated:
  """Per caption, in input order: hard positives and negatives; counts."""

  hard_positives: list[caption_rules.HardPositives]
  hard_negatives: list[list[caption_rules.Edit]]
  counts: dict[str, int]


def generate(
    captions: Sequence[str], backend: Backend, seed: int = 0
) -> Generated:
  """Makes hard positives (with `backend`) and negatives for `captions`.

  Args:
    captions: the captions.
    backend: makes the hard positives.
    seed: seeds the hard negatives' choices.

  Returns:
    Aligned results, and counts: captions, captions with a swap / replace
    hard positive / any hard negative, and uses of each rule
    (`hp_<rule>`, `hn_<rule>`).
  """
  positives = backend.hard_positives(captions)
  if len(positives) != len(captions):
    raise ValueError(f"The backend returned {len(positives)} results for "
                     f"{len(captions)} captions.")
  negatives = [
      caption_rules.hard_negatives(
          c, [e.text for e in (p.swap, p.replace) if e], seed)
      for c, p in zip(captions, positives)
  ]
  names = ["captions", "with_swap_hp", "with_replace_hp", "with_hn"]
  names += [f"hp_{r}" for r in caption_rules.HARD_POSITIVE_RULES]
  names += [f"hn_{r}" for r in caption_rules.HARD_NEGATIVE_RULES]
  counts = collections.Counter(dict.fromkeys(names, 0))
  counts["captions"] = len(captions)
  for p, n in zip(positives, negatives):
    counts["with_swap_hp"] += p.swap is not None
    counts["with_replace_hp"] += p.replace is not None
    counts["with_hn"] += bool(n)
    counts.update(f"hp_{e.rule}" for e in (p.swap, p.replace) if e)
    counts.update(f"hn_{e.rule}" for e in n)
  return Generated(positives, negatives, dict(counts))


def _caption(value: Any, where: str) -> str:
  if isinstance(value, Mapping):
    if "caption" not in value:
      raise InputError(f"{where}: no 'caption' key in {value!r:.200}")
    value = value["caption"]
  if not isinstance(value, str):
    raise InputError(f"{where}: the caption {value!r:.200} is not a string")
  if not value.strip():
    raise InputError(f"{where}: the caption is empty")
  return value


def _read_coco(path: pathlib.Path) -> list[str]:
  try:
    data = json.loads(path.read_text(encoding="utf-8"))
  except json.JSONDecodeError as e:
    raise InputError(f"{path}, line {e.lineno}, column {e.colno}: malformed "
                     f"JSON: {e.msg}") from e
  if not isinstance(data, Mapping) or not isinstance(
      data.get("annotations"), list):
    raise InputError(f"{path}: not a COCO captions file (no 'annotations' "
                     "list)")
  return [_caption(a, f"{path}, annotations[{i}]")
          for i, a in enumerate(data["annotations"])]


def _read_jsonl(path: pathlib.Path) -> list[str]:
  captions = []
  for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(),
                                start=1):
    where = f"{path}, line {number}"
    try:
      value = json.loads(line)
    except json.JSONDecodeError as e:
      raise InputError(f"{where}: malformed JSON at column {e.colno}: "
                       f"{e.msg}") from e
    captions.append(_caption(value, where))
  return captions


def _read_csv(path: pathlib.Path) -> list[str]:
  with path.open(newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    try:
      if "caption" not in (reader.fieldnames or ()):
        raise InputError(f"{path}, line 1: no 'caption' column in the header "
                         f"{reader.fieldnames}")
      return [_caption(row, f"{path}, line {reader.line_num}")
              for row in reader]
    except csv.Error as e:
      raise InputError(f"{path}, line {reader.line_num}: {e}") from e


READERS = {".json": _read_coco, ".jsonl": _read_jsonl, ".csv": _read_csv}


def read_captions(path: str | os.PathLike[str]) -> list[str]:
  """Reads captions, in order, from a COCO JSON, a JSONL or a CSV file.

  Raises:
    InputError: the file is missing or unreadable, or an entry has no
      non-empty caption; the message names the file and line (or entry).
    ValueError: the file's extension is none of READERS'.
  """
  path = pathlib.Path(path)
  if path.suffix not in READERS:
    raise ValueError(f"{path}: unknown input type {path.suffix!r}; "
                     f"choices: {sorted(READERS)}")
  try:
    return READERS[path.suffix](path)
  except (OSError, UnicodeDecodeError) as e:
    raise InputError(f"{path} cannot be read: {e}") from e


def write_outputs(output_dir: str | os.PathLike[str],
                  generated: Generated) -> None:
  """Writes the three JSONL files of the coco_hard_pos_neg manual_dir.

  Each file is written to a temporary file beside it and all are renamed
  only once all are written, so a failure leaves no partial file.
  """
  output_dir = pathlib.Path(output_dir)
  contents = {
      SWAP_FILE: [p.swap for p in generated.hard_positives],
      REPLACE_FILE: [p.replace for p in generated.hard_positives],
  }
  lines = {
      name: [json.dumps(e.text if e else NO_HARD_POSITIVE) for e in edits]
      for name, edits in contents.items()
  }
  lines[HARD_NEGATIVE_FILE] = [
      json.dumps([e.text for e in n]) for n in generated.hard_negatives
  ]
  temporary = {}
  try:
    for name, rows in lines.items():
      path = output_dir / name
      path.parent.mkdir(parents=True, exist_ok=True)
      temporary[path] = path.with_name(f".{path.name}.tmp-{os.getpid()}")
      temporary[path].write_text(
          "".join(row + "\n" for row in rows), encoding="utf-8")
    for path, tmp in temporary.items():
      tmp.replace(path)
  finally:
    for tmp in temporary.values():
      tmp.unlink(missing_ok=True)


def format_counts(counts: Mapping[str, int]) -> str:
  """The counts as an aligned two-column table."""
  width = max(map(len, counts))
  return "\n".join(f"{k:<{width}}  {v:>9,d}" for k, v in counts.items())


def generate_files(
    input_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    backend: str = "rules",
    seed: int = 0,
    llm_model: str | None = None,
) -> dict[str, int]:
  """Reads captions, generates, writes the manual_dir files, prints counts.

  Args:
    input_path: a COCO captions JSON, JSONL or CSV (see `read_captions`).
    output_dir: receives SWAP_FILE, REPLACE_FILE and HARD_NEGATIVE_FILE.
    backend: a name of BACKENDS.
    seed: seeds every random choice.
    llm_model: the local model directory of the llm backend.

  Returns:
    The counts of `generate`.
  """
  captions = read_captions(input_path)
  generated = generate(
      captions, make_backend(backend, seed=seed, llm_model=llm_model), seed)
  write_outputs(output_dir, generated)
  names = (SWAP_FILE, REPLACE_FILE, HARD_NEGATIVE_FILE)
  print(f"Wrote {len(captions):,d} lines to each of {names} in {output_dir}")
  print(format_counts(generated.counts))
  return generated.counts


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  generate_files(f.input, f.output, backend=f.backend, seed=f.seed,
                 llm_model=f.llm_model)


if __name__ == "__main__":
  # Defined here, not at import: importing this module claims no flags.
  flags.DEFINE_string("input", None, "Captions: COCO .json, .jsonl or .csv.")
  flags.DEFINE_string("output", None, "The manual_dir to write the files to.")
  flags.DEFINE_integer("seed", 0, "Seeds every random choice.")
  flags.DEFINE_enum("backend", "rules", sorted(BACKENDS),
                    "Makes the hard positives.")
  flags.DEFINE_string("llm_model", None,
                      "The llm backend's local model directory.")
  flags.mark_flags_as_required(["input", "output"])
  flags.register_multi_flags_validator(
      ["backend", "llm_model"],
      lambda f: f["backend"] != "llm" or bool(f["llm_model"]),
      message="--backend=llm needs --llm_model, a local model directory.")
  app.run(main)
