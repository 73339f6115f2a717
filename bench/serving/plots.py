"""The report's PNGs: latency-by-percentile curves per load and a req/s bar chart."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.ticker import FuncFormatter

from bench.common.plotting import DPI, curve, figure, grouped_bars, percentile_axis
from bench.serving.load import Load
from bench.serving.results import ServerRun
from bench.serving.servers import SERVERS

__all__ = ["latency_plot", "throughput_plot"]

# One colour per server in every plot, whatever subset a run measured.
_COLORS = {server.key: colormaps["tab10"](i) for i, server in enumerate(SERVERS)}
_SPRINTD = next(server for server in SERVERS if server.key == "sprintd")


def latency_plot(load: Load, runs: list[ServerRun], subtitle: str, path: Path) -> None:
    """Latency against percentile on HdrHistogram's 1/(1-p) axis, max at the far right."""
    fig, ax = figure()
    widest = 10.0
    for run in runs:
        result = run.results.get(load.key)
        if result is None:
            continue
        xs, ys = curve(result.percentiles_ms, result.requests, result.max_ms)
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
    percentile_axis(ax, widest, "ms")
    ax.set_title(f"{load.title}\n{subtitle}", fontsize=11)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def throughput_plot(
    loads: tuple[Load, ...], runs: list[ServerRun], subtitle: str, path: Path
) -> None:
    """Grouped bars: one group per closed-loop load, one bar per server."""
    fig, ax = figure()
    series = [
        (
            run.server.title,
            _COLORS[run.server.key],
            [r.rps if (r := run.results.get(load.key)) else None for load in loads],
        )
        for run in runs
    ]
    groups = [_group_label(load) for load in loads]
    grouped_bars(ax, groups, series, lambda h: f"{h / 1000:.1f}k", 8)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
    ax.set_ylabel("requests per second (higher is better)")
    ax.set_title(f"Throughput, closed loop\n{subtitle}", fontsize=11)
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _group_label(load: Load) -> str:
    return f"{load.method} {load.path}\n({_SPRINTD.title_for(load.method)})"
