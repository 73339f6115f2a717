"""GC pauses by tier: the same load on sprintd at each tier, one after another.

Each tier's daemon holds an order-book-shaped heap (``gcload_plugin``) and is
driven by wrk for the whole duration; every collection's pause is timed
inside the daemon through ``gc.callbacks`` (``sprintd.gcpolicy``), and read
back from /health and /metrics once the load ends. The report states whether
the largest pause at the maximum tiers stayed within 1 ms.

    python -m bench.gcpause [--quick] [--tiers free,pro,enterprise] [--duration S]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from bench.common import facts, report
from bench.common.cli import add_run_options, say, start
from bench.common.net import call_json, free_port, request, running
from bench.common.paths import BIN, REPO, short
from bench.common.pinning import Pinning, pinned, plan
from bench.common.plotting import DPI, canvas
from bench.common.report import Target, finish
from bench.serving.load import Load, Result, Settings, run_load

HERE = Path(__file__).resolve().parent
TIERS = ("free", "pro", "enterprise")
DURATION_S = 60
QUICK_DURATION_S = 15
WARMUP_S = 3
TARGET_MS = 1.0
LOAD = Load("gc-order", "POST /gc/order, closed loop (wrk)", "wrk", "POST", "/gc/order", b"{}")


@dataclass(frozen=True)
class TierRun:
    tier: str
    result: Result
    gc: dict[str, Any]
    # generation -> [(le seconds, cumulative count)]
    buckets: dict[str, list[tuple[float, float]]]


def _pause_buckets(metrics: str) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {}
    for family in text_string_to_metric_families(metrics):
        if family.name != "sprintd_gc_pause_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels["le"] != "+Inf":
                gen = sample.labels["generation"]
                out.setdefault(gen, []).append((float(sample.labels["le"]), sample.value))
    return out


def _run_tier(tier: str, duration: int, out: Path, pinning: Pinning) -> TierRun:
    port = free_port()
    argv = pinned(
        [
            f"{BIN}/sprintd",
            "run",
            "--config",
            str(HERE / "gcload.toml"),
            "--tier",
            tier,
            "--port",
            str(port),
            "--data-dir",
            str(out / f"data-{tier}"),
        ],
        pinning.server,
    )
    settings = Settings(duration, 50, 0, 0)
    url = f"http://127.0.0.1:{port}{LOAD.path}"
    with running(argv, port, (HERE, REPO), out / f"sprintd-{tier}.log", ready_path="/livez"):
        run_load(LOAD, url, WARMUP_S, settings, out / f"{tier}.warmup.txt", cpus=pinning.tools)
        result = run_load(LOAD, url, duration, settings, out / f"{tier}.txt", cpus=pinning.tools)
        health = call_json(port, "GET", "/health")
        metrics = request(port, "GET", "/metrics", timeout=10.0)[1].decode()
    return TierRun(tier, result, health["runtime"]["gc"], _pause_buckets(metrics))


def _plot(runs: list[TierRun], path: Path) -> None:
    fig = canvas(12, 4.5)
    left, right = fig.subplots(1, 2)
    names = [run.tier for run in runs]
    worst = [run.gc["max_pause_ms"] for run in runs]
    bars = left.bar(names, worst, color=["#999999", "#4c78a8", "#e45756"][: len(runs)])
    left.bar_label(bars, labels=[f"{w:.2f} ms" for w in worst])
    left.axhline(TARGET_MS, color="black", linestyle="--", linewidth=1, label="1 ms target")
    left.set_yscale("log")
    left.set_ylabel("largest GC pause (ms, log)")
    left.set_title("Largest pause during the load")
    left.legend()
    for run in runs:
        merged: dict[float, float] = {}
        for series in run.buckets.values():
            for le, count in series:
                merged[le] = merged.get(le, 0.0) + count
        if not merged:
            continue
        les = sorted(merged)
        total = max(merged.values()) or 1.0
        right.step(
            [le * 1000 for le in les],
            [merged[le] / total for le in les],
            where="post",
            label=run.tier,
        )
    right.set_xscale("log")
    right.set_xlabel("pause (ms, log)")
    right.set_ylabel("share of collections at or below")
    right.set_title("Pause distribution, all generations")
    right.axvline(TARGET_MS, color="black", linestyle="--", linewidth=1)
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)


def _targets(runs: list[TierRun]) -> list[Target]:
    """The largest pause at the maximum tiers, within 1 ms."""
    return [
        Target(
            f"{run.tier}: largest GC pause <= {TARGET_MS:g} ms",
            f"{run.gc['max_pause_ms']:.3f} ms",
            run.gc["max_pause_ms"] <= TARGET_MS,
        )
        for run in runs
        if run.tier in ("turbo", "enterprise")
    ]


def _markdown(
    runs: list[TierRun],
    targets: list[Target],
    duration: int,
    machine: dict[str, Any],
    pinning: Pinning,
    *,
    started: str,
    interrupted: bool,
) -> list[str]:
    lines = [
        f"# GC pauses by tier, {started}",
        "",
        f"Each tier runs alone, pinned as: {pinning.describe()}. The daemon holds 300,000 "
        "resting orders; each request rests one, removes the oldest and leaves one reference "
        f"cycle. wrk: one thread, 50 connections, {duration} s after a {WARMUP_S} s warm-up. "
        "Pauses are timed inside the daemon with `gc.callbacks`, from the end of start-up.",
        *report.partial(interrupted),
        "",
        *report.targets_table(targets, none="No maximum tier (turbo, enterprise) was run."),
        "",
        "## Pauses",
        "",
        "| tier | GC mode | req/s | p99 ms | largest pause ms | young (count / max ms) "
        "| middle | full | governor full collections |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        pauses = run.gc["pauses"]
        cells = [f"{pauses[g]['count']} / {pauses[g]['max_ms']:.3f}" for g in ("0", "1", "2")]
        lines.append(
            f"| {run.tier} | {run.gc['mode']} | {run.result.rps:,.0f} | "
            f"{run.result.at(99.0):.3f} | **{run.gc['max_pause_ms']:.3f}** | "
            + " | ".join(cells)
            + f" | {run.gc['full_collections']} |"
        )
    lines += ["", "![GC pauses](gc-pauses.png)", ""]
    lines += ["## Machine", "", *facts.describe(machine, pinning.describe())]
    lines += [
        "",
        "Command: `python -m bench.gcpause"
        + (f" --duration {duration}" if duration != DURATION_S else "")
        + "`",
    ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gcpause", description=__doc__)
    add_run_options(parser, "gcpause", quick=f"{QUICK_DURATION_S}s per tier", pin="no pinning")
    parser.add_argument("--duration", type=int, help=f"seconds per tier (default {DURATION_S})")
    parser.add_argument("--tiers", default=",".join(TIERS), help="comma-separated tiers")
    args = parser.parse_args(argv)
    started, out = start("gcpause", args.out)
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    tiers = [t for t in args.tiers.split(",") if t]
    pinning = plan(args.pin)
    machine = facts.collect(("sprintd", "trio", "h11"))
    say(f"gc bench: {len(tiers)} tiers x {duration}s; results in {short(out)}")
    runs: list[TierRun] = []
    interrupted = False
    try:
        for index, tier in enumerate(tiers, 1):
            say(f"[{index}/{len(tiers)}] {tier}: loading for {duration}s")
            run = _run_tier(tier, duration, out, pinning)
            pauses = run.gc["pauses"]
            say(
                f"[{index}/{len(tiers)}] {tier}: {run.result.rps:,.0f} req/s, largest pause "
                f"{run.gc['max_pause_ms']:.3f} ms, collections "
                f"{pauses['0']['count']}/{pauses['1']['count']}/{pauses['2']['count']}"
            )
            runs.append(run)
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: the daemon is stopped, writing a partial report")
    if runs:
        _plot(runs, out / "gc-pauses.png")
    targets = _targets(runs)
    results = {
        "started": started,
        "interrupted": interrupted,
        "duration_s": duration,
        "pinning": pinning.describe(),
        "machine": machine,
        "targets": [asdict(t) for t in targets],
        "tiers": {run.tier: {"result": asdict(run.result), "gc": run.gc} for run in runs},
    }
    markdown = _markdown(
        runs, targets, duration, machine, pinning, started=started, interrupted=interrupted
    )
    path = report.write(out, results, markdown)
    return finish(targets, path, interrupted=interrupted, failed=False)


if __name__ == "__main__":
    sys.exit(main())
