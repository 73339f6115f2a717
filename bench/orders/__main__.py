"""Run the orders bench: ``python -m bench.orders [--quick] [--tiers enterprise,free]``.

One thing runs at a time: the journal bench in this process (pinned to the
server's CPU), then one daemon per tier (pinned there too) with one load
against it at a time, its tool or this process's entry client on the other CPU.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

from bench.common import facts
from bench.common.cli import add_run_options, choices, positive, say, start
from bench.common.net import ServerError, free_port, request, running
from bench.common.paths import BIN, REPO, short
from bench.common.pinning import Pinning, on_cpus, pinned, plan
from bench.common.report import finish
from bench.orders import entry_load, journal_load, rate_load, report
from bench.orders.results import PortRun, Run
from bench.serving.load import Load, LoadError, Settings, run_load
from sprintd.journal import FsyncPolicy
from sprintd.tiers import TIERS

SYMBOL = "BTC-USD"
ORDER_BODY = json.dumps(
    {"symbol": SYMBOL, "side": "buy", "price": "100.00", "qty": "0.001"}, separators=(",", ":")
).encode()
HTTP_CLOSED = Load(
    "http-closed", "POST /v1/orders, closed loop (wrk)", "wrk", "POST", "/v1/orders", ORDER_BODY
)
# Run by rate_load (h2load), not bench.serving's k6: the Load names it for the report.
HTTP_RATE = Load(
    "http-rate", "POST /v1/orders, constant rate (h2load)", "k6", "POST", "/v1/orders", ORDER_BODY
)
JOURNAL_LOADS: tuple[tuple[FsyncPolicy, int], ...] = (
    ("always", 1000),
    ("always", 100),
    ("interval", 1000),
    ("os", 1000),
)
# (key, title, orders per frame, frames in flight, compact protocol)
ENTRY_LOADS = (
    ("entry-batched", "binary port, 100 orders a frame", 100, 8, False),
    ("compact-batched", "compact, 100 orders a frame", 100, 8, True),
    ("entry-single", "binary port, 1 order a frame", 1, 64, False),
    ("compact-single", "compact, 1 order a frame", 1, 64, True),
)
# (key, title, orders per frame, orders/s): constant rate, compact, at half
# the throughput targets (report.COMPACT_*_RATE), for latency per frame.
RATE_LOADS = (
    ("compact-rate-batched", "compact, 100 a frame, constant rate", 100, 125_000),
    ("compact-rate-single", "compact, 1 a frame, constant rate", 1, 30_000),
)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started, out = start("orders", args.out, "logs", "raw")
    seconds = args.duration or (2 if args.quick else 10)
    records = 50_000 if args.quick else 200_000
    replayed = 200_000 if args.quick else 1_000_000
    pinning = plan(args.pin)
    run = Run(
        started=started,
        seconds=seconds,
        pinning=pinning.describe(),
        machine=facts.collect(("sprintd", "trio", "h11", "msgpack", "cysimdjson", "matplotlib")),
        http=Settings(seconds, args.connections, args.rate, vus=0),  # no k6 here
    )
    say(f"orders bench: journal, then {len(args.tiers)} tier(s) x 4 loads of {seconds}s")
    say(f"pinning: {pinning.describe()}; results in {short(out)}")
    interrupted = False
    try:
        if not args.entry_only:
            with on_cpus(pinning.server):
                _journal(run, records, replayed, out)
        for tier in args.tiers:
            _daemon(
                run, tier, seconds, out, pinning, http=not args.entry_only, scale=args.rate_scale
            )
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: writing a partial report")
    targets = report.targets(run)
    path = report.write(run, targets, out)
    return finish(targets, path, interrupted=interrupted, failed=bool(run.failures))


def _journal(run: Run, records: int, replayed: int, out: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="journal-bench-", dir=out))
    for fsync, appenders in JOURNAL_LOADS:
        result = journal_load.measure_appends(base, fsync, appenders, records)
        run.appends.append(result)
        say(
            f"journal  fsync={fsync:8} {appenders:5} appenders  {result.per_second:10,.0f} "
            f"records/s  ({result.records / max(result.batches, 1):,.0f} a batch, "
            f"{result.fsyncs} fsyncs)"
        )
    run.replay = journal_load.measure_replay(base, replayed)
    say(
        f"journal  replay of {run.replay.records:,} records: {run.replay.seconds:.2f}s "
        f"(open {run.replay.open_s:.2f}s, read {run.replay.read_s:.2f}s)"
    )
    base.rmdir()


def _daemon(
    run: Run, tier: str, seconds: int, out: Path, pinning: Pinning, *, http: bool, scale: float
) -> None:
    port, entry_port = free_port(), free_port()
    data = out / f"data-{tier}"
    argv = pinned(
        [f"{BIN}/sprintd", "run", "--tier", tier, "--port", str(port), "--data-dir", str(data)],
        pinning.server,
    )
    port_run = PortRun(tier, argv)
    run.ports.append(port_run)
    env = {"SPRINTD_ORDERS__ENTRY_PORT": str(entry_port)}
    log = out / "logs" / f"sprintd-{tier}.log"
    say(f"[{tier}] starting sprintd on 127.0.0.1:{port}, entry port {entry_port}")
    try:
        with running(
            argv, port, (REPO,), log, ready_path="/readyz", check=_ready, env=env
        ) as process:
            for key, title, per_frame, window, compact in ENTRY_LOADS:
                count = max(1, 20_000 // per_frame)
                if compact:
                    frames = entry_load.compact_frames(per_frame, count)
                else:
                    frames = entry_load.order_frames(SYMBOL, per_frame, count)
                hello = entry_load.HELLO_FRAME if compact else None
                cpu = entry_load.cpu_seconds(process.pid)
                with on_cpus(pinning.tools):
                    result = entry_load.drive(
                        "127.0.0.1", entry_port, frames, per_frame, window, seconds, hello
                    )
                cpu = entry_load.cpu_seconds(process.pid) - cpu
                port_run.entry[key] = result = replace(result, server_cpu_s=cpu)
                say(
                    f"[{tier}] {title:34} {result.per_second:10,.0f} orders/s  "
                    f"{result.cpu_us_per_order:.1f} us of daemon CPU an order"
                )
            for key, title, per_frame, rate in RATE_LOADS:
                frames = entry_load.compact_frames(per_frame, max(1, 20_000 // per_frame))
                with on_cpus(pinning.tools):
                    per_second = rate * scale / per_frame
                    result = entry_load.drive_rate(
                        "127.0.0.1", entry_port, frames, per_frame, per_second, seconds,
                        entry_load.HELLO_FRAME,
                    )  # fmt: skip
                port_run.entry[key] = result
                say(
                    f"[{tier}] {title:34} {result.per_second:10,.0f} orders/s  p99 per frame "
                    f"{report.percentile_ms(result, 99.0):.2f} ms"
                )
            for load in (HTTP_CLOSED, HTTP_RATE) if http else ():
                url = f"http://127.0.0.1:{port}{load.path}"
                raw = out / "raw" / f"{tier}-{load.key}.txt"
                try:
                    if load is HTTP_RATE:
                        http = rate_load.run_rate(
                            url, ORDER_BODY, run.http.rate, seconds, raw, cpus=pinning.tools
                        )
                    else:
                        http = run_load(load, url, seconds, run.http, raw, cpus=pinning.tools)
                except LoadError as exc:
                    port_run.failures[load.key] = str(exc)
                    say(f"[{tier}] {load.key} FAILED: {exc}")
                    continue
                port_run.http[load.key] = http
                say(
                    f"[{tier}] {load.title:34} {http.rps:10,.0f} orders/s  p50 "
                    f"{http.at(50.0):.2f}  p99 {http.at(99.0):.2f}  max {http.max_ms:.2f} ms  "
                    f"errors {http.errors}  dropped {http.dropped}"
                )
    except (ServerError, OSError) as exc:
        port_run.failures["start"] = str(exc)
        say(f"[{tier}] NOT MEASURED: {exc}")


def _ready(port: int) -> None:
    """The orders plugin takes the bench's order: a daemon answering anything
    else (a 404, a 400) would make every figure meaningless."""
    try:
        status, answer = request(port, "POST", HTTP_CLOSED.path, ORDER_BODY)
    except OSError as exc:
        raise ServerError(f"POST {HTTP_CLOSED.path} failed: {exc!r}") from None
    if status != 201 or b'"order_id"' not in answer:
        raise ServerError(f"POST {HTTP_CLOSED.path} answered {status} {answer[:80]!r}")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.orders",
        description="Measure the journal, then the orders plugin through its binary port and "
        "over HTTP, per tier, and write a Markdown report with plots.",
    )
    add_run_options(parser, "orders", quick="2 s loads, smaller journal runs", pin="do not pin")
    parser.add_argument(
        "--tiers",
        type=lambda v: choices(v, TIERS),
        default=["enterprise", "free"],
        help="comma-separated tiers to run the daemon at (default enterprise,free)",
    )
    parser.add_argument("--duration", type=positive, metavar="S", help="seconds per load")
    parser.add_argument(
        "--entry-only",
        action="store_true",
        help="only the binary port's loads (no journal bench, no HTTP loads)",
    )
    parser.add_argument(
        "--rate-scale",
        type=float,
        default=1.0,
        metavar="F",
        help="run the constant-rate loads at F times half the targets (default 1: the "
        "targets' figures; less on a machine too busy to offer them)",
    )
    parser.add_argument(
        "--rate",
        type=positive,
        default=10_000,
        help="orders/s of the constant-rate load (h2load; default 10000)",
    )
    parser.add_argument("--connections", type=positive, default=50, help="wrk connections")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
