"""The Rinha run's report: report.md, results.json and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.ticker import FuncFormatter

from bench.common import facts as machine_facts
from bench.common import report
from bench.common.plotting import DPI, curve, figure, percentile_axis
from bench.common.report import Target
from bench.rinha.runner import ModeResult, Options, score

__all__ = ["targets", "write"]

_TITLES = {"one": "one sprintd (memory store, journaled)", "two": "two sprintd on Redis, nginx"}
P99_TARGET_MS = 5.0


def targets(results: Sequence[ModeResult]) -> list[Target]:
    two = next((r for r in results if r.mode == "two"), None)
    if two is None:
        return [Target("two instances: p99 <= 5 ms, no inconsistency, no lag", "not run", None)]
    return [
        Target("two instances: p99 <= 5 ms", f"{two.p99:.2f} ms", two.p99 <= P99_TARGET_MS),
        Target(
            "two instances: zero inconsistencies", str(two.inconsistencies), not two.inconsistencies
        ),
        Target("two instances: zero lag", str(two.lag), two.lag == 0),
    ]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _time_plot(result: ModeResult, options: Options, path: Path) -> None:
    """Per-second p50/p99/max latency over the run, phase boundaries marked."""
    seconds: dict[int, list[float]] = {}
    for at, ms in result.latencies:
        seconds.setdefault(int(at), []).append(ms)
    xs = sorted(seconds)
    fig, ax = figure(height=4.5)
    for q, label, style in ((0.5, "p50", "-"), (0.99, "p99", "-"), (1.0, "max", ":")):
        ax.plot(xs, [_percentile(seconds[x], q) for x in xs], style, label=label, linewidth=1.4)
    rate = ax.twinx()
    rate.fill_between(xs, [len(seconds[x]) for x in xs], alpha=0.12, color="grey", label="req/s")
    rate.set_ylabel("accepted payments per second")
    for boundary in range(options.phase, options.duration, options.phase):
        ax.axvline(boundary, color="grey", alpha=0.3, linewidth=0.8)
    ax.axhline(P99_TARGET_MS, color="red", alpha=0.4, linewidth=0.8, label="5 ms")
    ax.set_yscale("log")
    ax.set_xlabel("seconds into the load (grey lines: processor phase changes)")
    ax.set_ylabel("POST /payments latency, ms (log)")
    ax.set_title(f"{_TITLES[result.mode]}: latency per second", fontsize=11)
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


# Percentiles drawn per run: spaced evenly on the 1/(1-p) axis, four a decade.
_PERCENTILES = tuple(100 * (1 - 10 ** (-k / 4)) for k in range(25))


def _percentile_plot(results: Sequence[ModeResult], path: Path) -> None:
    """Latency against percentile on HdrHistogram's 1/(1-p) axis."""
    fig, ax = figure(height=4.5)
    widest = 10.0
    for result in results:
        values = sorted(ms for _, ms in result.latencies)
        if not values:
            continue
        points = [(p, _percentile(values, p / 100)) for p in _PERCENTILES]
        xs, ys = curve(points, len(values), values[-1])
        widest = max(widest, xs[-1])
        ax.plot(xs, ys, marker="o", markersize=3, label=_TITLES[result.mode], linewidth=1.6)
    percentile_axis(ax, widest, "ms")
    # A run within one decade would label its minor ticks as 4x10^0.
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.axhline(P99_TARGET_MS, color="red", alpha=0.4, linewidth=0.8)
    ax.set_title("POST /payments latency by percentile, all 2xx payments", fontsize=11)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _row(result: ModeResult) -> dict[str, Any]:
    metrics = result.summary["metrics"]["payment_latency"]
    done = {name: result.processors[name]["totalRequests"] for name in ("default", "fallback")}
    total = sum(done.values()) or 1
    return {
        "mode": result.mode,
        "accepted": result.accepted,
        "failed": result.failed,
        "p50_ms": round(float(metrics["p(50)"]), 3),
        "p90_ms": round(float(metrics["p(90)"]), 3),
        "p99_ms": round(result.p99, 3),
        "max_ms": round(float(metrics["max"]), 3),
        "probe_p99_ms": round(result.probe_p99, 3),
        "p99_over_probe": round(result.p99 / result.probe_p99, 2) if result.probe_p99 else 0.0,
        "checks": len(result.checks),
        "periodic_inconsistencies": result.periodic_inconsistencies,
        "final_inconsistencies": result.final_inconsistencies,
        "lag_at_end": result.lag_at_end,
        "lag": result.lag,
        "default": done["default"],
        "fallback": done["fallback"],
        "default_share": round(done["default"] / total, 4),
        **{k: round(v, 4) for k, v in score(result).items()},
    }


