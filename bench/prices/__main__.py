"""Run the prices bench: ``python -m bench.prices [--quick] [--parts a,b] ...``.

Three parts, one after another:

- ``inprocess``: the cost of one update in process (``bench.prices.inprocess``,
  one pinned process per GC regime).
- ``http``: a daemon (one worker, pinned to its own CPU, the enterprise tier
  by default) loaded on ``POST /v1/prices``: one update per request at a
  constant ``--rate`` (10,000/s) from h2load, ``--http-batch`` updates per
  request at the same update rate from k6, then wrk's closed loop for the
  maximum rate.
- ``feed``: the same daemon's binary feed: a constant ``--rate`` in frames of
  one update, then of ``--feed-batch`` updates, then the maximum rate with
  ``--max-batch`` updates a frame and ``--window`` frames in flight.

Before each daemon load the engine's figures are reset, and read back after
it: the daemon's own view (wire to snapshot) beside the client's (send to
answer). The map holds ``--symbols`` symbols throughout, so every publish
re-encodes a ``/v1/prices`` of that size.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bench.common import facts
from bench.common.cli import add_run_options, choices, positive, say, start
from bench.common.net import ServerError, call_json, free_port, running
from bench.common.paths import BIN, REPO, short
from bench.common.pinning import Pinning, on_cpus, pinned, plan
from bench.common.processes import cpu_seconds
from bench.common.report import Target, finish
from bench.prices import feed, inprocess, report
from bench.prices.results import Figures, at, from_samples, from_tool
from bench.serving.load import Load, LoadError, Settings, command, run_load

PARTS = ("inprocess", "http", "feed")
DURATION_S, QUICK_DURATION_S = 10, 3
COUNT, QUICK_COUNT = 200_000, 40_000
WARMUP_S = 2
CLIENT_NICE = -10
PACKAGES = ("sprintd", "trio", "h11", "cysimdjson", "msgpack", "matplotlib")
HTTP_BODY = b'{"symbol":"SYM-1","price":64000.5,"volume":1.25}'
_PATH = "/v1/prices"
# A feed load: key, title, the measurement, the updates/s it offers (None: as many as it can).
_T = TypeVar("_T")
_FeedLoad = tuple[str, str, Callable[[], feed.FeedResult], int | None]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started, out = start("prices", args.out, "logs", "raw")
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    count = args.count or (QUICK_COUNT if args.quick else COUNT)
    pinning = plan(args.pin)
    machine = facts.collect(PACKAGES)
    machine["client_nice"] = _raise_priority()
    say(f"prices bench: {', '.join(args.parts)}; {duration}s per load; results in {short(out)}")
    say(f"pinning: {pinning.describe()}")
    run = report.Run(started, vars(args) | {"duration": duration, "count": count}, machine)
    run.pinning = pinning.describe()
    interrupted = False
    try:
        if "inprocess" in args.parts:
            _inprocess(run, args, count, pinning, out)
        if "http" in args.parts or "feed" in args.parts:
            _daemon(run, args, duration, pinning, out)
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: the daemon is stopped, writing a partial report")
    run.interrupted = interrupted
    targets = evaluate(run, args.rate)
    path = report.write(run, targets, out)
    return finish(targets, path, interrupted=interrupted, failed=bool(run.failures))


# --- in process ------------------------------------------------------------------


def _inprocess(
    run: report.Run, args: argparse.Namespace, count: int, pinning: Pinning, out: Path
) -> None:
    for regime in ("defaults", "tier"):
        result_path = out / "raw" / f"inprocess-{regime}.json"
        argv = pinned(
            [
                sys.executable,
                "-m",
                "bench.prices.inprocess",
                "--regime",
                regime,
                "--count",
                str(count),
                "--symbols",
                str(args.symbols),
                "--out",
                str(result_path),
            ],
            pinning.server,
        )
        run.commands.append(argv)
        say(f"in process, GC {regime}: {count:,} updates per variant")
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
        try:
            result = json.loads(result_path.read_text("utf-8"))
        except (OSError, ValueError):
            run.failures[f"inprocess-{regime}"] = (done.stderr.strip().splitlines() or ["?"])[-1]
            say(f"  NOT MEASURED: {run.failures[f'inprocess-{regime}']}")
            continue
        run.gc[regime] = result["gc"]
        for variant, figures in result["variants"].items():
            key = f"inprocess-{variant}-{regime}"
            if "error" in figures:
                run.failures[key] = figures["error"]
                continue
            title = f"{report.VARIANT_TITLES[variant]}, GC {regime}"
            measured = Figures(key, title, "in process", figures["updates_s"], figures["latency"])
            measured.notes.append(f"GC pauses per generation: {figures['gc_pauses']['count']}")
            run.figures.append(measured)
            say(f"  {_line(measured)}")


# --- the daemon ----------------------------------------------------------------------


def _daemon(
    run: report.Run, args: argparse.Namespace, duration: int, pinning: Pinning, out: Path
) -> None:
    port, feed_port = free_port(), free_port()
    argv = pinned(
        [
            "/usr/bin/env",
            f"SPRINTD_PRICES__FEED_PORT={feed_port}",
            f"SPRINTD_PRICES__MAX_SYMBOLS={max(1000, args.symbols)}",
            # The order books are not measured here; their entry port could
            # clash with another daemon's.
            "SPRINTD_ORDERS__ENABLED=false",
            f"{BIN}/sprintd",
            "run",
            "--tier",
            args.tier,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--data-dir",
            str(out / "data"),
        ],
        pinning.server,
    )
    run.commands.append(argv)
    names = inprocess.symbols(args.symbols)

    def seed(_: int) -> None:
        answer = call_json(port, "POST", _PATH, [{"symbol": s, "price": 1} for s in names])
        if answer.get("applied") != len(names):
            raise ServerError(f"seeding {len(names)} symbols answered {answer}")

    say(f"daemon: sprintd --tier {args.tier} on 127.0.0.1:{port}, feed on {feed_port}")
    try:
        with running(
            argv, port, (REPO,), out / "logs" / "sprintd.log", ready_path="/livez", check=seed
        ) as daemon:
            # taskset and env exec the daemon: its pid is the one started.
            if "http" in args.parts:
                _http(run, args, duration, port, daemon.pid, pinning, out)
            if "feed" in args.parts:
                _feed(run, args, duration, port, daemon.pid, feed_port, names, pinning)
    except ServerError as exc:
        run.failures["daemon"] = str(exc)
        say(f"daemon NOT MEASURED: {exc}")


def _http(
    run: report.Run,
    args: argparse.Namespace,
    duration: int,
    port: int,
    pid: int,
    pinning: Pinning,
    out: Path,
) -> None:
    base = f"http://127.0.0.1:{port}"
    batch = args.http_batch
    batched = json.dumps(
        [{"symbol": f"SYM-{n}", "price": 64000.5 + n, "volume": 1.25} for n in range(batch)]
    ).encode()
    loads = (
        (
            # One update a request at 10,000/s: more than k6 can start from a
            # shared core (bench.serving.load).
            Load(
                "http-rate",
                "POST /v1/prices, constant rate (h2load)",
                "h2load",
                "POST",
                _PATH,
                HTTP_BODY,
            ),
            1,
        ),
        (
            Load(
                "http-rate-batch",
                "POST /v1/prices, constant rate (k6)",
                "k6",
                "POST",
                _PATH,
                batched,
            ),
            batch,
        ),
        (
            Load("http-max", "POST /v1/prices, closed loop (wrk)", "wrk", "POST", _PATH, HTTP_BODY),
            1,
        ),
    )
    for load, per_request in loads:
        # k6's rate is requests a second: the offered updates stay at --rate.
        settings = Settings(duration, args.connections, max(1, args.rate // per_request), args.vus)
        raw = out / "raw" / f"{load.key}.txt"
        try:
            if load.closed:
                run_load(
                    load,
                    base + load.path,
                    WARMUP_S,
                    settings,
                    raw.with_suffix(".warmup.txt"),
                    cpus=pinning.tools,
                )
            call_json(port, "POST", "/v1/price-engine/reset", {})
            result, cpu = _with_cpu(
                pid,
                functools.partial(
                    run_load, load, base + load.path, duration, settings, raw, cpus=pinning.tools
                ),
            )
        except LoadError as exc:
            run.failures[load.key] = str(exc)
            say(f"{load.key} FAILED: {exc}")
            continue
        measured = Figures(
            load.key,
            f"{load.title}, {per_request} update{'s' if per_request > 1 else ''} a request",
            "HTTP",
            result.rps * per_request,
            from_tool(result),
            offered=None if load.closed else args.rate,
            dropped=result.dropped,
            errors=result.errors,
            engine=call_json(port, "GET", "/v1/price-engine/metrics"),
            daemon_cpu=cpu,
        )
        if load.closed or load.tool == "h2load":
            measured.notes.append(f"{args.connections} connections")
        measured.notes.append(
            f"the load generator ({load.tool}) took {result.tool_cpu_s:.1f} CPU-s, "
            f"{100 * result.tool_cpu_s / duration:.0f}% of a core"
        )
        run.figures.append(measured)
        argv = command(load, base + load.path, duration, settings, raw.with_suffix(".summary.json"))
        run.commands.append(pinned(argv, pinning.tools))
        say(_line(measured))


def _feed(
    run: report.Run,
    args: argparse.Namespace,
    duration: int,
    port: int,
    pid: int,
    feed_port: int,
    names: list[str],
    pinning: Pinning,
) -> None:
    loads: list[_FeedLoad] = []
    for batch in dict.fromkeys((1, args.feed_batch)):
        pool = feed.frames(names, batch)
        loads.append(
            (
                f"feed-rate-{batch}",
                f"feed, constant rate, {batch} update{'s' if batch > 1 else ''} a frame",
                functools.partial(
                    feed.constant_rate, "127.0.0.1", feed_port, pool, batch, args.rate, duration
                ),
                args.rate,
            )
        )
    pool = feed.frames(names, args.max_batch, count=64)
    loads.append(
        (
            "feed-max",
            f"feed, maximum rate, {args.max_batch} updates a frame, {args.window} in flight",
            functools.partial(
                feed.max_rate, "127.0.0.1", feed_port, pool, args.max_batch, args.window, duration
            ),
            None,
        )
    )
    # This process is the feed's client: off the daemon's CPU.
    with on_cpus(pinning.tools):
        for key, title, measure, offered in loads:
            call_json(port, "POST", "/v1/price-engine/reset", {})
            try:
                result, cpu = _with_cpu(pid, measure)
            except (feed.FeedError, OSError) as exc:
                run.failures[key] = str(exc)
                say(f"{key} FAILED: {exc}")
                continue
            measured = Figures(
                key,
                title,
                "feed",
                result.updates_s,
                from_samples(result.latency_ns),
                offered=offered,
                dropped=result.late_frames,
                engine=call_json(port, "GET", "/v1/price-engine/metrics"),
                daemon_cpu=cpu,
            )
            if offered is None:
                measured.notes.append("latency: a frame's send to its ack, in a closed loop")
            if result.from_send_ns is not None:
                sent = from_samples(result.from_send_ns)
                points = " / ".join(
                    f"p{p:g} {(at(sent, p) or 0) / 1e3:,.1f}" for p in (50.0, 95.0, 99.0)
                )
                measured.notes.append(
                    f"from the real send (the client's lateness left out): {points} us"
                )
            run.figures.append(measured)
            say(_line(measured))


def _with_cpu(pid: int, measure: Callable[[], _T]) -> tuple[_T, float]:
    """``measure()``, and the daemon's CPU time over it as a share of one core:
    near 1.0 it was saturated; well under 1.0 with updates waiting, it was
    kept off its CPU (by other work on the machine)."""
    began, cpu = time.monotonic(), cpu_seconds(pid)
    result = measure()
    return result, (cpu_seconds(pid) - cpu) / (time.monotonic() - began)


def _raise_priority() -> str:
    """The clients (this process, k6 and wrk, which inherit it) at the priority
    the enterprise tier gives the daemon, where the kernel allows: on a shared
    machine the load generators must not be what falls behind."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, CLIENT_NICE)
    except OSError as exc:
        return f"{os.getpriority(os.PRIO_PROCESS, 0)} (nice {CLIENT_NICE} refused: {exc})"
    return str(CLIENT_NICE)


