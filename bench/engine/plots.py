"""The report's PNGs: per-command latency by percentile per load, and ops/s bars."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench.engine.results import LoadFigures, StreamFacts, VariantRun
from bench.engine.variants import VARIANTS

__all__ = ["latency_plot", "throughput_plot"]

# One colour per variant in every plot, whatever subset a run measured.
_COLORS = {variant.key: colormaps["tab10"](i) for i, variant in enumerate(VARIANTS)}
_DPI = 120


def latency_plot(stream: StreamFacts, runs: list[VariantRun], path: Path) -> None:
    """Latency against percentile on HdrHistogram's 1/(1-p) axis, max at the far right."""
    fig, ax = _figure()
    widest = 10.0
    for run in runs:
        figures = run.figures(stream.key)
        if figures is None or figures.latency is None:
            continue
        xs, ys = _curve(figures)
        widest = max(widest, xs[-1])
        sprintd = run.variant.engine == "sprintd"
        ax.plot(
            xs,
            ys,
            marker="o",
            markersize=3,
            linestyle="--" if run.variant.floor else "-",
            linewidth=2.4 if sprintd else 1.4,
            color="0.55" if run.variant.floor else _COLORS[run.variant.key],
            label=run.variant.title,
            zorder=3 if sprintd else 2,
        )
    # The targets as legend entries: text on the axes would sit under the legend.
    ax.axhline(
        1000, color="crimson", linewidth=1, linestyle=":", zorder=1, label="1 ms: no command above"
    )
    ax.axhline(
        10, color="darkorange", linewidth=1, linestyle=":", zorder=1, label="10 us: the p99 target"
    )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [10.0**k for k in range(9) if 10.0**k <= widest * 1.0001]
    ax.set_xticks(ticks, [_percent_label(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(1, widest * 1.3)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("percentile (the last point of each line is its max)")
    ax.set_ylabel("time per command, us (log scale)")
    ax.set_title(
        f"Per-command latency: {stream.title}\n{stream.ops:,} commands, each timed alone, "
        "one process per engine",
        fontsize=11,
    )
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", axis="y", alpha=0.15)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


def throughput_plot(streams: list[StreamFacts], runs: list[VariantRun], path: Path) -> None:
    """Grouped bars: one group per load, one bar per engine (median of its runs)."""
    fig, ax = _figure()
    shown = [run for run in runs if not run.variant.floor]
    width = 0.8 / max(len(shown), 1)
    for i, run in enumerate(shown):
        xs, heights = [], []
        for j, stream in enumerate(streams):
            figures = run.figures(stream.key)
            if figures is not None:
                xs.append(j + (i - (len(shown) - 1) / 2) * width)
                heights.append(figures.ops_s)
        bars = ax.bar(
            xs, heights, width * 0.92, color=_COLORS[run.variant.key], label=run.variant.title
        )
        ax.bar_label(bars, labels=[_millions(h) for h in heights], fontsize=7, padding=2)
    ax.axhline(1e6, color="crimson", linewidth=0.9, linestyle=":")
    ax.set_xticks(range(len(streams)), [s.title for s in streams])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}M"))
    ax.set_ylabel("commands per second (higher is better)")
    ops = streams[0].ops if streams else 0
    ax.set_title(
        f"Throughput in process, {ops:,} commands per load\n"
        "median of the runs; dotted line: the 1.0M ops/s target (exchange-like mix)",
        fontsize=11,
    )
    ax.grid(True, axis="y", alpha=0.4)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


def _figure() -> tuple[Figure, Axes]:
    # The Agg canvas directly, not pyplot: no global backend state and no
    # figure kept alive between plots.
    fig = Figure(figsize=(9.5, 6))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _curve(figures: LoadFigures) -> tuple[list[float], list[float]]:
    assert figures.latency is not None
    xs, ys = [], []
    for p, ns in figures.latency["percentiles_ns"]:
        xs.append(1 / (1 - p / 100))
        ys.append(ns / 1000)
    xs.append(float(max(figures.latency["count"], 2)))
    ys.append(figures.latency["max_ns"] / 1000)
    return xs, ys


def _percent_label(x: float) -> str:
    return f"{100 * (1 - 1 / x):.10g}%"


def _millions(value: float) -> str:
    return f"{value / 1e6:.2f}M"
