"""Workers > 1 with plugins that keep their state in one process (sprintd.server.owner).

Real daemons of two workers: the state lives in worker 0 whichever worker
takes a request, a write is read back on its connection through either
worker, the plugin's own port is the owner's alone, and with the owner
killed -9 a sibling refuses (503 with Retry-After) until the owner is back,
with nothing acknowledged lost. In process: a stuck owner is given up on
after FORWARD_TIMEOUT_S of trio's clock.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
from typing import Any

import msgpack
import trio
from websockets.sync.client import connect

from sprintd.server.owner import FORWARD_TIMEOUT_S, OwnerLink
from sprintd.testing import make_app

from .daemons import NO_ORDERS, PLUGINS_DIR, Daemon, DaemonFactory, RawConn, RawResponse, wait_for

LEDGER = {"SPRINTD_PLUGINS": '["sprintd_test_local"]', **NO_ORDERS}
ORDER = {"symbol": "BTC-USD", "side": "buy", "type": "limit", "price": "100", "qty": "1"}


def _ask(conn: RawConn, method: str, path: str, body: Any = None) -> RawResponse:
    data = b"" if body is None else json.dumps(body).encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(data)}\r\n"
    if body is not None:
        head += "Content-Type: application/json\r\n"
    conn.send(head.encode() + b"\r\n" + data)
    return conn.read_response()


def _worker_of(conn: RawConn) -> int:
    """The worker a connection reached (the one that answers its /health)."""
    worker: int = _ask(conn, "GET", "/health").json()["runtime"]["worker"]
    return worker


def _connection_to(served: Daemon, worker: int) -> RawConn:
    while True:
        conn = served.connect(timeout=15)
        if _worker_of(conn) == worker:
            return conn
        conn.close()


def _owner_pid(served: Daemon) -> int:
    workers = served.health()["workers"]
    pid: int = next(w["pid"] for w in workers if w["worker"] == 0)
    return pid


def _linked(served: Daemon) -> Daemon:
    """``served`` once its sibling is linked to the owner: asked on a connection
    to each worker, not on whichever the kernel picks (eight answers from the
    owner alone once passed for the sibling's while it was still unlinked)."""
    for worker in (0, 1):
        with _connection_to(served, worker) as conn:
            wait_for(lambda conn=conn: _ask(conn, "GET", "/readyz").status == 200)
    return served


def _ledger(daemon: DaemonFactory) -> Daemon:
    return _linked(daemon("--workers", "2", workers=2, env=LEDGER, pythonpath=[PLUGINS_DIR]))


def test_a_sibling_is_not_ready_until_linked_to_the_owner(daemon: DaemonFactory) -> None:
    served = _ledger(daemon)
    with _connection_to(served, 1) as conn:
        assert _ask(conn, "GET", "/readyz").status == 200
        os.kill(_owner_pid(served), signal.SIGKILL)
        unready = wait_for(lambda: (r := _ask(conn, "GET", "/readyz")).status == 503 and r)
        assert unready.json()["reason"] == "owner_unavailable"
        wait_for(lambda: _ask(conn, "GET", "/readyz").status == 200, timeout=20)


def test_the_state_lives_in_worker_0_whichever_worker_is_asked(daemon: DaemonFactory) -> None:
    served = _ledger(daemon)
    for entry in range(1, 31):
        # A new connection each: the kernel spreads them over both workers.
        answer = served.request("POST", "/test/ledger", b"{}")
        assert answer.status == 201
        assert answer.json() == {"entries": entry, "worker": 0}
    stats = served.get("/v1/stats").json()
    assert stats["routes"]["<forwarded>"]["count"] > 0, "no request came through worker 1"
    assert stats["routes"]["/test/ledger"]["count"] == 30


def test_a_write_is_read_back_on_its_connection_through_either_worker(
    daemon: DaemonFactory,
) -> None:
    served = _ledger(daemon)
    for worker in (1, 0, 1, 0):
        with _connection_to(served, worker) as conn:
            for _ in range(5):
                posted = _ask(conn, "POST", "/test/ledger", {})
                assert posted.status == 201, posted.body
                written = posted.json()["entries"]
                # The snapshot, from this worker's own fast path.
                assert _ask(conn, "GET", "/test/ledger/total").json() == {"entries": written}


def test_the_plugins_port_is_the_owners_alone(daemon: DaemonFactory) -> None:
    served = _ledger(daemon)
    port = int(re.findall(r"serving test-ledger on \S+:(\d+)", served.stderr())[0])
    for _ in range(12):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            payload = msgpack.packb(["how many"])
            sock.sendall(struct.pack(">I", len(payload)) + payload)
            length = struct.unpack(">I", sock.recv(4))[0]
            assert msgpack.unpackb(sock.recv(length)) == [0, 0]


def test_with_the_owner_killed_a_sibling_refuses_until_it_is_back(daemon: DaemonFactory) -> None:
    served = _ledger(daemon)
    with _connection_to(served, 1) as conn:
        assert _ask(conn, "POST", "/test/ledger", {}).status == 201
        os.kill(_owner_pid(served), signal.SIGKILL)
        refused = _ask(conn, "POST", "/test/ledger", {})
        assert refused.status == 503
        assert refused.json()["error"]["code"] == "owner_unavailable"
        assert refused.header("retry-after") == "1"
        # The supervisor restarts the owner; the sibling links up again. The
        # ledger is not durable: it starts again from nothing.
        answer = wait_for(
            lambda: (a := _ask(conn, "POST", "/test/ledger", {})).status == 201 and a, timeout=20
        )
        assert answer.json() == {"entries": 1, "worker": 0}


def test_no_acknowledged_order_is_lost_when_the_owner_is_killed(daemon: DaemonFactory) -> None:
    served = _linked(daemon("--workers", "2", workers=2))
    acknowledged = {}
    for _ in range(40):
        answer = served.request("POST", "/v1/orders", json.dumps(ORDER).encode())
        assert answer.status == 201, answer.body
        acknowledged[answer.json()["order_id"]] = answer.json()
    assert served.get("/v1/stats").json()["routes"]["<forwarded>"]["count"] > 0
    os.kill(_owner_pid(served), signal.SIGKILL)
    wait_for(lambda: served.request("GET", "/v1/orders/1", timeout=3).status == 200, timeout=30)
    _linked(served)
    for order_id, order in acknowledged.items():
        again = served.get(f"/v1/orders/{order_id}")
        assert again.status == 200
        assert again.json()["qty"] == order["qty"]
    # Reads of the book through either worker see every order again.
    for worker in (0, 1):
        with _connection_to(served, worker) as conn:
            book = _ask(conn, "GET", "/v1/book/BTC-USD").json()
            assert book["bids"] == [["100.00", "40.0000"]]


async def test_a_stuck_owner_is_given_up_on_in_time(autojump_clock: trio.abc.Clock) -> None:
    namespace = f"test-{os.getpid()}-stuck"
    # The owner's address accepts (the kernel does) but nothing ever answers.
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(f"\0sprintd-{namespace}-owner".encode())
    stuck.listen(4)
    link = OwnerLink(make_app([]), namespace)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.run)
            await trio.testing.wait_all_tasks_blocked()
            start = trio.current_time()
            answer = link.forward(b"POST", b"/x", [], b"", True)
            assert not isinstance(answer, bytes)
            response = await answer
            assert trio.current_time() - start == FORWARD_TIMEOUT_S
            assert response.startswith(b"HTTP/1.1 503 ")
            assert b"owner_unavailable" in response
            nursery.cancel_scope.cancel()
    finally:
        stuck.close()


