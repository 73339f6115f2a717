"""The report's PNGs: latency-by-percentile curves per load and a req/s bar chart."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench.serving.load import Load, Result
from bench.serving.results import ServerRun
from bench.serving.servers import SERVERS

__all__ = ["latency_plot", "throughput_plot"]

# One colour per server in every plot, whatever subset a run measured.
_COLORS = {server.key: colormaps["tab10"](i) for i, server in enumerate(SERVERS)}
_SPRINTD = next(server for server in SERVERS if server.key == "sprintd")
_DPI = 120


def latency_plot(load: Load, runs: list[ServerRun], subtitle: str, path: Path) -> None:
    """Latency against percentile on HdrHistogram's 1/(1-p) axis, max at the far right."""
    fig, ax = _figure()
    widest = 10.0
    for run in runs:
        result = run.results.get(load.key)
        if result is None:
            continue
        xs, ys = _curve(result)
        widest = max(widest, xs[-1])
        sprintd = run.server.key == "sprintd"
        ax.plot(
            xs,
            ys,
            marker="o",
            markersize=3,
            linewidth=2.4 if sprintd else 1.4,
            color=_COLORS[run.server.key],
            label=run.server.title_for(load.method),
            zorder=3 if sprintd else 2,
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [10.0**k for k in range(8) if 10.0**k <= widest * 1.0001]
    ax.set_xticks(ticks, [_percent_label(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(1, widest * 1.3)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("percentile (the last point of each line is its max)")
    ax.set_ylabel("latency, ms (log scale)")
    ax.set_title(f"{load.title}\n{subtitle}", fontsize=11)
    ax.grid(True, which="major", alpha=0.4)
    ax.grid(True, which="minor", axis="y", alpha=0.15)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


def throughput_plot(
    loads: tuple[Load, ...], runs: list[ServerRun], subtitle: str, path: Path
) -> None:
    """Grouped bars: one group per closed-loop load, one bar per server."""
    fig, ax = _figure()
    width = 0.8 / max(len(runs), 1)
    for i, run in enumerate(runs):
        xs, heights = [], []
        for j, load in enumerate(loads):
            result = run.results.get(load.key)
            if result is not None:
                xs.append(j + (i - (len(runs) - 1) / 2) * width)
                heights.append(result.rps)
        bars = ax.bar(
            xs, heights, width * 0.92, color=_COLORS[run.server.key], label=run.server.title
        )
        ax.bar_label(bars, labels=[f"{h / 1000:.1f}k" for h in heights], fontsize=8, padding=2)
    ax.set_xticks(range(len(loads)), [_group_label(load) for load in loads])
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
    ax.set_ylabel("requests per second (higher is better)")
    ax.set_title(f"Throughput, closed loop\n{subtitle}", fontsize=11)
    ax.grid(True, axis="y", alpha=0.4)
    ax.set_axisbelow(True)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


def _figure() -> tuple[Figure, Axes]:
    # The Agg canvas directly, not pyplot: no global backend state and no
    # figure kept alive between plots.
    fig = Figure(figsize=(9, 5.5))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _curve(result: Result) -> tuple[list[float], list[float]]:
    # A percentile finer than one sample in the run is just the max again, so
    # the line stops where the samples do and ends at the max itself.
    xs, ys = [], []
    for p, ms in result.percentiles_ms:
        x = 1 / (1 - p / 100)
        if x < result.requests:
            xs.append(x)
            ys.append(ms)
    xs.append(float(max(result.requests, 2)))
    ys.append(result.max_ms)
    return xs, ys


def _percent_label(x: float) -> str:
    return f"{100 * (1 - 1 / x):.10g}%"


def _group_label(load: Load) -> str:
    return f"{load.method} {load.path}\n({_SPRINTD.title_for(load.method)})"
