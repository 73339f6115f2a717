"""The orders plugin end to end: HTTP API, the order-entry port, and kill -9."""

from __future__ import annotations

import json
import re
import signal
import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import pytest

from sprintd.journal import Journal
from sprintd.plugins.orders.client import EntryClient
from sprintd.plugins.orders.config import OrdersSection
from sprintd.plugins.orders.plugin import _PriceTime
from sprintd.plugins.orders.service import OrderService

from .daemons import Daemon, DaemonFactory, RawConn, wait_for

ENTRY = re.compile(r"serving orders-entry on (\S+):(\d+)")
JSON_HEADERS = {"Content-Type": "application/json"}


def _post(served: Daemon, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    result = served.request("POST", "/v1/orders", json.dumps(body).encode(), JSON_HEADERS)
    return result.status, result.json()


def _order(side: str, price: str, qty: str, **extra: Any) -> dict[str, Any]:
    return {"symbol": "BTC-USD", "side": side, "price": price, "qty": qty, **extra}


def _state(served: Daemon) -> dict[str, Any]:
    check: dict[str, Any] = served.health()["checks"]["orders"][0]
    return check


def _entry(served: Daemon) -> EntryClient:
    found = ENTRY.search(served.stderr())
    assert found is not None, served.stderr()
    return EntryClient(found.group(1), int(found.group(2)))


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon()


# --- HTTP ----------------------------------------------------------------------


def test_crossing_orders_trade_at_the_makers_price(served: Daemon) -> None:
    status, maker = _post(served, _order("sell", "50000.00", "0.5"))
    assert status == 201
    assert maker["status"] == "new"
    status, taker = _post(served, _order("buy", "50001", "0.2"))
    assert status == 201
    assert taker["status"] == "filled"
    [fill] = taker["fills"]
    assert fill["price"] == "50000.00"
    assert fill["qty"] == "0.2000"
    assert (fill["maker_order_id"], fill["taker_order_id"]) == (
        maker["order_id"],
        taker["order_id"],
    )
    book = served.get("/v1/book/BTC-USD").json()
    assert ["50000.00", "0.3000"] in book["asks"]
    trades = served.get("/v1/trades/BTC-USD?limit=1").json()["trades"]
    assert trades[0]["trade_id"] == fill["trade_id"]
    assert served.get(f"/v1/orders/{maker['order_id']}").json()["status"] == "partially_filled"


def test_the_book_snapshot_and_the_depth_query(served: Daemon) -> None:
    for price in ("40000.00", "40001.00", "40002.00"):
        assert _post(served, _order("buy", price, "0.1"))[0] == 201
    full = served.get("/v1/book/BTC-USD").json()
    top = served.get("/v1/book/BTC-USD?depth=1").json()
    assert full["bids"][0] == ["40002.00", "0.1000"]
    assert top["bids"] == [["40002.00", "0.1000"]]
    assert top["sequence"] == full["sequence"] > 0


def _book_bids(conn: RawConn) -> set[str]:
    conn.send(b"GET /v1/book/BTC-USD HTTP/1.1\r\nHost: t\r\n\r\n")
    response = conn.read_response()
    assert response.status == 200, response.body
    return {price for price, _ in response.json()["bids"]}


def test_an_acknowledged_order_is_in_the_book_on_any_connection(daemon: DaemonFactory) -> None:
    # Many clients at once, fsync per batch, so that the journal wakes
    # several answers together: each, as soon as it has its answer, finds
    # its order in the book's snapshot on its own connection and on another.
    served = daemon("--tier", "enterprise", env={"SPRINTD_ORDERS__BOOK_DEPTH": "10000"})
    clients, orders = 12, 25
    missing: list[str] = []

    def client(number: int) -> None:
        with served.connect() as own, served.connect() as other:
            for n in range(orders):
                price = f"{10_000 + number * orders + n}.00"
                body = json.dumps(_order("buy", price, "0.01")).encode()
                own.send(
                    b"POST /v1/orders HTTP/1.1\r\nHost: t\r\nContent-Type: application/json"
                    b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
                assert own.read_response().status == 201
                if price not in _book_bids(own):
                    missing.append(f"{price} on its own connection")
                if price not in _book_bids(other):
                    missing.append(f"{price} on another connection")

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    assert missing == []
    # And the order-entry port's batches, read over HTTP.
    with _entry(served) as entry, served.connect() as conn:
        for n in range(orders):
            prices = [f"{20_000 + n * 4 + i}.00" for i in range(4)]
            entry.send_many([[["new", _order("buy", price, "0.01")] for price in prices]])
            assert [reply[0] for reply in entry.receive()] == ["ok"] * 4
            assert set(prices) <= _book_bids(conn)


def test_cancel_replace_and_their_errors(served: Daemon) -> None:
    _, order = _post(served, _order("buy", "30000.00", "1"))
    oid = order["order_id"]
    patched = served.request("PATCH", f"/v1/orders/{oid}", b'{"qty":"0.5"}', JSON_HEADERS)
    assert patched.status == 200
    assert patched.json()["remaining_qty"] == "0.5000"
    assert served.request("DELETE", f"/v1/orders/{oid}").json()["status"] == "cancelled"
    assert served.request("DELETE", f"/v1/orders/{oid}").status == 409
    assert served.request("DELETE", "/v1/orders/987654").status == 404
    assert served.request("DELETE", "/v1/orders/abc").status == 404


def test_a_client_order_id_is_entered_once(served: Daemon) -> None:
    body = _order("buy", "20000.00", "0.3", client_order_id="once-1", account="alice")
    status, first = _post(served, body)
    again, second = _post(served, body)
    assert (status, again) == (201, 200)
    assert first["order_id"] == second["order_id"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (_order("buy", "1.00", "1") | {"symbol": "DOGE"}, "unknown_symbol"),
        (_order("hold", "1.00", "1"), "invalid_side"),
        (_order("buy", "1.00", "0"), "invalid_qty"),
        (_order("buy", "1.00", "-1"), "invalid_qty"),
        (_order("buy", "1.001", "1"), "invalid_price"),
        (_order("buy", "1.00", "0.00001"), "invalid_qty"),
        ({"symbol": "BTC-USD", "side": "buy", "qty": "1"}, "invalid_price"),
        (_order("buy", "1.00", "1", tif="GTD"), "invalid_tif"),
        (_order("buy", "1.00", "1", colour="red"), "unknown_field"),
    ],
)
def test_invalid_orders_change_nothing(served: Daemon, body: dict[str, Any], code: str) -> None:
    before = _state(served)
    status, answer = _post(served, body)
    assert status == 400
    assert answer["error"]["code"] == code
    assert _state(served) == before


def test_garbage_json_is_a_400(served: Daemon) -> None:
    before = _state(served)
    result = served.request("POST", "/v1/orders", b"{nope", JSON_HEADERS)
    assert result.status == 400
    assert result.json()["error"]["code"] == "invalid_json"
    assert _state(served) == before


def test_msgpack_is_answered_in_kind(served: Daemon) -> None:
    body = msgpack.packb(_order("sell", "90000.00", "0.01"))
    result = served.request("POST", "/v1/orders", body, {"Content-Type": "application/msgpack"})
    assert result.status == 201
    assert result.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(result.body)["status"] == "new"


# --- the order-entry port --------------------------------------------------------


def test_a_frame_of_many_commands_is_answered_in_order(served: Daemon) -> None:
    with _entry(served) as client:
        replies = client.request(
            [
                ["new", _order("sell", "60000.00", "0.1")],
                ["new", _order("buy", "60000.00", "0.1")],
                ["cancel", 10**9],
                ["nope"],
            ]
        )
    assert [r[0] for r in replies] == ["ok", "ok", "error", "error"]
    assert replies[1][1]["status"] == "filled"
    assert replies[2][1] == "unknown_order"
    assert replies[3][1] == "bad_command"


def test_pipelined_frames_keep_their_order(served: Daemon) -> None:
    with _entry(served) as client:
        frames = [
            [["new", _order("buy", "1000.00", "0.1", client_order_id=f"p{i}")]] for i in range(50)
        ]
        client.send_many(frames)
        ids = [client.receive()[0][1]["order_id"] for _ in frames]
    assert ids == sorted(ids)
    assert len(set(ids)) == 50


def test_a_malformed_frame_gets_an_error_and_the_connection_survives(served: Daemon) -> None:
    with _entry(served) as client:
        client.sock.sendall(struct.pack(">I", 1) + b"\xc1")
        assert client.receive()[:2] == ["error", "bad_frame"]
        [reply] = client.request([["new", _order("buy", "1000.00", "0.1")]])
        assert reply[0] == "ok"


def test_a_frame_length_that_cannot_be_is_closed_with_a_reason(served: Daemon) -> None:
    found = ENTRY.search(served.stderr())
    assert found is not None
    with socket.create_connection((found.group(1), int(found.group(2))), timeout=5) as sock:
        sock.sendall(struct.pack(">I", 1 << 30))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    (length,) = struct.unpack(">I", data[:4])
    assert msgpack.unpackb(data[4 : 4 + length])[:2] == ["error", "bad_length"]


# --- kill -9 ------------------------------------------------------------------------


def _replayed_hash(data_dir: Path) -> str:
    """The state an uninterrupted run of the journal's commands reaches."""
    section = OrdersSection()
    kind = _PriceTime(section.done_capacity, reserve=0)
    service = OrderService(section, {"price_time": kind})
    journal = Journal(data_dir / "journal", fsync="os")
    journal.open()
    try:
        for _, _, payload in journal.replay(streams={"orders"}):
            service.replay(payload)
    finally:
        journal.close()
    return service.state_hash()


@pytest.mark.parametrize("tier", ["free", "enterprise"])
def test_acknowledged_orders_survive_kill_9_exactly_once(
    daemon: DaemonFactory, tmp_path: Path, tier: str
) -> None:
    data_dir = tmp_path / "orders-data"
    first = daemon("--tier", tier, data_dir=data_dir)
    sent = [
        _order("buy" if i % 2 else "sell", f"{50000 + i % 7}.00", "0.01", client_order_id=f"k{i}")
        for i in range(400)
    ]
    acked: dict[str, int] = {}
    with _entry(first) as client:
        client.send_many([[["new", body]] for body in sent])
        for body in sent[:150]:
            [reply] = client.receive()
            assert reply[0] == "ok"
            acked[body["client_order_id"]] = reply[1]["order_id"]
        first.process.send_signal(signal.SIGKILL)
    first.process.wait()

    second = daemon("--tier", tier, data_dir=data_dir)
    # Every acknowledged order is there, under the id it was given.
    for client_id, order_id in acked.items():
        assert second.get(f"/v1/orders/{order_id}").status == 200, client_id
    # Resending everything enters only what never arrived: nothing twice.
    with _entry(second) as client:
        client.send_many([[["new", body]] for body in sent])
        replies = [client.receive()[0] for _ in sent]
    ids = {
        body["client_order_id"]: reply[1]["order_id"]
        for body, reply in zip(sent, replies, strict=True)
    }
    assert all(ids[c] == o for c, o in acked.items())
    assert len(set(ids.values())) == len(sent)
    live_hash = _state(second)["state_hash"]
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert _replayed_hash(data_dir) == live_hash


def test_a_restart_resumes_from_a_snapshot_and_its_tail(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "snap-data"
    env = {"SPRINTD_JOURNAL__CHECKPOINT_RECORDS": "5"}
    first = daemon(data_dir=data_dir, env=env)
    for i in range(23):
        assert _post(first, _order("buy" if i % 3 else "sell", "100.00", "0.01"))[0] == 201
    before = _state(first)["state_hash"]
    # The journal checkpoints in the background once 5 records follow the
    # last checkpoint: the last one is at seq 19 or later.
    wait_for(lambda: first.health()["checks"]["journal"][0]["last_checkpoint_seq"] >= 19)
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    second = daemon(data_dir=data_dir, env=env)
    replay = re.search(r"snapshot at seq (\d+), (\d+) records replayed", second.stderr())
    assert replay is not None, second.stderr()
    assert int(replay.group(1)) >= 19
    assert int(replay.group(2)) <= 4
    assert _state(second)["state_hash"] == before
