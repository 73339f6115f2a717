"""The orders bench's report: targets, tables, two plots and results.json."""

from __future__ import annotations

from array import array
from dataclasses import asdict
from pathlib import Path
from typing import Any

from matplotlib import colormaps

from bench.common import facts, report
from bench.common.plotting import DPI, curve, figure, percentile_axis
from bench.common.report import Target
from bench.orders.entry_load import EntryResult
from bench.orders.results import PortRun, Run

__all__ = ["percentile_ms", "targets", "write"]

_POINTS = (50.0, 90.0, 99.0, 99.9, 99.99)
JOURNAL_RATE, REPLAY_S = 200_000, 3.0
SINGLE_RATE = 50_000
HTTP_RATE, HTTP_P99_MS = 25_000, 5.0
CONSTANT_RATE, CONSTANT_P99_MS = 10_000, 2.0
MSGPACK_MAP_RATE = 150_000
COMPACT_BATCHED_RATE, COMPACT_SINGLE_RATE, COMPACT_P99_MS = 250_000, 60_000, 1.0


def targets(run: Run) -> list[Target]:
    out: list[Target] = []
    group = next((a for a in run.appends if a.fsync == "always" and a.appenders == 1000), None)
    out.append(
        Target(
            "journal: >= 200k records/s with group commit (fsync always, 1000 appenders)",
            f"{group.per_second:,.0f} records/s" if group else "not measured",
            None if group is None else group.per_second >= JOURNAL_RATE,
        )
    )
    replay = run.replay
    out.append(
        Target(
            "journal: replay of 1M commands in <= 3 s",
            f"{replay.records:,} records in {replay.seconds:.2f} s" if replay else "not measured",
            None if replay is None or replay.records < 1_000_000 else replay.seconds <= REPLAY_S,
        )
    )
    for port in run.ports:
        batched, single = port.entry.get("entry-batched"), port.entry.get("entry-single")
        http, rate = port.http.get("http-closed"), port.http.get("http-rate")
        out += [
            _rate(f"{port.tier}: binary port, msgpack maps, 100 a frame, journal on: "
                  ">= 150k orders/s", batched, MSGPACK_MAP_RATE),
            _rate(f"{port.tier}: binary port, one order a frame: >= 50k orders/s", single,
                  SINGLE_RATE),
            _rate(f"{port.tier}: compact, 100 a frame: >= 250k orders/s",
                  port.entry.get("compact-batched"), COMPACT_BATCHED_RATE),
            _rate(f"{port.tier}: compact, 1 a frame: >= 60k orders/s",
                  port.entry.get("compact-single"), COMPACT_SINGLE_RATE),
            *(_p99(f"{port.tier}: compact, {key}: p99 per frame <= 1 ms at half the rate",
                   port.entry.get(key)) for key in ("compact-rate-batched", "compact-rate-single")),
            Target(
                f"{port.tier}: HTTP JSON >= 25k orders/s per worker with p99 <= 5 ms (wrk)",
                f"{http.rps:,.0f} orders/s, p99 {http.at(99.0):.2f} ms" if http else "not measured",
                None if http is None else http.rps >= HTTP_RATE and http.at(99.0) <= HTTP_P99_MS,
            ),
            Target(
                f"{port.tier}: HTTP JSON at a constant 10k orders/s: p99 <= 2 ms (h2load)",
                f"{rate.rps:,.0f} orders/s, p99 {rate.at(99.0):.2f} ms, {rate.dropped:,} dropped"
                if rate else "not measured",
                None if rate is None
                else rate.requests >= CONSTANT_RATE * 0.99 * rate.duration_s
                and rate.at(99.0) <= CONSTANT_P99_MS,
            ),
        ]  # fmt: skip
    return out


def _rate(goal: str, result: EntryResult | None, rate: int) -> Target:
    if result is None:
        return Target(goal, "not measured", None)
    return Target(goal, f"{result.per_second:,.0f} orders/s", result.per_second >= rate)


def percentile_ms(result: EntryResult, point: float) -> float:
    """A load's per-frame latency at ``point`` (one of ``_POINTS``), in ms."""
    return _percentiles_us(result.latency_us).get(point, 0.0) / 1000


