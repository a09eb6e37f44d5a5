"""`python -m hardpos_jax.evaluate`: benchmark a model and write its reports.

  python -m hardpos_jax.evaluate --model=ViT-B-32.pt \
      --evals=hard_positives,sugar_crepe --data_dir=DIR --manual_dir=DIR \
      --out=reports/
  python -m hardpos_jax.evaluate --workdir=runs/pos_neg [--step=N]

`--model` is anything `hardpos_jax.load` reads. `--workdir` evaluates a
training workdir's checkpoint at `--step`, by default the latest, and writes
to `<workdir>/eval/<step>/` unless `--out` says otherwise. For each eval, `--out` receives `<eval>.json`,
`<eval>_scores.csv`, `<eval>.md` (also printed) and `<eval>.png`; see
`hardpos_jax.evals`. On several hosts, run the same command on each with
`--distributed`.

From Python or a notebook:

    model = hardpos_jax.load("ViT-B-32.pt")
    summaries = evaluate_model(model, evals=["synthetic"], out_dir="reports")
    print(format_table(summaries["synthetic"]))
"""

from collections.abc import Sequence
import os

from absl import app
from absl import flags
import jax
import tensorflow as tf

import hardpos_jax
from hardpos_jax import checkpoint
from hardpos_jax import console
from hardpos_jax import evals as evals_lib
from hardpos_jax import sharding

# Re-exported for notebooks: `evaluate.format_table`, `evaluate.plot`.
format_table = evals_lib.format_table
plot = evals_lib.plot


def evaluate_model(model: hardpos_jax.Model,
                   evals: Sequence[str] = ("hard_positives",), *,
                   data_dir: str | None = None, manual_dir: str | None = None,
                   out_dir: str | None = None, batch_size: int = 256,
                   mesh: jax.sharding.Mesh | None = None,
                   encoders: evals_lib.Encoders | None = None
                   ) -> dict[str, dict]:
  """Runs registered evals on a loaded model.

  Args:
    model: a `hardpos_jax.Model`.
    evals: names in `hardpos_jax.evals.EVALUATORS`.
    data_dir: TFDS data directory; None means TFDS's default.
    manual_dir: the released files, to prepare datasets not yet built.
    out_dir: where to write each eval's reports; None writes nothing.
    batch_size: images or texts per encoder call, divisible by the devices.
    mesh: a mesh with a "data" axis; default: every device, by process.
    encoders: the model config's compiled towers, kept across calls (the
      trainer's); when given, `mesh` and `batch_size` are theirs.

  Returns:
    {name: summary}; see `hardpos_jax.evals.Evaluator.evaluate`.
  """
  evaluators = [evals_lib.get(name) for name in evals]
  if encoders is None:
    encoders = evals_lib.create_encoders(
        model.config, mesh or sharding.create_mesh(), batch_size)
  return {
      e.name: e.evaluate(encoders, model.params, model.tokenizer,
                         data_dir=data_dir, manual_dir=manual_dir,
                         out_dir=out_dir)
      for e in evaluators
  }


def run(*, model: str | None = None, workdir: str | None = None,
        step: int | None = None, evals: Sequence[str] = ("hard_positives",),
        data_dir: str | None = None, manual_dir: str | None = None,
        out: str | None = None, tokenizer: str | None = None,
        batch_size: int = 256) -> dict[str, dict]:
  """The command: evaluate `model` (a path) or a workdir's checkpoint.

  Returns:
    {name: summary}; the tables are printed by process 0.
  """
  if (model is None) == (workdir is None):
    raise ValueError("Give exactly one of --model and --workdir")
  for name in evals:
    evals_lib.get(name)  # Fails on a typo before loading the model.
  if workdir is not None:
    step = checkpoint.workdir_step(workdir, step)
    loaded = hardpos_jax.load(workdir, tokenizer, step=step)
    out = out or os.path.join(workdir, "eval", str(step))
  elif step is not None or out is None:
    raise ValueError("--model needs --out and takes no --step")
  else:
    loaded = hardpos_jax.load(model, tokenizer)
  summaries = evaluate_model(loaded, evals, data_dir=data_dir,
                             manual_dir=manual_dir, out_dir=out,
                             batch_size=batch_size)
  if jax.process_index() == 0:
    for name, summary in summaries.items():
      print(f"## {name} ({summary['seconds']:.0f} s), reports in {out}\n")
      print(format_table(summary) + "\n")
  return summaries


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  tf.config.set_visible_devices([], "GPU")
  f = flags.FLAGS
  console.log_to(f.out or f.workdir or ".", "evaluate")
  if f.distributed:
    sharding.initialize_distributed()
  try:
    run(model=f.model, workdir=f.workdir, step=f.step, evals=f.evals,
        data_dir=f.data_dir, manual_dir=f.manual_dir, out=f.out,
        tokenizer=f.tokenizer, batch_size=f.batch_size)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


if __name__ == "__main__":
  # Defined here, not at import, so the trainer and notebooks can import this.
  flags.DEFINE_string("model", None, "A checkpoint hardpos_jax.load reads.")
  flags.DEFINE_string("workdir", None, "A training workdir.")
  flags.DEFINE_integer("step", None,
                       "The workdir's step to evaluate; default: the latest.")
  flags.DEFINE_list("evals", ["hard_positives"],
                    f"Evals to run: {sorted(evals_lib.EVALUATORS)}.")
  flags.DEFINE_string("data_dir", None, "TFDS data directory.")
  flags.DEFINE_string("manual_dir", None,
                      "Released files, to prepare unbuilt datasets.")
  flags.DEFINE_string("out", None,
                      "Report directory; default <workdir>/eval/<step>/.")
  flags.DEFINE_string("tokenizer", None,
                      "BPE .txt.gz or HF tokenizer dir; default: the model's "
                      "own (hardpos_jax.load's `vocab`).")
  flags.DEFINE_integer("batch_size", 256,
                       "Images or texts per encoder call, all devices.")
  flags.DEFINE_bool("distributed", False,
                    "Join the multi-host runtime (sharding.initialize_distributed).")
  app.run(main)
