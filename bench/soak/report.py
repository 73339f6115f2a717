"""The soak's report: a Markdown page and one PNG of RSS and open descriptors over time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.common import report
from bench.common.plotting import DPI, canvas
from bench.common.report import Target
from bench.serving.load import Result
from bench.soak.sampler import Sample, Trend

__all__ = ["Run", "write"]


@dataclass(frozen=True)
class Run:
    started: str
    command: str
    daemon: str
    minutes: float
    warmup_s: float
    rates: dict[str, int]
    samples: list[Sample]
    rss: Trend | None
    fds: Trend | None
    rss_tolerance: float
    fds_tolerance: float
    results: dict[str, Result]
    targets: list[Target]
    interrupted: bool


def _plot(run: Run, path: Path) -> None:
    fig = canvas(9, 6)
    ts = [s.t_s / 60 for s in run.samples]
    for index, (name, unit, trend, values) in enumerate(
        (
            ("RSS", "MiB", run.rss, [s.rss_mib for s in run.samples]),
            (
                "descriptors besides client connections",
                "fds",
                run.fds,
                [float(s.other_fds) for s in run.samples],
            ),
        ),
        1,
    ):
        ax = fig.add_subplot(2, 1, index)
        ax.plot(ts, values, linewidth=1.2, label=f"{name}, sampled every second")
        if index == 2:
            ax.plot(
                ts,
                [float(s.fds) for s in run.samples],
                linewidth=0.8,
                color="grey",
                label="all descriptors (with the load tool's connections)",
            )
        if trend is not None:
            fit_x = [run.warmup_s / 60, ts[-1]]
            ax.plot(
                fit_x,
                [trend.intercept + trend.slope_per_min * x for x in fit_x],
                linestyle="--",
                linewidth=1.5,
                label=f"least-squares fit after warm-up: {trend.slope_per_min:+.3f} {unit}/min",
            )
        ax.axvline(run.warmup_s / 60, color="grey", linewidth=0.8, linestyle=":")
        ax.set_ylabel(f"{name} ({unit})")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
        low, high = min(values, default=0.0), max(values, default=1.0)
        if index == 2:
            high = max([high] + [float(s.fds) for s in run.samples])
        pad = max(1.0, (high - low) * 0.5)
        ax.set_ylim(max(0.0, low - pad), high + pad)
    fig.axes[-1].set_xlabel("minutes since the load started (dotted: end of warm-up)")
    fig.suptitle(f"sprintd soak: {run.daemon}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _trend_row(name: str, unit: str, trend: Trend | None, tolerance: float) -> str:
    if trend is None:
        return f"| {name} | not enough samples | | | |"
    verdict = "flat" if trend.flat(tolerance) else "**not flat**"
    return (
        f"| {name} | {trend.slope_per_min:+.3f} {unit}/min | ±{tolerance:g} {unit}/min | "
        f"{trend.low:.1f} to {trend.high:.1f} {unit} | {verdict} |"
    )


def write(run: Run, out: Path) -> Path:
    _plot(run, out / "soak.png")
    lines = [
        f"# sprintd soak, {run.started}",
        "",
        f"`{run.command}`" + (" (interrupted: partial)" if run.interrupted else ""),
        "",
        f"{run.daemon}, under constant-rate load (k6 `constant-arrival-rate`) for "
        f"{run.minutes:g} min: "
        + ", ".join(f"{name} at {rate} req/s" for name, rate in run.rates.items())
        + f". RSS, open descriptors and established client connections read from /proc "
        "every second (the connections are k6's: it opens one per VU, and adds VUs when "
        "they fall behind, so only the descriptors besides them must stay flat); the first "
        f"{run.warmup_s:g} s are warm-up (imports, caches, the first collections) and "
        "are left out of the fit.",
        "",
        "## Verdict",
        "",
        "| | slope (least squares) | tolerance | range after warm-up | |",
        "|---|---|---|---|---|",
        _trend_row("RSS", "MiB", run.rss, run.rss_tolerance),
        _trend_row("descriptors besides connections", "fds", run.fds, run.fds_tolerance),
        "",
        "![RSS and open descriptors over time](soak.png)",
        "",
        "## Load",
        "",
        "| load | requests | req/s | errors | dropped | p50 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, result in run.results.items():
        lines.append(
            f"| {name} | {result.requests} | {result.rps:.0f} | {result.errors} | "
            f"{result.dropped} | {result.at(50.0):.3f} | {result.at(99.0):.3f} | "
            f"{result.at(99.9):.3f} | {result.max_ms:.3f} |"
        )
    lines += ["", *report.targets_table(run.targets)]
    lines += [
        "",
        "The machine is shared: latency figures are noisy; the slopes are what this "
        "bench is for. `samples.csv` has every sample.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), "utf-8")
    (out / "samples.csv").write_text(
        "t_s,rss_mib,fds,connections\n"
        + "".join(f"{s.t_s:.3f},{s.rss_mib:.3f},{s.fds},{s.connections}\n" for s in run.samples),
        "utf-8",
    )
    return path