def test_a_sibling_killed_mid_stream_loses_nothing_acknowledged(daemon: DaemonFactory) -> None:
    served = _linked(daemon("--workers", "2", workers=2))
    sibling = next(w["pid"] for w in served.health()["workers"] if w["worker"] == 1)
    acknowledged = set()
    with _connection_to(served, 1) as conn:
        for _ in range(20):
            answer = _ask(conn, "POST", "/v1/orders", ORDER)
            assert answer.status == 201
            acknowledged.add(answer.json()["order_id"])
        # Mid-stream: a request on its way when the sibling dies.
        data = json.dumps(ORDER).encode()
        conn.send(
            b"POST /v1/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(data), data)
        )
        os.kill(sibling, signal.SIGKILL)
    # The owner never stopped: every acknowledged order is there, and the
    # restarted sibling serves again.
    for order_id in acknowledged:
        assert served.get(f"/v1/orders/{order_id}").status == 200
    wait_for(
        lambda: (
            sibling not in [w.get("pid") for w in served.health()["workers"]]
            and served.health()["checks"]["workers"][0]["status"] == "pass"
        ),
        timeout=20,
    )
    _linked(served)
    book = served.get("/v1/book/BTC-USD").json()
    resting = float(book["bids"][0][1])
    assert resting in (20.0, 21.0), book  # the one under way: applied or not, never twice


def test_a_websocket_through_either_worker_is_the_owners_feed(daemon: DaemonFactory) -> None:
    served = _linked(daemon("--workers", "2", workers=2))
    forwarded = _forwarded(served)
    for n in range(8):
        # A new connection each: the kernel spreads them over both workers.
        with connect(f"ws://{served.host}:{served.port}/v1/ws", proxy=None) as ws:
            ws.send(json.dumps({"subscribe": ["book:BTC-USD"]}))
            first = json.loads(ws.recv(timeout=10))
            assert first["seq"] == 1
            assert first["data"] == served.get("/v1/book/BTC-USD").json()
            price = f"{100 + n}.00"
            order = ORDER | {"price": price}
            assert served.request("POST", "/v1/orders", json.dumps(order).encode()).status == 201
            change = json.loads(ws.recv(timeout=10))
            assert change["seq"] == 2
            assert change["data"]["bids"][0][0] == price
    assert _forwarded(served) > forwarded, "no WebSocket came through worker 1"


def _forwarded(served: Daemon) -> int:
    """Requests the daemon's workers have forwarded to the owner so far."""
    routes = served.get("/v1/stats").json()["routes"]
    count: int = routes.get("<forwarded>", {}).get("count", 0)
    return count
