"""The report's PNGs: latency by percentile per group of loads, and updates/s bars."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from bench.prices.results import Figures

__all__ = ["latency_plot", "throughput_plot"]

_DPI = 120


def latency_plot(shown: list[Figures], title: str, path: Path) -> None:
    """Latency against percentile on HdrHistogram's 1/(1-p) axis, each line ending at its max."""
    fig = Figure(figsize=(9.5, 6))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    widest = 10.0
    for i, figures in enumerate(shown):
        latency = figures.latency
        xs = [1 / (1 - p / 100) for p, _ in latency["percentiles_ns"]]
        ys = [ns / 1e3 for _, ns in latency["percentiles_ns"]]
        xs.append(float(max(latency["count"], 2)))
        ys.append(latency["max_ns"] / 1e3)
        widest = max(widest, xs[-1])
        ax.plot(xs, ys, marker="o", markersize=3, color=colormaps["tab10"](i), label=figures.title)
    ax.axhline(1000, color="crimson", linewidth=1, linestyle=":", label="1 ms: the p95 promise")
    ax.axhline(10, color="darkorange", linewidth=1, linestyle=":", label="10 us")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = [10.0**k for k in range(9) if 10.0**k <= widest * 1.0001]
    ax.set_xticks(ticks, [f"{100 * (1 - 1 / t):.10g}%" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(1, widest * 1.3)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("percentile (the last point of each line is its max)")
    ax.set_ylabel("latency per update, us (log scale)")
    ax.set_title(title, fontsize=11)
    ax.grid(True, which="major", alpha=0.4)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


def throughput_plot(shown: list[Figures], path: Path) -> None:
    """One horizontal bar per load: updates per second."""
    fig = Figure(figsize=(9.5, 0.5 * len(shown) + 1.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ys = range(len(shown))
    bars = ax.barh(
        list(ys),
        [f.updates_s for f in shown],
        color=[colormaps["tab10"](list(_GROUP_COLOR).index(f.group)) for f in shown],
    )
    ax.bar_label(bars, labels=[f"{f.updates_s / 1000:,.1f}k" for f in shown], fontsize=8, padding=3)
    ax.set_yticks(list(ys), [f.key for f in shown], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(300_000, color="crimson", linewidth=1, linestyle=":")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 1000:g}k"))
    ax.set_xlabel("updates per second (dotted: the feed's 300k target)")
    ax.set_title("Throughput per load (constant-rate loads show what they offered)", fontsize=11)
    ax.grid(True, axis="x", alpha=0.4)
    ax.set_axisbelow(True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)


_GROUP_COLOR = ("in process", "HTTP", "feed")
