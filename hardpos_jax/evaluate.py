"""`python -m hardpos_jax.evaluate`: benchmark models and write their reports.

  python -m hardpos_jax.evaluate --model=ViT-B-32.pt \
      --evals=hard_positives,sugar_crepe --data_dir=DIR --manual_dir=DIR \
      --out=reports/
  python -m hardpos_jax.evaluate --evals=suite --model=ViT-B-32.pt \
      --model=runs/pos_neg --out=reports/      # side by side
  python -m hardpos_jax.evaluate --workdir=runs/pos_neg [--step=N|best]

`--model` is anything `hardpos_jax.load` reads, and may be repeated.
`--workdir` evaluates a training workdir's checkpoint at `--step`, by
default the latest (`best`: the one its trainer kept by
`config.select_metric`), and writes to `<workdir>/eval/<step>/` unless
`--out` says otherwise. `--evals` takes benchmarks, `benchmark/subset`
entries or `suite` (see `hardpos_jax.evals.registry`). For each eval, the
report directory receives `<eval>.json`, `<eval>_scores.csv`, `<eval>.md`
(also printed) and `<eval>.png`; with several models each has its own
subdirectory. With several models or `suite`, `suite.md` / `.json` / `.png`
put every model's headline numbers side by side (also printed). On several
hosts, run the same command on each with `--distributed`.

From Python or a notebook:

    model = hardpos_jax.load("ViT-B-32.pt")
    summaries = evaluate_model(model, evals=["synthetic"], out_dir="reports")
    hardpos_jax.evals.show(summaries)
"""

from collections.abc import Sequence
import os

from absl import app
from absl import flags
import jax
import tensorflow as tf

from hardpos_jax import api
from hardpos_jax import checkpoint
from hardpos_jax import console
from hardpos_jax import evals as evals_lib
from hardpos_jax import sharding
from hardpos_jax.evals import reports


def evaluate_model(model: api.Model,
                   evals: Sequence[str] = ("hard_positives",),
                   *, data_dir: str | None = None,
                   manual_dir: str | None = None, out_dir: str | None = None,
                   batch_size: int = 256,
                   mesh: jax.sharding.Mesh | None = None) -> dict[str, dict]:
  """Runs a selection of evals on a loaded model, on every device.

  Args:
    model: a `hardpos_jax.Model`.
    evals: a selection (`hardpos_jax.evals.registry.select`).
    data_dir: TFDS data directory; None means TFDS's default.
    manual_dir: the released files, to prepare datasets not yet built.
    out_dir: where to write each eval's reports; None writes nothing.
    batch_size: images or texts per encoder call, divisible by the devices.
    mesh: a mesh with a "data" axis; default: every device, by process.

  Returns:
    {name: summary}; see `hardpos_jax.evals.Evaluator.evaluate`.
  """
  encoders = evals_lib.create_encoders(
      model.config, mesh or sharding.create_mesh(), batch_size)
  return evals_lib.evaluate(encoders, model.params, model.tokenizer, evals,
                        data_dir=data_dir, manual_dir=manual_dir,
                        out_dir=out_dir)


def _label(path: str) -> str:
  return os.path.basename(os.path.normpath(path))


def _step_flag(text: str | None) -> int | str | None:
  """`--step`: a number, "best" or unset."""
  if text is None or text == checkpoint.BEST:
    return text
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"--step={text!r}: give a step number or "
                     f"{checkpoint.BEST!r}") from None


