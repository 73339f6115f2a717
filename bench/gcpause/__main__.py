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
import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from prometheus_client.parser import text_string_to_metric_families

from bench.serving import cpus, facts
from bench.serving.load import Load, Result, Settings, run_load
from bench.serving.servers import BIN, REPO, free_port, running

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


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        body: bytes = answer.read()
        return body


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


def _run_tier(tier: str, duration: int, out: Path, pinning: cpus.Pinning) -> TierRun:
    port = free_port()
    argv = cpus.pinned(
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
    with running(
        argv,
        port,
        (HERE, REPO),
        out / f"sprintd-{tier}.log",
        ready_path="/livez",
        check=lambda _: None,
    ):
        run_load(LOAD, url, WARMUP_S, settings, out / f"{tier}.warmup.txt", cpus=pinning.tools)
        result = run_load(LOAD, url, duration, settings, out / f"{tier}.txt", cpus=pinning.tools)
        health = json.loads(_get(port, "/health"))
        metrics = _get(port, "/metrics").decode()
    return TierRun(tier, result, health["runtime"]["gc"], _pause_buckets(metrics))


def _plot(runs: list[TierRun], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
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
    fig.savefig(path)
    plt.close(fig)


def _report(runs: list[TierRun], duration: int, out: Path, pinning: cpus.Pinning) -> Path:
    machine = facts.collect(("sprintd", "trio", "h11"))
    lines = [
        f"# GC pauses by tier, {out.name}",
        "",
        f"Each tier runs alone, pinned as: {pinning.describe()}. The daemon holds 300,000 "
        "resting orders; each request rests one, removes the oldest and leaves one reference "
        f"cycle. wrk: one thread, 50 connections, {duration} s after a {WARMUP_S} s warm-up. "
        "Pauses are timed inside the daemon with `gc.callbacks`, from the end of start-up.",
        "",
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs, "
        f"Python {machine.get('python', '?')}, git {machine.get('git', '?')}.",
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
    for run in runs:
        if run.tier in ("turbo", "enterprise"):
            met = run.gc["max_pause_ms"] <= TARGET_MS
            lines.append(
                f"- {run.tier}: largest pause {run.gc['max_pause_ms']:.3f} ms, target "
                f"<= {TARGET_MS:g} ms: **{'met' if met else 'not met'}**"
            )
    lines += [
        "",
        "Command: `python -m bench.gcpause"
        + (f" --duration {duration}" if duration != DURATION_S else "")
        + "`",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gcpause", description=__doc__)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_DURATION_S}s per tier")
    parser.add_argument("--duration", type=int, help=f"seconds per tier (default {DURATION_S})")
    parser.add_argument("--tiers", default=",".join(TIERS), help="comma-separated tiers")
    parser.add_argument("--no-pin", dest="pin", action="store_false")
    args = parser.parse_args(argv)
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    tiers = [t for t in args.tiers.split(",") if t]
    out = REPO / "bench" / "results" / time.strftime("gcpause-%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    pinning = cpus.plan(args.pin)
    print(f"gc bench: {len(tiers)} tiers x {duration}s; results in {out}", flush=True)
    runs = []
    for index, tier in enumerate(tiers, 1):
        print(f"[{index}/{len(tiers)}] {tier}: loading for {duration}s", flush=True)
        run = _run_tier(tier, duration, out, pinning)
        pauses = run.gc["pauses"]
        print(
            f"[{index}/{len(tiers)}] {tier}: {run.result.rps:,.0f} req/s, largest pause "
            f"{run.gc['max_pause_ms']:.3f} ms, collections "
            f"{pauses['0']['count']}/{pauses['1']['count']}/{pauses['2']['count']}",
            flush=True,
        )
        runs.append(run)
    _plot(runs, out / "gc-pauses.png")
    print(f"report: {_report(runs, duration, out, pinning)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