def write(
    results: Sequence[ModeResult],
    options: Options,
    facts: dict[str, Any],
    out: Path,
    started: str,
    interrupted: bool,
) -> Path:
    rows = [_row(result) for result in results]
    for result in results:
        _time_plot(result, options, out / f"latency-time-{result.mode}.png")
    if results:
        _percentile_plot(results, out / "latency-percentiles.png")
    raw = {
        "started": started,
        "options": options.__dict__,
        "facts": facts,
        "rows": rows,
        "daemons": {r.mode: r.daemons for r in results},
        "checks": {r.mode: r.checks for r in results},
        "cpu": {r.mode: r.cpu for r in results},
    }
    lines = [
        f"# Rinha de Backend 2025 load: sprintd payments ({started})",
        "",
        "Two processors (`sprintd.plugins.payments.emulator`), the load of `bench/rinha/rinha.js`:",
        f"virtual users ramp from 1 to {options.vus} over {options.duration} s, each posting a",
        "payment and sleeping 1 s; the processors' delay and failure change every",
        f"{options.phase} s through the final run's schedule; the summary is checked against",
        f"the processors' every 10 s (window ending {options.settle_ms} ms before the check).",
        f"sprintd runs at tier `{options.tier}`, "
        + ("each instance on a core of its own (--pin)." if options.pin else "unpinned."),
        "",
    ]
    if interrupted:
        lines += ["**Interrupted**: only the modes below finished.", ""]
    lines += report.targets_table(targets(results))
    lines += [
        "",
        "## Results",
        "",
        "| | " + " | ".join(_TITLES[r["mode"]] for r in rows) + " |",
        "|---|" + "---|" * len(rows),
    ]
    fields = [
        ("payments accepted (2xx)", "accepted", "{}"),
        ("payments refused or timed out", "failed", "{}"),
        ("p50 ms", "p50_ms", "{:.2f}"),
        ("p90 ms", "p90_ms", "{:.2f}"),
        ("**p99 ms**", "p99_ms", "**{:.2f}**"),
        ("max ms", "max_ms", "{:.2f}"),
        ("noise floor: GET /readyz p99 ms", "probe_p99_ms", "{:.2f}"),
        ("payment p99 / noise-floor p99", "p99_over_probe", "{:.2f}"),
        ("summary checks", "checks", "{}"),
        ("inconsistencies in the checks", "periodic_inconsistencies", "{}"),
        ("inconsistencies over the whole run", "final_inconsistencies", "{}"),
        ("lag when k6 ended", "lag_at_end", "{}"),
        ("**lag** (1 s later)", "lag", "**{}**"),
        ("sent to the default", "default", "{}"),
        ("sent to the fallback", "fallback", "{}"),
        ("default share", "default_share", "{:.1%}"),
        ("profit (amount less fees)", "profit", "{:,.2f}"),
        ("p99 bonus", "bonus", "{:.1%}"),
        ("inconsistency fine", "fine", "{:.0%}"),
        ("**score**", "score", "**{:,.2f}**"),
    ]
    for title, key, form in fields:
        lines.append(f"| {title} | " + " | ".join(form.format(r[key]) for r in rows) + " |")
    lines += [
        "",
        "The noise floor is GET /readyz (sprintd's fast path) sent through the same front",
        "at 20/s during the same run: what the machine, k6, nginx and the event loop cost",
        "a request that does nothing; the ratio is what the payment path adds to it.",
        "",
        "Score as the challenge computes it: profit x (1 + 2% per ms of p99 under 11 ms)",
        "x (1 - 35% if any inconsistency). Lag is accepted minus what the processors hold.",
        "",
        "## Plots",
        "",
        "![latency by percentile](latency-percentiles.png)",
        "",
    ]
    lines += [f"![{r.mode}](latency-time-{r.mode}.png)\n" for r in results]
    lines += [
        "## CPU during the load",
        "",
        f"CPU seconds each part used over the {options.duration} s load (2 cores: at most "
        f"{2 * options.duration} s in all; the rest of the machine's load is other work).",
        "",
    ]
    for result in results:
        parts = ", ".join(f"{name} {cpu:.1f}" for name, cpu in sorted(result.cpu.items()))
        lines.append(f"- {result.mode}: {parts} (sum {sum(result.cpu.values()):.1f})")
    lines += ["", "## Inside the daemons at the end", ""]
    for result in results:
        for i, daemon in enumerate(result.daemons, 1):
            keep = {
                k: daemon.get(k) for k in ("store", "delivered", "retries", "queued", "inflight")
            }
            lines.append(f"- {result.mode}, instance {i}: `{json.dumps(keep)}`")
    pinning = "each sprintd instance on a core of its own" if options.pin else "none"
    lines += ["", "## Machine", "", *machine_facts.describe(facts, pinning)]
    lines += ["", "## Commands", "", *report.commands(r.command for r in results)]
    return report.write(out, raw, lines)