def run(*, models: Sequence[str] = (), workdir: str | None = None,
        step: int | str | None = None,
        evals: Sequence[str] = ("hard_positives",),
        data_dir: str | None = None, manual_dir: str | None = None,
        out: str | None = None, tokenizer: str | None = None,
        batch_size: int = 256) -> dict[str, dict[str, dict]]:
  """The command: evaluate `models` (paths) or a workdir's checkpoint at
  `step` (a number, "best" or None: the latest).

  Returns:
    {model label: {eval name: summary}}; process 0 prints the tables.
  """
  if bool(models) == (workdir is not None):
    raise ValueError("Give exactly one of --model (repeatable) and --workdir")
  evals_lib.registry.select(evals)  # Fails on a typo before loading a model.
  if workdir is not None:
    number = checkpoint.workdir_step(workdir, step)
    out = out or os.path.join(workdir, "eval", str(number))
    # The best step lives in <workdir>/best, not always in checkpoints/.
    loaded = {f"{_label(workdir)}@{number}": lambda: api.load(
        workdir, tokenizer, step=step if step == checkpoint.BEST else number)}
  elif step is not None or out is None:
    raise ValueError("--model needs --out and takes no --step")
  else:
    labels = [_label(m) for m in models]
    if len(set(labels)) != len(labels):
      labels = [f"{i}:{label}" for i, label in enumerate(labels)]
    loaded = {label: (lambda m=m: api.load(m, tokenizer))
              for label, m in zip(labels, models)}
  per_model = {}
  for label, load in loaded.items():
    where = out if len(loaded) == 1 else os.path.join(out, label)
    console.say(f"# {label}", lead_only=True)
    per_model[label] = evaluate_model(load(), evals, data_dir=data_dir,
                                      manual_dir=manual_dir, out_dir=where,
                                      batch_size=batch_size)
    evals_lib.show(per_model[label], where)
  if len(loaded) > 1 or evals_lib.SUITE in evals:
    table = reports.combined(per_model)
    reports.write_combined(table, out)
    console.say(f"# Side by side ({os.path.join(out, reports.COMBINED)}.md)"
                f"\n\n{reports.format_combined(table)}\n", lead_only=True)
  return per_model


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  tf.config.set_visible_devices([], "GPU")
  f = flags.FLAGS
  console.log_to(f.out or f.workdir or ".", "evaluate")
  if f.distributed:
    sharding.initialize_distributed()
  try:
    run(models=f.model or (), workdir=f.workdir, step=_step_flag(f.step),
        evals=f.evals, data_dir=f.data_dir, manual_dir=f.manual_dir,
        out=f.out, tokenizer=f.tokenizer, batch_size=f.batch_size)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


def define_eval_flags(model: str = "the model's") -> None:
  """Defines the flags of every command that evaluates (this one, `wise`):
  --evals, --data_dir, --manual_dir, --tokenizer (whose default is `model`
  own) and --batch_size, the arguments of `evals.evaluate`."""
  flags.DEFINE_list("evals", ["hard_positives"],
                    f"Benchmarks {sorted(evals_lib.EVALUATORS)}, entries "
                    f"benchmark/subset, or {evals_lib.SUITE!r}: every one "
                    "whose data is present.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory.")
  flags.DEFINE_string("manual_dir", None,
                      "Released files, to prepare unbuilt datasets; with "
                      "several benchmarks, one folder per TFDS name inside.")
  flags.DEFINE_string("tokenizer", None,
                      f"BPE .txt.gz or HF tokenizer dir; default: {model} "
                      "own (hardpos_jax.load's `vocab`).")
  flags.DEFINE_integer("batch_size", 256,
                       "Images or texts per encoder call, all devices.")


if __name__ == "__main__":
  # Defined here, not at import, so the trainer and notebooks can import this.
  flags.DEFINE_multi_string("model", None,
                            "A checkpoint hardpos_jax.load reads; repeat to "
                            "compare models side by side.")
  flags.DEFINE_string("workdir", None, "A training workdir.")
  flags.DEFINE_string("step", None,
                      "The workdir's step to evaluate, or 'best' (kept by "
                      "config.select_metric); default: the latest.")
  define_eval_flags()
  flags.DEFINE_string("out", None,
                      "Report directory; default <workdir>/eval/<step>/.")
  flags.DEFINE_bool("distributed", False,
                    "Join the multi-host runtime (sharding.initialize_distributed).")
  app.run(main)
