"""The paper's two effects, tested in the synthetic world, in one command.

  .venv/bin/python -m experiments.synthetic_paper --workdir=/tmp/hardpos-exp

Pretrains one small CLIP from scratch on `synthetic_shapes`' `pretrain` split
(plain captions in the world's wording conventions), fine-tunes a copy of it
per variant and seed on the `train` split with the recipes of configs/
(captions only, HN, HP, HN + HP, HN fractions), evaluates every fine-tune on
the synthetic benchmark every few steps, and writes the table, the paper's
comparisons with bootstrap intervals, verdicts, a bar plot and curves into
docs/RESULTS.md (between its `generated` markers; the hand-written design and
reading around them are kept), docs/results.png and docs/results_curves.png.
Each run's TensorBoard logs are in its workdir (`tensorboard --logdir=DIR`).
The design, and what would falsify the paper in this world, is in
docs/RESULTS.md. Rerunning on the same workdir reuses finished runs.
"""

import csv
import json
import os
import sys
import time

from absl import app
from absl import flags
import jax
import matplotlib.figure
import numpy as np
import tensorflow_datasets as tfds

from configs import control, neg, pos, pos_neg  # pylint: disable=g-multiple-import
from hardpos_jax import atomic
from hardpos_jax.evals import metrics
from hardpos_jax import stats
from hardpos_jax import train

# id -> (display name, recipe, recipe arg beyond demo/tiny).
VARIANTS = {
    "control": ("captions only (control)", control, ""),
    "hn": ("HN", neg, ""),
    "hp": ("HP", pos, ""),
    "hn_hp": ("HN + HP", pos_neg, ""),
    "hn_frac_0.25": ("HN + HP, HN fraction 0.25", pos_neg, "hn_fraction=0.25"),
    "hn_frac_0.5": ("HN + HP, HN fraction 0.5", pos_neg, "hn_fraction=0.5"),
    "hn_frac_0.75": ("HN + HP, HN fraction 0.75", pos_neg, "hn_fraction=0.75"),
}
PRETRAINED = "pretrained"
# The variants the paper's comparisons read.
REQUIRED = ("control", "hn", "hn_hp")
NAMES = {PRETRAINED: "pretrained (no fine-tuning)",
         **{k: v[0] for k, v in VARIANTS.items()}}
BENCHMARKS = {"REPLACE": ("replace_att", "replace_rel"), "SWAP": ("swap",)}
FLAGS_SHOWN = ("original", "augmented", "brittleness")
SHORT = {"original": "Orig", "augmented": "Aug", "brittleness": "Brittle"}
# Mean score gaps per item (mechanism evidence): how far below the caption the
# hard positive and the hard negative score.
GAPS = {"hp_gap": ("s_c", "s_p"), "hn_gap": ("s_c", "s_n")}
# The paper's claims as (a, b, metric, expected sign of a - b); sign 0 is
# "not lower": the interval's lower end above -NONINFERIORITY_MARGIN points.
EFFECTS = {
    "(a) HN fine-tuning raises Orig and Brittleness": (
        ("hn", "control", "original", 1),
        ("hn", "control", "brittleness", 1)),
    "(b) adding HPs raises Aug and lowers Brittleness, keeping Orig": (
        ("hn_hp", "hn", "augmented", 1),
        ("hn_hp", "hn", "brittleness", -1),
        ("hn_hp", "hn", "original", 0)),
}
NONINFERIORITY_MARGIN = 1.0
BOOTSTRAP_REPS = 2000
BEGIN = "<!-- generated: begin (experiments/synthetic_paper.py) -->"
END = "<!-- generated: end -->"

# The protocol (docs/RESULTS.md, "Design"); --scale multiplies the steps.
PRETRAIN = dict(batch_size=256, steps=600, lr=1e-3, warmup=50, evals=3)
FINETUNE = dict(batch_size=64, steps=250, lr=3e-4, warmup=20, evals=5)
TINY = dict(batch_size=8, steps=4, lr=1e-3, warmup=1, evals=2)