def _line(figures: Figures) -> str:
    def us(p: float) -> str:
        value = at(figures.latency, p)
        return "-" if value is None else f"{value / 1e3:,.1f}"

    line = (
        f"{figures.key:24} {figures.updates_s:>11,.0f} updates/s  p50 {us(50.0)}  "
        f"p95 {us(95.0)}  p99 {us(99.0)} us"
    )
    if figures.engine is not None:
        line += f"  (engine p95 {figures.engine['latency']['p95']:,.1f} us)"
    if figures.daemon_cpu is not None:
        line += f"  daemon CPU {figures.daemon_cpu:.0%}"
    if figures.dropped:
        line += f"  late/dropped {figures.dropped:,}"
    return line


# --- targets ---------------------------------------------------------------------------

MAX_INPROCESS_P95_US = 10.0
MAX_E2E_P95_US = 1000.0
MIN_FEED_UPDATES_S = 300_000


def evaluate(run: report.Run, rate: int) -> list[Target]:
    targets = [
        _p95(
            run,
            f"inprocess-route-{regime}",
            MAX_INPROCESS_P95_US,
            f"in process (route, GC {regime}): p95 <= 10 us per update",
        )
        for regime in ("defaults", "tier")
    ]
    targets += [
        _p95(run, key, MAX_E2E_P95_US, f"{what}: p95 < 1 ms at {rate:,} updates/s", strict=True)
        for key, what in (
            ("http-rate", "HTTP end to end, 1 update a request"),
            ("http-rate-batch", "HTTP end to end, batched requests"),
            ("feed-rate-1", "binary feed end to end, 1 update a frame"),
        )
    ]
    found = next((f for f in run.figures if f.key == "feed-max"), None)
    goal = ">= 300,000 updates/s through the binary port, batched"
    targets.append(
        Target(goal, "not measured", None)
        if found is None
        else Target(
            goal, f"{found.updates_s:,.0f} updates/s", found.updates_s >= MIN_FEED_UPDATES_S
        )
    )
    return targets


