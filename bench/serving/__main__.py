"""Run the serving bench: ``python -m bench.serving [--quick] [--servers a,b] ...``.

Servers are started, loaded and stopped one after another, so at any moment
there is one server and at most one load tool running.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.common import facts
from bench.common.cli import add_run_options, choices, positive, say, start
from bench.common.net import ServerError, free_port
from bench.common.paths import short
from bench.common.pinning import Pinning, pinned, plan
from bench.common.report import finish
from bench.serving import report
from bench.serving.load import LOADS, Load, Result, Settings, measured_loads
from bench.serving.results import ServerRun
from bench.serving.servers import SERVERS, Server, serving
from bench.serving.targets import evaluate

# Full run: ~4 minutes for all five servers; --quick: about one.
DURATION_S, WARMUP_S = 10, 2
QUICK_DURATION_S, QUICK_WARMUP_S = 2, 1
# Seconds each server costs beyond its loads: start-up, k6's own start, stop.
OVERHEAD_S = 3


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started, out = start("serving", args.out, "logs", "raw")
    servers = [s for s in SERVERS if s.key in args.servers]
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    warmup = (
        args.warmup if args.warmup is not None else (QUICK_WARMUP_S if args.quick else WARMUP_S)
    )
    settings = Settings(duration, args.connections, args.rate, args.vus)
    pinning = plan(args.pin)
    packages = tuple(dict.fromkeys(p for s in servers for p in s.packages))
    machine = facts.collect((*packages, "matplotlib"))

    per_server = len(LOADS) * duration + 2 * warmup + OVERHEAD_S
    say(
        f"serving bench: {len(servers)} servers x {len(LOADS)} loads, {duration}s each, "
        f"about {len(servers) * per_server / 60:.1f} min; results in {short(out)}"
    )
    say(f"pinning: {pinning.describe()}")
    runs: list[ServerRun] = []
    interrupted = False
    try:
        for index, server in enumerate(servers, 1):
            prefix = f"[{index}/{len(servers)}] {server.key}"
            tier = args.sprintd_tier if server.key == "sprintd" else None
            extra = ("--tier", tier) if tier else ()
            _bench(
                server,
                runs,
                extra=extra,
                prefix=prefix,
                settings=settings,
                warmup=warmup,
                out=out,
                pinning=pinning,
            )
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: servers stopped, writing a partial report")

    targets = evaluate(runs, settings.connections)
    path = report.write(
        report.Run(started, settings, warmup, pinning, machine, runs, targets, interrupted),
        out,
    )
    return finish(targets, path, interrupted=interrupted, failed=any(r.failures for r in runs))


def _bench(
    server: Server,
    runs: list[ServerRun],
    *,
    extra: tuple[str, ...],
    prefix: str,
    settings: Settings,
    warmup: int,
    out: Path,
    pinning: Pinning,
) -> None:
    """Measure one server into a run appended to ``runs`` first, so an interrupted
    server's finished loads still reach the report."""
    port = free_port()
    argv = pinned(server.command(port, out / f"{server.key}-data", extra), pinning.server)
    run = ServerRun(server, argv)
    runs.append(run)
    say(f"{prefix}: starting on 127.0.0.1:{port}")
    began = time.monotonic()
    try:
        with serving(server, argv, port, out / "logs" / f"{server.key}.log"):
            say(f"{prefix}: ready in {time.monotonic() - began:.1f}s, payload checked")
            for load, result in measured_loads(
                LOADS,
                port,
                server.key,
                settings,
                out,
                run.failures,
                warmup=warmup,
                cpus=pinning.tools,
                prefix=prefix,
            ):
                run.results[load.key] = result
                say(f"{prefix}: {_line(load, result, settings)}")
    except ServerError as exc:
        run.failures["start"] = str(exc)
        say(f"{prefix}: NOT MEASURED: {exc}")


def _line(load: Load, result: Result, settings: Settings) -> str:
    line = (
        f"{load.key:12} {result.rps:9,.0f} req/s  p50 {result.at(50.0):.3f}  "
        f"p99 {result.at(99.0):.3f}  p99.9 {result.at(99.9):.3f}  "
        f"max {result.max_ms:.3f} ms  errors {result.errors}"
    )
    if not load.closed:
        line += f"  dropped {result.dropped}"
        if result.dropped or result.rps < 0.95 * settings.rate:
            line += f"  (did not sustain {settings.rate:,} req/s)"
    return line


def _parse(argv: list[str] | None) -> argparse.Namespace:
    keys = [s.key for s in SERVERS]
    parser = argparse.ArgumentParser(
        prog="python -m bench.serving",
        description="Start sprintd and its peers one at a time, load each the same way, "
        "and write a Markdown report with latency plots.",
    )
    add_run_options(
        parser,
        "serving",
        quick=f"{QUICK_DURATION_S}s loads, {QUICK_WARMUP_S}s warm-ups: a ~1 minute smoke run",
    )
    parser.add_argument(
        "--servers",
        type=lambda v: choices(v, keys),
        default=keys,
        help=f"comma-separated subset of {','.join(keys)} (default: all)",
    )
    parser.add_argument(
        "--duration",
        type=positive,
        metavar="S",
        help=f"seconds per measured load (default {DURATION_S})",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        metavar="S",
        help=f"seconds of warm-up before each closed loop (default {WARMUP_S})",
    )
    parser.add_argument(
        "--rate",
        type=positive,
        default=1000,
        metavar="R",
        help="req/s offered by the constant-rate loads (default 1000)",
    )
    parser.add_argument(
        "--connections",
        type=positive,
        default=50,
        help="wrk connections for the closed loops (default 50)",
    )
    parser.add_argument(
        "--vus",
        type=positive,
        default=50,
        help="k6 pre-allocated VUs for the constant-rate loads (default 50)",
    )
    parser.add_argument(
        "--sprintd-tier",
        metavar="TIER",
        help="run sprintd with --tier TIER (default: its configured tier)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