def _schedule(config, plan: dict, scale: int) -> None:
  config.batch_size = plan["batch_size"]
  config.total_steps = plan["steps"] * scale
  config.optim.lr = plan["lr"]
  config.optim.warmup_steps = plan["warmup"]
  config.eval_every = config.total_steps // plan["evals"]
  config.checkpoint_every = config.total_steps
  config.keep_checkpoints = 1


def pretrain_config(tiny: bool, scale: int, data_dir: str):
  """Plain captions of the `pretrain` split, from scratch."""
  config = control.get_config("demo,tiny" if tiny else "demo")
  config.input.split = "pretrain"
  config.input.data_dir = data_dir
  _schedule(config, TINY if tiny else PRETRAIN, scale)
  return config


def finetune_config(variant: str, tiny: bool, scale: int, data_dir: str,
                    init: str, seed: int):
  """A variant's recipe fine-tuning `init` on the `train` split."""
  _, recipe, arg = VARIANTS[variant]
  config = recipe.get_config(",".join(filter(None, [
      "demo,tiny" if tiny else "demo", arg])))
  config.from_scratch = False
  config.init = init
  config.seed = seed
  config.input.data_dir = data_dir
  _schedule(config, TINY if tiny else FINETUNE, scale)
  return config


def read_outcomes(path: str) -> dict[str, dict[str, np.ndarray]]:
  """A synthetic evaluation's `<eval>_scores.csv` -> {subset: {name: [N]}}:
  the per-item flags of FLAGS_SHOWN and the score gaps of GAPS, by index."""
  rows = {}
  with open(path, newline="") as f:
    for row in csv.DictReader(f):
      rows.setdefault(row["subset"], []).append(row)
  out = {}
  for subset, items in rows.items():
    items.sort(key=lambda r: int(r["index"]))
    s = {k: np.array([float(r[k]) for r in items]) for k in ("s_c", "s_n",
                                                             "s_p")}
    flags_ = metrics.hard_positive_flags(s["s_c"], s["s_n"], s["s_p"])
    out[subset] = {**{k: flags_[k].astype(np.float64) for k in FLAGS_SHOWN},
                   **{k: s[a] - s[b] for k, (a, b) in GAPS.items()}}
  return out


def run(config, workdir: str) -> dict[int, dict]:
  """Trains (or resumes) one run; returns {step: outcomes} of its evals."""
  train.train_and_evaluate(config, workdir)
  eval_dir = os.path.join(workdir, "eval")
  return {int(step): read_outcomes(os.path.join(
      eval_dir, step, f"{config.evals}_scores.csv"))
          for step in os.listdir(eval_dir)}


def outcomes(runs: list[dict], subsets, name: str) -> list[np.ndarray]:
  """Final-step [seeds, items] arrays of `name`, one per subset."""
  return [np.stack([r[max(r)][s][name] for r in runs]) for s in subsets]


def _cell(runs, subsets, name) -> str:
  """Percent for flags, cosine similarity for gaps; ± bootstrap s.e."""
  a = outcomes(runs, subsets, name)
  scale, digits = (1.0, 3) if name in GAPS else (100.0, 1)
  se = np.std(stats.bootstrap(a, reps=BOOTSTRAP_REPS))
  return f"{scale * stats.score(a):.{digits}f} ± {scale * se:.{digits}f}"


def tables(results: dict[str, list[dict]]) -> str:
  """Markdown: the benchmark table and the per-subset/gap table."""
  head = ["model", "seeds"] + [f"{b} {SHORT[m]}" for b in BENCHMARKS
                               for m in FLAGS_SHOWN]
  main = [head]
  for key, runs in results.items():
    main.append([NAMES[key], str(len(runs))] + [
        _cell(runs, subsets, m) for subsets in BENCHMARKS.values()
        for m in FLAGS_SHOWN])
  subsets = [s for ss in BENCHMARKS.values() for s in ss]
  head = ["model"] + [f"{s} Orig" for s in subsets] + [
      f"{b} {g}" for b in BENCHMARKS for g in GAPS]
  extra = [head]
  for key, runs in results.items():
    extra.append([NAMES[key]] + [_cell(runs, [s], "original")
                                 for s in subsets] + [
        _cell(runs, ss, g) for ss in BENCHMARKS.values()
        for g in GAPS])
  return "\n\n".join(_markdown(t) for t in (main, extra))