def _p95(run: report.Run, key: str, limit_us: float, goal: str, *, strict: bool = False) -> Target:
    found = next((f for f in run.figures if f.key == key), None)
    if found is None:
        return Target(goal, "not measured", None)
    p95 = at(found.latency, 95.0)
    if p95 is None:
        return Target(goal, "no samples", None)
    measured = f"p95 {p95 / 1e3:,.1f} us"
    met = p95 / 1e3 < limit_us if strict else p95 / 1e3 <= limit_us
    if found.offered is not None:
        measured += f" at {found.updates_s:,.0f} of {found.offered:,} offered/s"
        # A load that did not get its rate out did not test the rate.
        if found.updates_s < 0.95 * found.offered:
            met = False
    return Target(goal, measured, met)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.prices",
        description="Measure the price engine in process, over HTTP and over the binary feed, "
        "and write a Markdown report with latency plots.",
    )
    add_run_options(
        parser,
        "prices",
        quick=f"{QUICK_DURATION_S}s loads, {QUICK_COUNT:,} updates in process",
        pin="do not pin the daemon and the clients to separate CPUs",
    )
    parser.add_argument(
        "--parts",
        type=lambda v: choices(v, PARTS),
        default=list(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)}",
    )
    parser.add_argument(
        "--duration", type=positive, metavar="S", help=f"seconds per load (default {DURATION_S})"
    )
    parser.add_argument(
        "--count",
        type=positive,
        metavar="N",
        help=f"updates per in-process variant (default {COUNT:,})",
    )
    parser.add_argument(
        "--rate",
        type=positive,
        default=10_000,
        help="updates/s of the constant-rate loads (default 10000)",
    )
    parser.add_argument(
        "--symbols", type=positive, default=100, help="symbols in the map (default 100)"
    )
    parser.add_argument(
        "--tier", default="enterprise", help="the daemon's tier (default enterprise)"
    )
    parser.add_argument(
        "--connections", type=positive, default=50, help="wrk and h2load connections (default 50)"
    )
    parser.add_argument(
        "--vus", type=positive, default=100, help="k6 pre-allocated VUs (default 100)"
    )
    parser.add_argument(
        "--http-batch",
        type=positive,
        default=10,
        help="updates a request in the batched HTTP load (default 10)",
    )
    parser.add_argument(
        "--feed-batch",
        type=positive,
        default=10,
        help="updates a frame at the constant rate (default 10; 1 always runs too)",
    )
    parser.add_argument(
        "--max-batch",
        type=positive,
        default=200,
        help="updates a frame at the maximum rate (default 200)",
    )
    parser.add_argument(
        "--window",
        type=positive,
        default=16,
        help="frames in flight at the maximum rate (default 16)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
