"""``python -m bench.wsfanout [--subscribers N] [--orders M] [--quick] [--no-pin] [--out DIR]``.

Fan-out of book updates over ``GET /v1/ws``: N WebSocket clients subscribe
to ``book:BTC-USD`` on one sprintd daemon; then M orders are placed, one at
a time, over HTTP (keep-alive). Each order is a bid at a new best price, so
every book message that follows it shows that price. For each order: the
time from its acknowledgement (the 201 read whole) to the moment the last of
the N subscribers has received a book message showing it; p50 and p99 over
the M orders, and the same from the acknowledgement to the first subscriber
and to the median one.

The clients are one process on the load CPUs (the daemon has its own): an
epoll loop over every socket, handshaking and subscribing with wsproto and
then only looking for the price's bytes in what arrives, so the client's
share of the figure is a recv per subscriber. A subscriber may see the
order before its acknowledgement is read (the book is published before the
answer is sent): its time is then negative, and the first subscriber's
figure says how often.
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import shutil
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from bench.common import facts, report
from bench.common.cli import add_run_options, positive, say, start
from bench.common.net import free_port, running
from bench.common.paths import BIN, REPO, shell
from bench.common.pinning import on_cpus, pinned, plan
from bench.common.plotting import DPI, figure
from bench.common.report import Target, finish

SYMBOL = "BTC-USD"
BASE_CENTS = 1_000_000  # bids from 10000.00 up, a cent at a time
WAIT_S = 30.0


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _subscribe(port: int) -> socket.socket:
    """A WebSocket subscribed to the book, its snapshot already read."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=f"127.0.0.1:{port}", target="/v1/ws")))
    accepted = False
    while not accepted:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("the daemon closed a handshake")
        ws.receive_data(data)
        accepted = any(isinstance(e, AcceptConnection) for e in ws.events())
    sock.sendall(ws.send(TextMessage(json.dumps({"subscribe": [f"book:{SYMBOL}"]}))))
    snapshot = b""
    while b'"seq":1,' not in snapshot:
        snapshot += sock.recv(65536)
    sock.setblocking(False)
    return sock


def _post(http: socket.socket, port: int, cents: int) -> None:
    price = f"{cents // 100}.{cents % 100:02d}"
    body = json.dumps({"symbol": SYMBOL, "side": "buy", "price": price, "qty": "0.001"})
    http.sendall(
        f"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode()
    )


def _one_order(
    http: socket.socket, port: int, subs: list[socket.socket], poller: Any, cents: int
) -> tuple[float, list[float]]:
    """Place one order; (ack time, each subscriber's receipt time), perf_counter seconds."""
    marker = f'"{cents // 100}.{cents % 100:02d}"'.encode()
    keep = len(marker) - 1
    tails = dict.fromkeys(range(len(subs)), b"")
    seen: dict[int, float] = {}
    by_fd = {sock.fileno(): i for i, sock in enumerate(subs)}
    http_fd = http.fileno()
    answer = b""
    acked = 0.0
    _post(http, port, cents)
    deadline = time.perf_counter() + WAIT_S
    while not acked or len(seen) < len(subs):
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{len(seen)}/{len(subs)} subscribers saw the order in {WAIT_S}s")
        for fd, _ in poller.poll(1.0):
            if fd == http_fd:
                answer += http.recv(65536)
                head, _, body = answer.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0] or 0)
                if len(body) >= length:
                    acked = time.perf_counter()
                    if not head.startswith(b"HTTP/1.1 201"):
                        raise RuntimeError(f"the order was answered {head[:40]!r}")
                continue
            i = by_fd[fd]
            try:
                data = subs[i].recv(1 << 20)
            except BlockingIOError:
                continue
            if not data:
                raise RuntimeError("the daemon closed a subscriber")
            if i not in seen:
                if marker in tails[i] + data:
                    seen[i] = time.perf_counter()
                else:
                    tails[i] = data[-keep:]
    return acked, [seen[i] for i in range(len(subs))]


