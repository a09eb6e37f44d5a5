"""`python -m hardpos_jax.wise`: WiSE-FT weight-space ensembles over α.

WiSE-FT (Wortsman et al., CVPR 2022) interpolates the weights of a zero-shot
model and of its fine-tuned copy, θ_α = (1 − α)·θ_zero-shot + α·θ_fine-tuned,
and evaluates each θ_α: fine-tuning gains on the target task while much of
the zero-shot model's robustness stays.

  python -m hardpos_jax.wise --zero_shot=ViT-B-32.pt \
      --fine_tuned=runs/pos_neg [--fine_tuned_step=N] \
      --alphas=0,0.25,0.5,0.75,1 --evals=hard_positives,zeroshot_cifar10 \
      --data_dir=DIR --out=wise/

Both models are anything `hardpos_jax.api.load_params` reads, of one
architecture. For each α, `<out>/alpha_<α>/model/` receives θ_α as a flax
export (`hardpos_jax.load` reads it; `python -m hardpos_jax.export`
converts it) and `<out>/alpha_<α>/` the evals' reports. Then `<out>/wise.json`
(each α's headline numbers), `wise.md` (the table, also printed) and
`wise.png`, the trade-off plot: a reference number (`--x_metric`, by default
the mean of the retrieval and zero-shot headline numbers) against a
compositional one (`--y_metric`), a point per α.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import json
import os
from typing import Any

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from matplotlib import figure
import numpy as np
import tensorflow as tf

from hardpos_jax import api
from hardpos_jax import atomic
from hardpos_jax import checkpoint
from hardpos_jax import console
from hardpos_jax import evals as evals_lib
from hardpos_jax import evaluate
from hardpos_jax import sharding
from hardpos_jax.evals import reports

# Config keys that change how a model runs, not what it computes or its
# params: a fine-tuning run may rematerialise where a .pt's config does not.
_RUNTIME_KEYS = ("remat",)
# Kinds of eval whose headline numbers are the reference (x) axis: the
# abilities fine-tuning for compositionality may cost.
REFERENCE_KINDS = ("retrieval", "zeroshot")
# Differences listed in an error before "and N more".
_MAX_LISTED = 10


def _flat_config(config: Mapping[str, Any]) -> dict[str, Any]:
  """{"image.width": 768, ...}; JSON round-tripped, so tuple == list."""

  def flatten(prefix, node):
    for key, value in node.items():
      if isinstance(value, dict):
        yield from flatten(f"{prefix}{key}.", value)
      else:
        yield f"{prefix}{key}", value

  return dict(flatten("", json.loads(json.dumps(config))))


def config_differences(zero_shot: Mapping[str, Any],
                       fine_tuned: Mapping[str, Any]) -> list[str]:
  """The architecture keys whose values differ, e.g. "image.width: 768
  (zero-shot) vs 1024 (fine-tuned)"; runtime keys (remat) are ignored."""
  a, b = _flat_config(zero_shot), _flat_config(fine_tuned)
  return [f"{k}: {a.get(k, '<absent>')!r} (zero-shot) vs "
          f"{b.get(k, '<absent>')!r} (fine-tuned)"
          for k in sorted(a.keys() | b.keys())
          if k not in _RUNTIME_KEYS
          and a.get(k, "<absent>") != b.get(k, "<absent>")]


def _leaves(params: Any) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  return {jax.tree_util.keystr(path): (tuple(np.shape(x)), np.dtype(x.dtype))
          for path, x in jax.tree_util.tree_flatten_with_path(params)[0]}


def param_differences(zero_shot: Any, fine_tuned: Any) -> list[str]:
  """The param paths that only one tree has, or whose shape or dtype differ,
  e.g. "['img']['embedding']['kernel']: (8, 8, 3, 32) float32 (zero-shot)
  vs (8, 8, 3, 48) float32 (fine-tuned)"."""
  a, b = _leaves(zero_shot), _leaves(fine_tuned)

  def describe(leaf):
    return "absent" if leaf is None else f"{leaf[0]} {leaf[1]}"

  return [f"{p}: {describe(a.get(p))} (zero-shot) vs "
          f"{describe(b.get(p))} (fine-tuned)"
          for p in sorted(a.keys() | b.keys()) if a.get(p) != b.get(p)]


def _raise_if_different(differences: Sequence[str], what: str) -> None:
  if differences:
    more = len(differences) - _MAX_LISTED
    raise ValueError(
        f"WiSE-FT needs one architecture, but the zero-shot and fine-tuned "
        f"models' {what} differ: " + "; ".join(differences[:_MAX_LISTED])
        + (f"; and {more} more" if more > 0 else ""))


