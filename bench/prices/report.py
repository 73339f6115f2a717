"""The run's report: report.md with its PNGs, and results.json with the raw numbers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import facts, report
from bench.common.report import Target
from bench.prices.plots import latency_plot, throughput_plot
from bench.prices.results import Figures, at

__all__ = ["GROUPS", "VARIANT_TITLES", "Run", "write"]

VARIANT_TITLES = {
    "route": "route: JSON body to published snapshot",
    "engine": "engine: decoded update to published snapshot",
    "parse": "parse only: JSON body decoded (the floor)",
    "feed": "feed: per update in a frame of 100",
}
# Report sections, and the plot of each.
GROUPS = {
    "in process": "latency-inprocess.png",
    "HTTP": "latency-http.png",
    "feed": "latency-feed.png",
}
_PERCENTILES = (50.0, 95.0, 99.0, 99.9)


@dataclass
class Run:
    started: str
    settings: dict[str, Any]
    facts: dict[str, Any]
    pinning: str = ""
    figures: list[Figures] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    gc: dict[str, Any] = field(default_factory=dict)
    commands: list[list[str]] = field(default_factory=list)
    interrupted: bool = False


def write(run: Run, targets: list[Target], out: Path) -> Path:
    """Write report.md, results.json and the PNGs into ``out``; return report.md's path."""
    for group, name in GROUPS.items():
        shown = [f for f in run.figures if f.group == group]
        if shown:
            latency_plot(shown, f"Latency per update: {group}", out / name)
    if run.figures:
        throughput_plot(run.figures, out / "throughput.png")
    results = {
        "started": run.started,
        "interrupted": run.interrupted,
        "settings": run.settings,
        "machine": run.facts,
        "pinning": run.pinning,
        "gc": run.gc,
        "failures": run.failures,
        "targets": [dataclasses.asdict(t) for t in targets],
        "figures": [dataclasses.asdict(f) for f in run.figures],
        "commands": run.commands,
    }
    return report.write(out, results, _markdown(run, targets))


def _markdown(run: Run, targets: list[Target]) -> list[str]:
    s = run.settings
    lines = [
        f"# Price engine benchmark, {run.started}",
        "",
        "The price engine's promise is p95 < 1 ms from an update's bytes to its published "
        f"snapshot at {s['rate']:,} updates/s. The map holds {s['symbols']} symbols, so every "
        "publish re-encodes `/v1/prices` at that size.",
    ]
    lines += report.partial(run.interrupted)
    lines += ["", "## Verdict", "", *_verdict(run, s["rate"])]
    lines += ["", *report.targets_table(targets)]
    lines += report.not_measured(run.failures.items())
    lines += ["", "## Machine", "", *_machine(run)]
    lines += ["", "## In process", "", *_method_inprocess(run)]
    lines += _section(run, "in process")
    lines += ["", "## End to end over HTTP", "", *_method_http(run)]
    lines += _section(run, "HTTP")
    lines += ["", "## End to end over the binary feed", "", *_method_feed(run)]
    lines += _section(run, "feed")
    if run.figures:
        lines += ["", "## Throughput", "", "![updates/s](throughput.png)"]
    lines += ["", "## Commands", "", *report.commands(run.commands)]
    return lines


def _verdict(run: Run, rate: int) -> list[str]:
    lines = []
    for key, what in (
        ("http-rate", "over HTTP, one update a request (h2load, client side)"),
        ("http-rate-batch", "over HTTP, batched requests (k6, client side)"),
        ("feed-rate-1", "over the binary feed, one update a frame (client side)"),
        ("feed-rate-10", "over the binary feed, 10 updates a frame (client side)"),
    ):
        found = next((f for f in run.figures if f.key == key), None)
        if found is None:
            lines.append(f"- p95 < 1 ms at {rate:,} updates/s {what}: not measured.")
            continue
        p95 = at(found.latency, 95.0) or 0.0
        held = p95 < 1e6 and found.updates_s >= 0.95 * rate
        engine = found.engine["latency"]["p95"] if found.engine else None
        lines.append(
            f"- p95 < 1 ms at {rate:,} updates/s {what}: **{'held' if held else 'did not hold'}**"
            f" (p95 {p95 / 1e3:,.1f} us at {found.updates_s:,.0f} updates/s"
            + (f"; the engine's own p95, wire to snapshot: {engine:,.1f} us" if engine else "")
            + ")."
        )
    return lines