def _markdown(rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
  return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def compare(results, a: str, b: str, subsets, metric: str, seed: int):
  """(a - b in points, 95 % interval) of a metric over the given subsets."""
  xa, xb = (outcomes(results[v], subsets, metric) for v in (a, b))
  diff = 100 * (stats.score(xa) - stats.score(xb))
  lo, hi = stats.interval(100 * stats.bootstrap(
      xa, xb, reps=BOOTSTRAP_REPS, seed=seed))
  return diff, lo, hi


def judge(sign: int, lo: float, hi: float) -> str:
  """A comparison's verdict from its interval and the paper's direction."""
  if sign == 0:
    if lo > -NONINFERIORITY_MARGIN:
      return "as the paper"
    return "opposite" if hi < -NONINFERIORITY_MARGIN else "inconclusive"
  if sign * lo > 0 and sign * hi > 0:
    return "as the paper"
  if sign * lo < 0 and sign * hi < 0:
    return "opposite"
  return "no difference detected"


def verdict(judgements: list[str]) -> str:
  if all(j == "as the paper" for j in judgements):
    return "reproduced"
  if "opposite" in judgements:
    return "reversed"
  if "as the paper" in judgements:
    return "partly reproduced"
  return "not reproduced"


def comparisons(results) -> str:
  """The paper's comparisons with 95 % intervals and a verdict per effect."""
  lines = []
  for effect, items in EFFECTS.items():
    for bench, subsets in BENCHMARKS.items():
      judged, parts = [], []
      for k, (a, b, metric, sign) in enumerate(items):
        d, lo, hi = compare(results, a, b, subsets, metric, seed=k)
        judged.append(judge(sign, lo, hi))
        parts.append(f"{NAMES[a]} − {NAMES[b]} {SHORT[metric]} {d:+.1f} "
                     f"[{lo:+.1f}, {hi:+.1f}] ({judged[-1]})")
      lines.append(f"- **{effect}, {bench}: {verdict(judged)}.** "
                   + "; ".join(parts) + ".")
  for bench, subsets in BENCHMARKS.items():
    parts = []
    for metric in FLAGS_SHOWN:
      d, lo, hi = compare(results, "control", PRETRAINED, subsets, metric, 0)
      parts.append(f"{SHORT[metric]} {d:+.1f} [{lo:+.1f}, {hi:+.1f}]")
    lines.append(f"- Control − pretrained, {bench} (does fine-tuning move the "
                 "model?): " + "; ".join(parts) + ".")
  return "\n".join(lines)


def plot_bars(results, path: str) -> None:
  fig = matplotlib.figure.Figure(figsize=(11, 4.5))
  names = list(results)
  x = np.arange(len(names))
  for i, (bench, subsets) in enumerate(BENCHMARKS.items()):
    ax = fig.add_subplot(1, 2, i + 1)
    for j, metric in enumerate(FLAGS_SHOWN):
      cells = [outcomes(results[n], subsets, metric) for n in names]
      means = [100 * stats.score(c) for c in cells]
      errs = [100 * np.std(stats.bootstrap(c, reps=BOOTSTRAP_REPS))
              for c in cells]
      ax.bar(x + (j - 1) * 0.27, means, 0.27, yerr=errs, label=metric)
    ax.set_xticks(x, [NAMES[n] for n in names], rotation=35, ha="right",
                  fontsize=7)
    ax.set_title(f"{bench} (mean ± bootstrap s.e.)")
    ax.set_ylabel("%")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def plot_curves(results, path: str) -> None:
  """Orig / Aug / Brittle against fine-tuning step, mean over seeds; step 0
  is the pretrained model."""
  fig = matplotlib.figure.Figure(figsize=(13, 7))
  start = results[PRETRAINED][0]
  start = start[max(start)]
  for i, (bench, subsets) in enumerate(BENCHMARKS.items()):
    for j, metric in enumerate(FLAGS_SHOWN):
      ax = fig.add_subplot(2, 3, 3 * i + j + 1)
      first = stats.score([start[s][metric][None] for s in subsets])
      for key, runs in results.items():
        if key == PRETRAINED:
          continue
        steps = sorted(runs[0])
        mean = np.mean([[stats.score([r[t][s][metric][None] for s in subsets])
                         for t in steps] for r in runs], axis=0)
        ax.plot([0] + steps, 100 * np.r_[first, mean], marker=".",
                label=NAMES[key])
      ax.set_title(f"{bench} {SHORT[metric]}")
      ax.set_xlabel("fine-tuning step")
      ax.set_ylabel("%")
  fig.axes[0].legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)