def check_compatible(zero_shot: tuple[dict, Any],
                     fine_tuned: tuple[dict, Any]) -> None:
  """Raises a ValueError naming the config keys, else the param paths, in
  which two (config, params) pairs (`api.load_params`'s) differ."""
  _raise_if_different(config_differences(zero_shot[0], fine_tuned[0]),
                      "configs")
  _raise_if_different(param_differences(zero_shot[1], fine_tuned[1]),
                      "params")


def _check_alpha(alpha: float) -> None:
  # The papers' path runs between the two models; beyond it is extrapolation.
  if not 0 <= alpha <= 1:
    raise ValueError(f"α must be in [0, 1] (WiSE-FT's path from the zero-shot "
                     f"to the fine-tuned model), got {alpha}")


@jax.jit
def _mix(zero_shot: Any, fine_tuned: Any, alpha: jax.Array) -> Any:
  # alpha is traced: one compilation serves every α, and at α = 0 or 1 the
  # products by 1 and 0 are exact, so the endpoints come back bit for bit.
  def mix(z, f):
    out = (1 - alpha) * z.astype(jnp.float32) + alpha * f.astype(jnp.float32)
    return out.astype(z.dtype)

  return jax.tree_util.tree_map(mix, zero_shot, fine_tuned)


def interpolate(zero_shot: Any, fine_tuned: Any, alpha: float) -> Any:
  """WiSE-FT's θ_α = (1 − α)·θ_zero-shot + α·θ_fine-tuned, leaf by leaf.

  Args:
    zero_shot: a params tree, e.g. ["img"]["embedding"]["kernel"]
      [P, P, 3, W] float32 (numpy or jax arrays).
    fine_tuned: a tree of the same paths, shapes and dtypes.
    alpha: the fine-tuned model's weight, in [0, 1].

  Returns:
    The tree of θ_α as jax arrays: each leaf the shape and dtype of the
    inputs', computed in float32; α = 0 and 1 give the endpoints exactly.

  Raises:
    ValueError: α is outside [0, 1], or the trees' paths, shapes or dtypes
      differ (each difference named).
  """
  _check_alpha(alpha)
  _raise_if_different(param_differences(zero_shot, fine_tuned), "params")
  return _mix(zero_shot, fine_tuned, jnp.float32(alpha))


@dataclasses.dataclass(frozen=True)
class Axis:
  """A number of the trade-off plot: the mean of some headline numbers.

  Attributes:
    label: the axis label.
    columns: the headline numbers ("<eval> <metric>") it averages.
  """

  label: str
  columns: tuple[str, ...]

  def value(self, row: Mapping[str, float]) -> float:
    """The mean of `row`'s `columns` (fractions in [0, 1])."""
    return float(np.mean([row[c] for c in self.columns]))


def choose_axes(summaries: Mapping[str, dict], x_metric: str | None = None,
                y_metric: str | None = None) -> tuple[Axis, Axis]:
  """The trade-off plot's (x, y) for a selection's summaries.

  Args:
    summaries: {eval: summary} of one model (`evals.evaluate`'s).
    x_metric: a headline number's name; default: the mean of the headline
      numbers of REFERENCE_KINDS evals, else the first headline number that
      is not y's.
    y_metric: a headline number's name; default: the first headline number
      of the first compositional eval (not of REFERENCE_KINDS), else of the
      first eval.

  Raises:
    ValueError: no summary has headline numbers, or a named metric is not
      one (the choices listed).
  """
  heads = {name: list(reports.headline(s)) for name, s in summaries.items()}
  columns = [c for h in heads.values() for c in h]
  if not columns:
    raise ValueError("No headline numbers: no selected eval had data")

  def named(metric):
    if metric not in columns:
      raise ValueError(f"No headline number {metric!r}; choose from "
                       f"{columns}")
    return Axis(metric, (metric,))

  reference = [n for n, s in summaries.items()
               if s["kind"] in REFERENCE_KINDS]
  compositional = [n for n in summaries if n not in reference] or list(heads)
  y = named(y_metric) if y_metric else named(heads[compositional[0]][0])
  if x_metric:
    return named(x_metric), y
  if reference:
    return Axis(f"mean of {'/'.join(reference)} headline numbers",
                tuple(c for n in reference for c in heads[n])), y
  return named(([c for c in columns if c != y.columns[0]] or columns)[0]), y