def measure(port: int, subscribers: int, orders: int) -> dict[str, list[float]]:
    subs = [_subscribe(port) for _ in range(subscribers)]
    say(f"{subscribers} subscribers have the book snapshot")
    http = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    poller = select.epoll()
    poller.register(http.fileno(), select.EPOLLIN)
    for sock in subs:
        poller.register(sock.fileno(), select.EPOLLIN)
    figures: dict[str, list[float]] = {"last": [], "median": [], "first": []}
    try:
        for n in range(orders):
            acked, receipts = _one_order(http, port, subs, poller, BASE_CENTS + n)
            ms = sorted((t - acked) * 1e3 for t in receipts)
            figures["last"].append(ms[-1])
            figures["median"].append(ms[len(ms) // 2])
            figures["first"].append(ms[0])
    finally:
        poller.close()
        http.close()
        for sock in subs:
            sock.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wsfanout", description=__doc__)
    parser.add_argument("--subscribers", type=positive, default=1000)
    parser.add_argument("--orders", type=positive, default=500)
    add_run_options(parser, "wsfanout", quick="100 orders")
    args = parser.parse_args(argv)
    orders = 100 if args.quick else args.orders
    _, out = start("wsfanout", args.out)
    # A socket per subscriber: past the usual soft limit of 1024.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    pinning = plan(args.pin)
    port = free_port()
    data = out / "data"
    # A fresh book: a bid at a new best price must show in every book message.
    shutil.rmtree(data, ignore_errors=True)
    command = [f"{BIN}/sprintd", "run", "--tier", "pro", "--port", str(port)]
    argv_ = pinned([*command, "--data-dir", str(data)], pinning.server)
    # The other plugins' ports off the HTTP port + 1000/2000: chosen free.
    env = {"SPRINTD_ORDERS__ENTRY_PORT": "0", "SPRINTD_PRICES__FEED_PORT": "0"}
    log = out / "sprintd.log"
    say(f"sprintd on :{port}; {pinning.describe()}")
    interrupted = False
    figures: dict[str, list[float]] = {}
    try:
        with (
            running(argv_, port, (REPO,), log, ready_path="/readyz", env=env),
            on_cpus(pinning.tools),
        ):
            figures = measure(port, args.subscribers, orders)
    except KeyboardInterrupt:
        interrupted = True
    last = figures.get("last", [])
    p50 = statistics.median(last) if last else float("nan")
    p99 = _quantile(last, 0.99) if last else float("nan")
    targets = [
        Target(
            f"ack to the last of {args.subscribers} subscribers, p99",
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(last)} orders",
            None,  # issue 16 asks for the figures, with no bound
        )
    ]
    _write(out, args, orders, figures, targets, shell(command), pinning.describe())
    return finish(targets, out / "report.md", interrupted=interrupted, failed=not last)


def _write(
    out: Path,
    args: argparse.Namespace,
    orders: int,
    figures: dict[str, list[float]],
    targets: list[Target],
    command: str,
    pinning: str,
) -> None:
    rows = []
    for name, values in figures.items():
        if values:
            rows.append(
                f"| {name} subscriber | {statistics.median(values):.2f} | "
                f"{_quantile(values, 0.99):.2f} | {max(values):.2f} |"
            )
    if figures.get("last"):
        fig, ax = figure(8, 3.5)
        for name, values in figures.items():
            ax.plot(values, label=f"{name} subscriber", linewidth=0.8)
        ax.set_xlabel("order")
        ax.set_ylabel("ms after the acknowledgement")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "wsfanout.png", dpi=DPI)
    markdown = [
        "# Book updates fanned out over /v1/ws",
        "",
        f"`python -m bench.wsfanout --subscribers {args.subscribers} --orders {orders}`: "
        f"{args.subscribers} WebSocket subscribers to `book:{SYMBOL}`, {orders} orders placed "
        "one at a time; the time from each order's acknowledgement to its receipt.",
        "",
        *report.targets_table(targets),
        "",
        "| receipt | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|",
        *rows,
        "",
        "![per order](wsfanout.png)",
        "",
        f"Daemon: `{command}`; pinning: {pinning}.",
        "",
    ]
    results = {
        "args": vars(args) | {"out": str(args.out)},
        "figures": figures,
        "facts": facts.collect(("wsproto",)),
    }
    report.write(out, results, markdown)


if __name__ == "__main__":
    sys.exit(main())