def _machine(run: Run) -> list[str]:
    pinning = f"{run.pinning}; the clients' nice value: {run.facts['client_nice']}"
    return [
        *facts.describe(run.facts, pinning),
        "",
        "Other work on the machine shares its two CPUs: the tails are noisy. The engine's own "
        "figures beside the clients' show how much of a latency was spent outside the engine, "
        "and *daemon CPU* (its CPU time over the load, as a share of one core) whether it was "
        "saturated (near 100%) or kept off its CPU while work waited.",
    ]


def _method_inprocess(run: Run) -> list[str]:
    s = run.settings
    return [
        f"{s['count']:,} updates per variant after a 5% warm-up, each call timed alone with "
        "`perf_counter_ns` (from before the body is read to after the snapshot is published), "
        "in a process of its own pinned to the daemon's CPU; under CPython's GC defaults and "
        "under the enterprise tier's GC policy (`bench.engine.gcregime`). "
        "The feed variant times a frame of 100 positional updates and divides by 100.",
    ]


def _method_http(run: Run) -> list[str]:
    s = run.settings
    return [
        f"`POST /v1/prices`, the daemon at tier `{s['tier']}`, one worker. `http-rate` is "
        f"h2load at {s['rate']:,} requests/s of one update each over {s['connections']} "
        "connections (`--rps` per connection, one request in flight on each: k6 cannot start "
        "that many from a shared core), "
        f"`http-rate-batch` k6's constant-arrival-rate at {s['rate'] // s['http_batch']:,} "
        f"requests/s of {s['http_batch']} updates each (the same {s['rate']:,} updates/s), for "
        f"{s['duration']}s each ({s['vus']} pre-allocated VUs; a request k6 could not start "
        f"counts as dropped); `http-max` is wrk's closed loop ({s['connections']} connections, "
        "one update a request) after a 2 s warm-up. Client latency is send to answer (for a "
        "batch, every update in it has its request's); the engine column is the daemon's own "
        "p50/p95/p99 over its last 10,000 updates, wire to snapshot.",
    ]


def _method_feed(run: Run) -> list[str]:
    s = run.settings
    return [
        f"`feed-rate-*` offer {s['rate']:,} updates/s for {s['duration']}s on one connection: "
        "frame k is due at a fixed time and each update's latency runs from its frame's due "
        "time to its ack, so lateness counts (no coordinated omission); *late* counts frames "
        f"sent over 1 ms after they were due. `feed-max` keeps {s['window']} frames of "
        f"{s['max_batch']} updates in flight (a closed loop) and measures the updates acked "
        "per second.",
    ]


def _section(run: Run, group: str) -> list[str]:
    shown = [f for f in run.figures if f.group == group]
    if not shown:
        return ["", "No load of this kind was measured."]
    heads = ["Load", "updates/s", *(f"p{p:g} us" for p in _PERCENTILES), "max us"]
    heads += ["engine p50/p95/p99 us", "daemon CPU", "late/dropped", "notes"]
    lines = ["", f"![{group}]({GROUPS[group]})", "", "| " + " | ".join(heads) + " |"]
    lines.append("|" + "---|" * len(heads))
    for f in shown:
        cells = [f.title, f"{f.updates_s:,.0f}"]
        cells += [_us(at(f.latency, p)) for p in _PERCENTILES]
        cells.append(_us(f.latency["max_ns"]))
        if f.engine is not None:
            e = f.engine["latency"]
            cells.append(f"{e['p50']:,.1f} / {e['p95']:,.1f} / {e['p99']:,.1f}")
        else:
            cells.append("")
        cells.append("" if f.daemon_cpu is None else f"{f.daemon_cpu:.0%}")
        cells.append(f"{f.dropped:,}" if f.offered is not None else "")
        cells.append("; ".join(f.notes))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _us(ns: float | None) -> str:
    return "-" if ns is None else f"{ns / 1e3:,.1f}"