def plot_tradeoff(points: Mapping[float, tuple[float, float]], x: Axis,
                  y: Axis, path: str) -> None:
  """Writes a PNG: y against x, a point per α, the endpoints marked.

  Args:
    points: {α: (x value, y value)}, fractions in [0, 1].
    x, y: the axes.
    path: the file.
  """
  alphas = sorted(points)
  xs, ys = (100 * np.array([points[a] for a in alphas])).T
  fig = figure.Figure(figsize=(7, 5), layout="constrained")
  ax = fig.subplots()
  ax.plot(xs, ys, "o-", color="tab:blue", zorder=2)
  for a, px, py in zip(alphas, xs, ys):
    ax.annotate(f"α={a:g}", (px, py), textcoords="offset points",
                xytext=(6, 6))
  for a, marker, name, colour in ((0.0, "s", "zero-shot", "tab:green"),
                                  (1.0, "*", "fine-tuned", "tab:red")):
    if a in points:
      ax.scatter(*(100 * np.array(points[a])), s=200, marker=marker,
                 color=colour, label=f"{name} (α={a:g})", zorder=3)
  ax.set_xlabel(f"{x.label} (%)")
  ax.set_ylabel(f"{y.label} (%)")
  ax.set_title(r"WiSE-FT: $\theta_\alpha = (1 - \alpha)\,\theta_0 + "
               r"\alpha\,\theta_1$ (0: zero-shot, 1: fine-tuned)")
  ax.margins(0.15)  # Room for the α labels beside the outermost points.
  ax.legend()
  fig.savefig(path, format="png", dpi=100)


def alpha_dir(out: str, alpha: float) -> str:
  """`<out>/alpha_<α>`, α written shortest (0, 0.25, 1)."""
  return os.path.join(out, f"alpha_{alpha:g}")


def _label(alpha: float) -> str:
  return f"α={alpha:g}"


def write_reports(per_alpha: Mapping[float, Mapping[str, dict]], x: Axis,
                  y: Axis, out: str, sources: Mapping[str, Any]) -> str:
  """Writes `wise.json`, `wise.md` and `wise.png` (process 0 only).

  Args:
    per_alpha: {α: {eval: summary}}.
    x, y: the plot's axes.
    out: the directory.
    sources: what was interpolated (paths, step), recorded in the JSON.

  Returns:
    The markdown table, a row per α.
  """
  table = reports.combined({_label(a): s for a, s in per_alpha.items()})
  text = reports.format_combined(table)
  if jax.process_index() != 0:
    return text
  rows = [{"alpha": a, "model": os.path.relpath(
      os.path.join(alpha_dir(out, a), "model"), out),
           "x": x.value(table[_label(a)]), "y": y.value(table[_label(a)]),
           "headline": table[_label(a)]} for a in per_alpha]
  path = os.path.join(out, "wise")
  atomic.write_text(f"{path}.json", json.dumps(
      {**sources, "x": dataclasses.asdict(x), "y": dataclasses.asdict(y),
       "alphas": rows}, indent=2) + "\n")
  atomic.write_text(f"{path}.md", text + "\n")
  atomic.write_atomically(f"{path}.png", lambda tmp: plot_tradeoff(
      {r["alpha"]: (r["x"], r["y"]) for r in rows}, x, y, tmp))
  return text


