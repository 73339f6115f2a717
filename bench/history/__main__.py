"""The history projector against a real PostgreSQL: ``python -m bench.history [--quick]``.

Two measurements against a PostgreSQL cluster of the bench's own
(``sprintd.plugins.history.pgserver``):

1. *Batched rows/s*: the projector alone, in this process (on the server's
   CPU), catching up a journal of ``--backlog`` orders (buys and sells at one
   price in turn, so every other order trades: 1.5 rows an order): every row
   over the time from the projector's start (connecting included) to its
   last commit. In a daemon
   the projector shares its process with the order path; the lag below
   measures that.
2. *Lag at a steady rate*: a daemon (``[history] postgres_url`` set) takes
   orders at ``--rate`` per second (frames of 100 every 10 ms at 10,000/s,
   sent on a schedule, not in a closed loop) for ``--duration`` seconds;
   ``lag_seconds`` and ``lag_records`` read every 100 ms.

The daemon (and the projector of 1.) run on the server's CPU, PostgreSQL
and this process's load on the others (``--no-pin``: anywhere).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import trio

from bench.common import facts
from bench.common.cli import add_run_options, positive, say, start
from bench.common.net import ServerError, free_port, running
from bench.common.paths import BIN, REPO, short
from bench.common.pinning import on_cpus, pinned, plan
from bench.common.report import Target, commands, finish, partial, targets_table, write
from bench.orders.entry_load import order_frames
from sprintd import Journal
from sprintd.plugins.history.config import HistorySection
from sprintd.plugins.history.decoders import Decoder, OrdersDecoder, PaymentsDecoder
from sprintd.plugins.history.pgserver import PostgresServer
from sprintd.plugins.history.projector import Projector
from sprintd.plugins.orders.commands import NEW
from sprintd.plugins.orders.config import OrdersSection
from sprintd.plugins.orders.events import GTC, LIMIT
from sprintd.plugins.orders.plugin import _PriceTime  # the engine kind its hook offers
from sprintd.plugins.orders.service import OrderService

SYMBOL = "BTC-USD"
ROWS_TARGET = 100_000
LAG_TARGET_S = 1.0
_LENGTH = struct.Struct(">I")


@dataclass
class Run:
    started: str
    pinning: str
    argv: list[str] = field(default_factory=list)
    backlog_orders: int = 0
    backlog_rows: int = 0
    catch_up_s: float | None = None
    steady_rate: int = 0
    steady_orders: int = 0
    steady_s: float = 0.0
    lag_s: list[float] = field(default_factory=list)
    lag_records: list[int] = field(default_factory=list)
    failures: dict[str, str] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float | None:
        if not self.catch_up_s:
            return None
        return self.backlog_rows / self.catch_up_s


def _history(port: int) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/health")
        body = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    check: dict[str, Any] = body["checks"]["history"][0]
    return check


def _backlog(run: Run, directory: Path, url: str, orders: int) -> None:
    """The projector alone, in this process: a journal of ``orders`` orders
    (buys and sells at one price in turn: 1.5 rows an order), caught up from
    the projector's start to its last commit, ``committed`` read every 5 ms."""
    kinds = {"price_time": _PriceTime(done_capacity=100_000, reserve=0)}

    def decoders() -> list[Decoder]:
        return [OrdersDecoder(OrderService(OrdersSection(), kinds)), PaymentsDecoder()]

    async def main() -> None:
        journal = Journal(directory, fsync="os", checkpoint_records=10**9)
        journal.open()
        payloads = [
            msgpack.packb([NEW, i + 1, SYMBOL, i % 2, LIMIT, 10_000, 10, GTC, False, "", 0,
                           None, 1_700_000_000_000 + i])
            for i in range(orders)
        ]  # fmt: skip
        projector = Projector(journal, HistorySection(postgres_url=url), decoders)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(journal.run)
            for at in range(0, orders, 10_000):
                await journal.append_many("orders", payloads[at : at + 10_000])
            began = time.monotonic()
            nursery.start_soon(projector.run)
            while projector.committed < journal.last_seq:
                await trio.sleep(0.005)
            run.catch_up_s = time.monotonic() - began
            run.backlog_rows = projector.rows
            nursery.cancel_scope.cancel()
        journal.close()

    run.backlog_orders = orders
    trio.run(main)
    say(
        f"backlog: {run.backlog_rows:,} rows in {run.catch_up_s or 0:.2f}s: "
        f"{run.rows_per_s or 0:,.0f} rows/s"
    )


