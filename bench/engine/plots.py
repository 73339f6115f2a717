"""The report's PNGs: per-command latency by percentile per load, and ops/s bars."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.ticker import FuncFormatter

from bench.common.plotting import DPI, curve_us, figure, grouped_bars, percentile_axis
from bench.engine.results import StreamFacts, VariantRun
from bench.engine.variants import VARIANTS

__all__ = ["latency_plot", "throughput_plot"]

# One colour per variant in every plot, whatever subset a run measured.
_COLORS = {variant.key: colormaps["tab10"](i) for i, variant in enumerate(VARIANTS)}


def latency_plot(stream: StreamFacts, runs: list[VariantRun], path: Path) -> None:
    """Latency against percentile on HdrHistogram's 1/(1-p) axis, max at the far right."""
    fig, ax = figure()
    widest = 10.0
    for run in runs:
        figures = run.figures(stream.key)
        if figures is None or figures.latency is None:
            continue
        xs, ys = curve_us(figures.latency)
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
    percentile_axis(ax, widest, "us per command")
    ax.set_title(
        f"Per-command latency: {stream.title}\n{stream.ops:,} commands, each timed alone, "
        "one process per engine",
        fontsize=11,
    )
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def throughput_plot(streams: list[StreamFacts], runs: list[VariantRun], path: Path) -> None:
    """Grouped bars: one group per load, one bar per engine (median of its runs)."""
    fig, ax = figure()
    series = [
        (
            run.variant.title,
            _COLORS[run.variant.key],
            [f.ops_s if (f := run.figures(stream.key)) else None for stream in streams],
        )
        for run in runs
        if not run.variant.floor
    ]
    grouped_bars(ax, [s.title for s in streams], series, _millions, 7)
    ax.axhline(1e6, color="crimson", linewidth=0.9, linestyle=":")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1e6:g}M"))
    ax.set_ylabel("commands per second (higher is better)")
    ops = streams[0].ops if streams else 0
    ax.set_title(
        f"Throughput in process, {ops:,} commands per load\n"
        "median of the runs; dotted line: the 1.0M ops/s target (exchange-like mix)",
        fontsize=11,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _millions(value: float) -> str:
    return f"{value / 1e6:.2f}M"