def write_report(results, out_dir: str, command: str, seconds: float) -> None:
  """Writes RESULTS.md's generated block and the two plots."""
  os.makedirs(out_dir, exist_ok=True)
  plot_bars(results, os.path.join(out_dir, "results.png"))
  plot_curves(results, os.path.join(out_dir, "results_curves.png"))
  block = f"""{BEGIN}
Made by `{command}` in {seconds / 60:.0f} min on this machine
({os.cpu_count()} CPU cores, no accelerator).

Percentages on the synthetic benchmark (1,000 items per subset); REPLACE is
the macro mean of replace_att and replace_rel. ± is the bootstrap standard
error over seeds and items (items only for the single pretrained model).

{tables(results)}

`hp_gap` = mean s(c) − s(c_p) and `hn_gap` = mean s(c) − s(c_n) (cosine
similarity): how much lower the model scores the hard positive and the hard
negative than the caption.

The paper's comparisons: difference in points, 95 % bootstrap interval over
seeds and items (paired over items; {BOOTSTRAP_REPS} replicates), and the
verdict ("not lower" means the interval's lower end is above
−{NONINFERIORITY_MARGIN:.0f} point):

{comparisons(results)}

![results](results.png)

![curves](results_curves.png)
{END}"""
  path = os.path.join(out_dir, "RESULTS.md")
  text = block + "\n"
  if os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      old = f.read()
    if BEGIN in old and END in old:
      text = (old[:old.index(BEGIN)] + block
              + old[old.index(END) + len(END):])
  atomic.write_text(path, text)


def main(argv):
  del argv
  f = flags.FLAGS
  unknown = set(f.variants) - set(VARIANTS)
  missing = set(REQUIRED) - set(f.variants)
  if unknown or missing:
    raise app.UsageError(f"--variants: unknown {sorted(unknown)}, missing "
                         f"{sorted(missing)}; choose from {list(VARIANTS)}")
  tfds.disable_progress_bar()
  start = time.time()
  workdir = os.path.abspath(f.workdir)
  # The runs share shapes: later ones load their compiled steps from disk.
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(workdir, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  data_dir = os.path.join(workdir, "tfds")
  pre_dir = os.path.join(workdir, "pretrain")
  results = {PRETRAINED: [run(pretrain_config(f.tiny, f.scale, data_dir),
                              pre_dir)]}
  for variant in f.variants:
    results[variant] = [
        run(finetune_config(variant, f.tiny, f.scale, data_dir, pre_dir,
                            seed),
            os.path.join(workdir, f"{variant}_seed{seed}"))
        for seed in map(int, f.seeds)]
  command = ("python -m experiments.synthetic_paper "
             + " ".join(sys.argv[1:]))
  write_report(results, f.out, command, time.time() - start)
  print(tables(results))
  print(comparisons(results))
  with open(os.path.join(workdir, "wall_seconds.json"), "w") as out:
    json.dump({"seconds": time.time() - start}, out)


if __name__ == "__main__":
  flags.DEFINE_string("workdir", None, "Where every run's workdir goes.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Fine-tuning seeds.")
  flags.DEFINE_list("variants", list(VARIANTS),
                    f"Fine-tuning variants; must include {REQUIRED}.")
  flags.DEFINE_integer("scale", 1, "Multiplies every run's steps (a longer "
                       "protocol for an accelerator).")
  flags.DEFINE_bool("tiny", False, "The tiny world and model (for tests).")
  flags.DEFINE_string("out", "docs", "Where RESULTS.md and the plots go.")
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