def _p99(goal: str, result: EntryResult | None) -> Target:
    if result is None:
        return Target(goal, "not measured", None)
    p99 = percentile_ms(result, 99.0)
    return Target(
        goal,
        f"{p99:.2f} ms at {result.per_second:,.0f} orders/s",
        p99 <= COMPACT_P99_MS and result.refused == 0,
    )


def write(run: Run, verdicts: list[Target], out: Path) -> Path:
    _throughput_plot(run, out / "throughput.png")
    _latency_plot(run, out / "latency.png")
    return report.write(out, _json(run, verdicts), _markdown(run, verdicts))


def _percentiles_us(samples: array[int]) -> dict[float, float]:
    ordered = sorted(samples)
    n = len(ordered)
    if not n:
        return {}
    return {p: float(ordered[min(n - 1, int(p / 100 * n))]) for p in _POINTS} | {
        100.0: float(ordered[-1])
    }


def _markdown(run: Run, verdicts: list[Target]) -> list[str]:
    lines = [
        f"# Orders bench, {run.started}",
        "",
        "The orders plugin through its two ports with the journal on, at each tier's fsync "
        "policy, and the core journal by itself. Command: `python -m bench.orders`.",
        "",
        *report.targets_table(verdicts),
    ]
    lines += ["", "![orders/s](throughput.png)", "", "![latency](latency.png)", ""]
    lines += _journal_section(run)
    for port in run.ports:
        lines += _port_section(port, run)
    lines += [
        "## How it was measured",
        "",
        f"- Every load runs {run.seconds} s against a fresh daemon per tier (one worker, "
        "`sprintd run --tier T`), its journal in the results directory.",
        "- Binary port: this process's client (`bench/orders/entry_load.py`) keeps a window of "
        "frames in flight on one connection, each frame pre-encoded, buy and sell limits at one "
        "price in turn (half of them trade). Latency is per frame, send to reply, in a closed "
        "loop (coordinated omission included): a throughput test. `compact-*` is the same "
        "load in the compact protocol (`plugins/orders/README.md`), its session named so the "
        "fills of its resting orders are pushed back as execution reports (counted apart); "
        "`compact-rate-*` sends at a constant rate, half the throughput target, each frame "
        "timed from when it was due.",
        "- HTTP: the same order as JSON, a GTC buy that rests (the book grows on one level); "
        f"wrk with {run.http.connections} connections (closed loop), then h2load at a "
        f"constant {run.http.rate:,} orders/s (`bench/orders/rate_load.py`: HTTP/1.1, one "
        "request in flight per connection, a connection per 250 orders/s; orders it could "
        "not send in time are counted as dropped).",
        "- Journal: `bench/orders/journal_load.py`, 64-byte records from many Trio tasks, each "
        "awaiting its record's durability; the writer batches what arrived meanwhile.",
        "- Every acknowledgement left the daemon only after its command was journaled per the "
        "tier's policy: free leaves fsync to the OS, pro/business fsync every 10 ms, turbo "
        "every 1 ms, enterprise per batch.",
        "",
        "## Machine",
        "",
        *facts.describe(run.machine, run.pinning),
    ]
    return lines


def _journal_section(run: Run) -> list[str]:
    lines = [
        "## Journal",
        "",
        "| fsync | appenders | records/s | records a batch | fsyncs |",
        "|---|---|---|---|---|",
    ]
    for a in run.appends:
        per_batch = a.records / max(a.batches, 1)
        lines.append(
            f"| {a.fsync} | {a.appenders:,} | {a.per_second:,.0f} | {per_batch:,.0f} | "
            f"{a.fsyncs:,} |"
        )
    if run.replay:
        r = run.replay
        lines += [
            "",
            f"Replay: {r.records:,} records ({r.bytes_on_disk / 2**20:.0f} MiB) in "
            f"{r.seconds:.2f} s: `open()` (scan, every crc) {r.open_s:.2f} s, reading every "
            f"record back {r.read_s:.2f} s.",
        ]
    return [*lines, ""]


