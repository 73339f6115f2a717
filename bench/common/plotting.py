"""Plot pieces every bench's report shares: a figure, and HdrHistogram's percentile axis."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

__all__ = [
    "DPI",
    "Series",
    "canvas",
    "curve",
    "curve_us",
    "figure",
    "grouped_bars",
    "percent_label",
    "percentile_axis",
]

DPI = 120
# A bar chart's series: its legend label, its colour, and a value per group
# (None where it has none).
Series = tuple[str, Any, Sequence[float | None]]


def canvas(width: float = 9, height: float = 5.5) -> Figure:
    """An empty figure to add axes to."""
    # The Agg canvas directly, not pyplot: no global backend state and no
    # figure kept alive between plots.
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def figure(width: float = 9, height: float = 5.5) -> tuple[Figure, Axes]:
    """A figure with one set of axes."""
    fig = canvas(width, height)
    return fig, fig.subplots()


def percent_label(x: float) -> str:
    """The percentile at ``x`` on the 1/(1-p) axis: 10 is 90%, 1000 is 99.9%."""
    return f"{100 * (1 - 1 / x):.10g}%"


def curve(
    points: Iterable[tuple[float, float]], count: int, maximum: float
) -> tuple[list[float], list[float]]:
    """``(percentile, value)`` points on the 1/(1-p) axis, ending at the max.

    A percentile finer than one sample in ``count`` is just the max again, so
    the line stops where the samples do and ends at the max itself.
    """
    xs, ys = [], []
    for p, value in points:
        x = 1 / (1 - p / 100)
        if x < count:
            xs.append(x)
            ys.append(value)
    xs.append(float(max(count, 2)))
    ys.append(maximum)
    return xs, ys


def curve_us(summary: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """``curve`` of a latency summary in nanoseconds (``bench.engine.stats.summary``'s
    shape: count, max_ns, percentiles_ns), in microseconds."""
    points = ((p, ns / 1e3) for p, ns in summary["percentiles_ns"])
    return curve(points, summary["count"], summary["max_ns"] / 1e3)


def percentile_axis(ax: Axes, widest: float, unit: str) -> None:
    """Log-log axes, x in percentiles up to ``widest`` (the max's position)."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [10.0**k for k in range(10) if 10.0**k <= widest * 1.0001]
    ax.set_xticks(ticks, [percent_label(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(1, widest * 1.3)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("percentile (the last point of each line is its max)")
    ax.set_ylabel(f"latency, {unit} (log scale)")
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", axis="y", alpha=0.15)


def grouped_bars(
    ax: Axes,
    groups: Sequence[str],
    series: Sequence[Series],
    label: Callable[[float], str],
    fontsize: int,
) -> None:
    """One group of bars per entry of ``groups``, one bar per series in each,
    labelled with ``label(value)``."""
    width = 0.8 / max(len(series), 1)
    for i, (name, color, values) in enumerate(series):
        offset = (i - (len(series) - 1) / 2) * width
        xs = [j + offset for j, value in enumerate(values) if value is not None]
        heights = [value for value in values if value is not None]
        bars = ax.bar(xs, heights, width * 0.92, color=color, label=name)
        ax.bar_label(bars, labels=[label(h) for h in heights], fontsize=fontsize, padding=2)
    ax.set_xticks(range(len(groups)), groups)
    ax.grid(True, axis="y", alpha=0.4)
    ax.set_axisbelow(True)
