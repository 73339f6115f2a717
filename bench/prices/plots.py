"""The report's PNGs: latency by percentile per group of loads, and updates/s bars."""

from __future__ import annotations

from pathlib import Path

from matplotlib import colormaps
from matplotlib.ticker import FuncFormatter

from bench.common.plotting import DPI, curve_us, figure, percentile_axis
from bench.prices.results import Figures

__all__ = ["latency_plot", "throughput_plot"]


def latency_plot(shown: list[Figures], title: str, path: Path) -> None:
    """Latency against percentile on HdrHistogram's 1/(1-p) axis, each line ending at its max."""
    fig, ax = figure(9.5, 6)
    widest = 10.0
    for i, figures in enumerate(shown):
        xs, ys = curve_us(figures.latency)
        widest = max(widest, xs[-1])
        ax.plot(xs, ys, marker="o", markersize=3, color=colormaps["tab10"](i), label=figures.title)
    ax.axhline(1000, color="crimson", linewidth=1, linestyle=":", label="1 ms: the p95 promise")
    ax.axhline(10, color="darkorange", linewidth=1, linestyle=":", label="10 us")
    percentile_axis(ax, widest, "us per update")
    ax.set_title(title, fontsize=11)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def throughput_plot(shown: list[Figures], path: Path) -> None:
    """One horizontal bar per load: updates per second."""
    fig, ax = figure(9.5, 0.5 * len(shown) + 1.5)
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
    fig.savefig(path, dpi=DPI)


_GROUP_COLOR = ("in process", "HTTP", "feed")