def _steady(run: Run, port: int, entry_port: int, rate: int, seconds: float) -> None:
    """Orders on a schedule (frames of 100 every 100/rate s); the lag sampled."""
    per_frame = 100
    frames = order_frames(SYMBOL, per_frame, 200)
    interval = per_frame / rate
    sock = socket.create_connection(("127.0.0.1", entry_port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            check = _history(port)
            run.lag_s.append(check["lag_seconds"])
            run.lag_records.append(check["lag_records"])

    def read() -> None:
        # Replies are drained, not decoded: the schedule is the sender's.
        while sock.recv(1 << 20):
            pass

    reader = threading.Thread(target=read, daemon=True)
    sampler = threading.Thread(target=sample, daemon=True)
    reader.start()
    sampler.start()
    began = time.monotonic()
    sent = 0
    try:
        while (now := time.monotonic()) - began < seconds:
            due = int((now - began) / interval) + 1
            while sent < due:
                sock.sendall(frames[sent % len(frames)])
                sent += 1
            time.sleep(max(0.0, began + sent * interval - time.monotonic()))
    finally:
        stop.set()
        sampler.join()
        sock.shutdown(socket.SHUT_WR)
        reader.join(30)
        sock.close()
    run.steady_rate = rate
    run.steady_orders = sent * per_frame
    run.steady_s = time.monotonic() - began
    say(
        f"steady: {run.steady_orders:,} orders in {run.steady_s:.1f}s; lag max "
        f"{max(run.lag_s, default=0):.3f}s, {max(run.lag_records, default=0):,} records"
    )


def targets(run: Run) -> list[Target]:
    rows = run.rows_per_s
    lag = max(run.lag_s) if run.lag_s else None
    return [
        Target(
            f">= {ROWS_TARGET:,} rows/s into PostgreSQL, batched",
            "not measured" if rows is None else f"{rows:,.0f} rows/s",
            None if rows is None else rows >= ROWS_TARGET,
        ),
        Target(
            f"lag <= {LAG_TARGET_S:g} s at a steady {run.steady_rate or 10_000:,} orders/s",
            "not measured" if lag is None else f"max {lag:.3f} s",
            None if lag is None else lag <= LAG_TARGET_S,
        ),
    ]


def report(run: Run, found: list[Target], out: Path, interrupted: bool) -> Path:
    lines = [
        "# The history projector",
        *partial(interrupted),
        "",
        f"Pinning: {run.pinning}. The daemon:",
        "",
        *commands([run.argv]),
        "",
        *targets_table(found),
        "",
        "## Batched rows/s",
        "",
        f"The projector alone catching up a journal of {run.backlog_orders:,} orders: "
        f"{run.backlog_rows:,} rows (orders, trades) committed in {run.catch_up_s or 0:.2f} s "
        "from the projector's start (connecting included) to its last commit.",
        "",
        "## Lag at a steady rate",
        "",
        f"{run.steady_orders:,} orders in {run.steady_s:.1f} s ({run.steady_rate:,}/s on a "
        f"schedule); /health read every 100 ms: lag max {max(run.lag_s, default=0):.3f} s, "
        f"mean {sum(run.lag_s) / max(len(run.lag_s), 1):.3f} s; lag in records max "
        f"{max(run.lag_records, default=0):,}.",
    ]
    if run.failures:
        lines += ["", "## Not measured", "", *(f"- {k}: {v}" for k, v in run.failures.items())]
    results = {**asdict(run), "rows_per_s": run.rows_per_s}
    return write(out, results, lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    add_run_options(parser, "history", quick="a 100,000-order backlog and 5 s at the rate")
    parser.add_argument("--backlog", type=positive, default=300_000, help="orders to catch up")
    parser.add_argument("--rate", type=positive, default=10_000, help="steady orders/s")
    parser.add_argument("--duration", type=positive, default=20, help="steady seconds")
    args = parser.parse_args(argv)
    backlog = 100_000 if args.quick else args.backlog
    duration = 5 if args.quick else args.duration
    started, out = start("history", args.out, "logs")
    pinning = plan(args.pin)
    run = Run(started, pinning.describe())
    run.machine = facts.collect(("sprintd", "psycopg", "trio"))
    interrupted = False
    pg = PostgresServer()
    try:
        port, entry_port = free_port(), free_port()
        run.argv = pinned(
            [f"{BIN}/sprintd", "run", "--tier", "pro", "--port", str(port),
             "--data-dir", str(out / "data")],
            pinning.server,
        )  # fmt: skip
        env = {
            "SPRINTD_ORDERS__ENTRY_PORT": str(entry_port),
            "SPRINTD_HISTORY__POSTGRES_URL": pg.url,
        }
        log = out / "logs" / "sprintd.log"
        with on_cpus(pinning.server):
            _backlog(run, out / "backlog-journal", pg.create_database("backlog"), backlog)
        with (
            running(run.argv, port, (REPO,), log, ready_path="/readyz", env=env),
            on_cpus(pinning.tools),
        ):
            _steady(run, port, entry_port, args.rate, duration)
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: writing a partial report")
    except (ServerError, OSError) as exc:
        run.failures["run"] = str(exc)
        say(f"NOT MEASURED: {exc}")
    finally:
        pg.close()
    found = targets(run)
    path = report(run, found, out, interrupted)
    say(f"results in {short(out)}")
    return finish(found, path, interrupted=interrupted, failed=bool(run.failures))


if __name__ == "__main__":
    raise SystemExit(main())