def run(*, zero_shot: str, fine_tuned: str, alphas: Sequence[float],
        evals: Sequence[str], out: str, fine_tuned_step: int | None = None,
        data_dir: str | None = None, manual_dir: str | None = None,
        tokenizer: str | None = None, batch_size: int = 256,
        x_metric: str | None = None, y_metric: str | None = None
        ) -> dict[float, dict[str, dict]]:
  """The command: interpolate, save and evaluate each α, then the table.

  Args:
    zero_shot, fine_tuned: checkpoints `api.load_params` reads.
    alphas: α values in [0, 1], evaluated in increasing order.
    evals: a selection (`hardpos_jax.evals.registry.select`).
    out: the output directory (see the module docstring).
    fine_tuned_step: the fine-tuned workdir's step; default: its latest
      complete one.
    data_dir, manual_dir: see `evaluate.evaluate_model`.
    tokenizer: BPE file or HF dir; default: the zero-shot model's own.
    batch_size: images or texts per encoder call, all devices.
    x_metric, y_metric: the plot's axes (`choose_axes`).

  Returns:
    {α: {eval: summary}}; process 0 prints the table.
  """
  alphas = sorted(float(a) for a in alphas)
  if not alphas or len({f"{a:g}" for a in alphas}) != len(alphas):
    raise ValueError(f"Give distinct α values, got {alphas}")
  for alpha in alphas:
    _check_alpha(alpha)
    if os.path.exists(os.path.join(alpha_dir(out, alpha), "model")):
      raise FileExistsError(f"{alpha_dir(out, alpha)}/model exists; choose "
                            "another --out")
  evals_lib.registry.select(evals)  # Fails on a typo before loading a model.
  if os.path.isdir(os.path.join(fine_tuned, checkpoint.CHECKPOINTS)):
    # Resolved once: wise.json names the step read, even as training goes on.
    fine_tuned_step = checkpoint.workdir_step(fine_tuned, fine_tuned_step)
  zero = api.load_params(zero_shot)
  tuned = api.load_params(fine_tuned, step=fine_tuned_step)
  check_compatible(zero, tuned)
  config = zero[0]
  tok = api.load_tokenizer(zero_shot, config, tokenizer)
  encoders = evals_lib.create_encoders(config, sharding.create_mesh(),
                                       batch_size)
  per_alpha, axes = {}, None
  for alpha in alphas:
    where = alpha_dir(out, alpha)
    params = interpolate(zero[1], tuned[1], alpha)
    checkpoint.save_params(os.path.join(where, "model"), config, params)
    per_alpha[alpha] = evals_lib.evaluate(
        encoders, params, tok, evals, data_dir=data_dir,
        manual_dir=manual_dir, out_dir=where)
    # Chosen from the first α's numbers, so a wrong name fails early.
    axes = axes or choose_axes(per_alpha[alpha], x_metric, y_metric)
    row = {k: v for s in per_alpha[alpha].values()
           for k, v in reports.headline(s).items()}
    console.say(f"{_label(alpha)}: {axes[0].label} "
                f"{100 * axes[0].value(row):.1f}, {axes[1].label} "
                f"{100 * axes[1].value(row):.1f}; reports in {where}",
                lead_only=True)
  table = write_reports(per_alpha, *axes, out, {
      "zero_shot": zero_shot, "fine_tuned": fine_tuned,
      "fine_tuned_step": fine_tuned_step})
  console.say(f"# WiSE-FT ({os.path.join(out, 'wise')}.md)\n\n{table}\n",
              lead_only=True)
  return per_alpha


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  tf.config.set_visible_devices([], "GPU")
  f = flags.FLAGS
  try:
    alphas = [float(a) for a in f.alphas]
  except ValueError as e:
    raise app.UsageError(f"--alphas takes numbers in [0, 1]: {e}") from e
  console.log_to(f.out, "wise")
  try:
    run(zero_shot=f.zero_shot, fine_tuned=f.fine_tuned, alphas=alphas,
        evals=f.evals, out=f.out, fine_tuned_step=f.fine_tuned_step,
        data_dir=f.data_dir, manual_dir=f.manual_dir, tokenizer=f.tokenizer,
        batch_size=f.batch_size, x_metric=f.x_metric, y_metric=f.y_metric)
  except ValueError as e:
    raise app.UsageError(str(e)) from e


if __name__ == "__main__":
  # Defined here, not at import, so tests and notebooks can import this.
  flags.DEFINE_string("zero_shot", None,
                      "The zero-shot checkpoint (hardpos_jax.load reads it).")
  flags.DEFINE_string("fine_tuned", None,
                      "Its fine-tuned copy: a workdir, export, .pt or HF dir.")
  flags.DEFINE_integer("fine_tuned_step", None,
                       "The fine-tuned workdir's step; default: the latest.")
  flags.DEFINE_list("alphas", ["0", "0.25", "0.5", "0.75", "1"],
                    "Weights of the fine-tuned model, in [0, 1].")
  evaluate.define_eval_flags("the zero-shot model's")
  # Listed in --help as this command's own, not under hardpos_jax.evaluate.
  flags.adopt_module_key_flags(evaluate)
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_string("x_metric", None,
                      "The plot's x: a headline number's name; default: the "
                      "mean of the retrieval/zero-shot headline numbers.")
  flags.DEFINE_string("y_metric", None,
                      "The plot's y: a headline number's name; default: the "
                      "first of the first compositional eval.")
  flags.mark_flags_as_required(["zero_shot", "fine_tuned", "out"])
  app.run(main)