def _port_section(port: PortRun, run: Run) -> list[str]:
    lines = [
        f"## {port.tier}",
        "",
        f"`{' '.join(port.argv)}`",
        "",
        "| Load | orders/s | p50 | p90 | p99 | p99.9 | max | errors | daemon CPU/order |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, result in port.entry.items():
        pct = _percentiles_us(result.latency_us)
        cells = " | ".join(f"{pct.get(p, 0) / 1000:.2f} ms" for p in (50.0, 90.0, 99.0, 99.9))
        lines.append(
            f"| {key} (per frame) | {result.per_second:,.0f} | {cells} | "
            f"{pct.get(100.0, 0) / 1000:.2f} ms | {result.refused} refused (sampled), "
            f"{result.reports:,} report frames | "
            f"{f'{result.cpu_us_per_order:.1f} us' if result.server_cpu_s else ''} |"
        )
    for key, http in port.http.items():
        cells = " | ".join(f"{http.at(p):.2f} ms" for p in (50.0, 90.0, 99.0, 99.9))
        lines.append(
            f"| {key} | {http.rps:,.0f} | {cells} | {http.max_ms:.2f} ms | "
            f"{http.errors} (+{http.dropped} dropped) | |"
        )
    for key, why in port.failures.items():
        lines.append(f"| {key} | not measured: {why} | | | | | | | |")
    return [*lines, ""]


def _throughput_plot(run: Run, path: Path) -> None:
    fig, ax = figure()
    labels, values, colors = [], [], []
    palette = colormaps["tab10"]
    for i, port in enumerate(run.ports):
        for key, entry in port.entry.items():
            labels.append(f"{port.tier}\n{key}")
            values.append(entry.per_second)
            colors.append(palette(i))
        for key, http in port.http.items():
            labels.append(f"{port.tier}\n{key}")
            values.append(http.rps)
            colors.append(palette(i))
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)), labels, fontsize=7)
    for rate, name in ((MSGPACK_MAP_RATE, "batched"), (SINGLE_RATE, "single"), (HTTP_RATE, "HTTP")):
        ax.axhline(rate, linestyle="--", linewidth=0.8, color="grey")
        ax.text(len(values) - 0.5, rate, f"{name} target", fontsize=7, va="bottom", ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("orders/s (log scale)")
    ax.set_title("Orders acknowledged per second, journal on", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _latency_plot(run: Run, path: Path) -> None:
    fig, ax = figure()
    widest = 10.0
    for port in run.ports:
        for key, http in port.http.items():
            xs, ys = curve(http.percentiles_ms, http.requests, http.max_ms)
            widest = max(widest, xs[-1])
            ax.plot(xs, ys, marker="o", markersize=3, label=f"{port.tier} {key}")
        for key, entry in port.entry.items():
            pct = _percentiles_us(entry.latency_us)
            xs, ys = curve(
                ((p, pct[p] / 1000) for p in _POINTS), len(entry.latency_us), pct[100.0] / 1000
            )
            widest = max(widest, xs[-1])
            ax.plot(xs, ys, marker="s", markersize=3, linestyle=":", label=f"{port.tier} {key}")
    percentile_axis(ax, widest, "ms")
    ax.set_title("Latency by percentile (binary port: per frame, closed loop)", fontsize=11)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _json(run: Run, verdicts: list[Target]) -> dict[str, Any]:
    return {
        "started": run.started,
        "seconds": run.seconds,
        "machine": run.machine,
        "journal": {
            "appends": [a.to_json() for a in run.appends],
            "replay": run.replay.to_json() if run.replay else None,
        },
        "ports": [
            {
                "tier": p.tier,
                "argv": p.argv,
                "entry": {k: _entry_json(e) for k, e in p.entry.items()},
                "http": {k: asdict(h) for k, h in p.http.items()},
                "failures": p.failures,
            }
            for p in run.ports
        ],
        "targets": [asdict(t) for t in verdicts],
    }


def _entry_json(result: EntryResult) -> dict[str, Any]:
    return {
        "orders": result.orders,
        "frames": result.frames,
        "seconds": result.seconds,
        "per_second": result.per_second,
        "refused": result.refused,
        "reports": result.reports,
        "server_cpu_s": result.server_cpu_s,
        "latency_us": _percentiles_us(result.latency_us),
    }
