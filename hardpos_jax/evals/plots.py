"""Bar charts of the kinds' reports: groups of bars, values in percent.

Kept out of `reports`, which imports every kind (through `kinds`), so that
the kinds can draw with it without an import cycle. Figures are
`matplotlib.figure.Figure`s, drawn without pyplot's global state, so that no
display or backend is needed.
"""

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib import axes as axes_lib
from matplotlib import figure
import numpy as np


def draw_bars(ax: axes_lib.Axes, labels: Sequence[str],
              series: Mapping[str, Sequence[float | None]], *,
              ylabel: str = "%", rotation: float = 0,
              full_scale: bool = False, chance: float | None = None,
              chance_label: str | None = None, **bar_kwargs: Any) -> None:
  """Draws a group of bars per label on `ax`, a bar per series.

  Args:
    ax: the axes.
    labels: the G group labels, under the x axis.
    series: {name: G fractions}, drawn in percent; None draws no bar (a
      number that does not exist). With several series, or a chance line
      with a label, the names make a legend.
    ylabel: the y axis' label.
    rotation: degrees the labels are turned, for long ones.
    full_scale: the y axis spans 0 to 100 %.
    chance: a fraction to draw as a dashed line, e.g. 1/2 for two captions.
    chance_label: the chance line's name in the legend.
    **bar_kwargs: passed on to `Axes.bar`, e.g. color.
  """
  x = np.arange(len(labels))
  width = 0.8 / len(series)  # Each group fills 80 % of its slot.
  for i, (name, values) in enumerate(series.items()):
    ax.bar(x + (i - (len(series) - 1) / 2) * width,
           [np.nan if v is None else 100 * v for v in values], width,
           label=name, **bar_kwargs)
  if chance is not None:
    ax.axhline(100 * chance, color="grey", linestyle="--", linewidth=1,
               label=chance_label)
  ax.set_xticks(x, labels, rotation=rotation,
                ha="right" if rotation else "center")
  ax.set_ylabel(ylabel)
  if full_scale:
    ax.set_ylim(0, 100)
  if len(series) > 1 or chance_label:
    ax.legend()


def bars(path: str, title: str, labels: Sequence[str],
         series: Mapping[str, Sequence[float | None]], *,
         figwidth: float = 8, **kwargs: Any) -> None:
  """Writes a PNG of one titled `draw_bars` chart to `path`.

  Args:
    path: the file.
    title: the chart's title, e.g. the eval's name.
    labels: see `draw_bars`.
    series: see `draw_bars`.
    figwidth: inches; the figure is 4 high.
    **kwargs: `draw_bars`' keyword arguments.
  """
  fig = figure.Figure(figsize=(figwidth, 4), layout="constrained")
  ax = fig.subplots()
  draw_bars(ax, labels, series, **kwargs)
  ax.set_title(title)
  fig.savefig(path, format="png", dpi=100)
