"""Execution reports and compact sessions on a real daemon (``plugins/orders/reports.py``)."""

from __future__ import annotations

import signal
import socket
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgpack
import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from sprintd import Conn, encode_frame
from sprintd.plugins.orders.api import OrdersAPI
from sprintd.plugins.orders.client import EntryClient, EntryError
from sprintd.plugins.orders.compact import (
    ERR,
    GET,
    NEW,
    OK,
    REPLIES,
    REPORTS,
    SESSION_ERROR,
    STATUS_CODES,
    VERSION,
    CompactHandler,
)
from sprintd.plugins.orders.config import OrdersSection
from sprintd.plugins.orders.events import BUY, SELL
from sprintd.plugins.orders.plugin import _PriceTime
from sprintd.plugins.orders.reports import Session
from sprintd.plugins.orders.service import OrderService
from sprintd.testing import make_app

from .daemons import Daemon, DaemonFactory, wait_for
from .test_orders import ENTRY, _entry, _replayed_hash, _state

BTC = 0  # the default symbols' first
PRICE = 6_400_000


def _session(served: Daemon, account: str, after_seq: int | None = None) -> EntryClient:
    client = _entry(served)
    client.hello(account, after_seq)
    return client


def _rest(client: EntryClient, count: int, qty: int = 10) -> list[int]:
    """Rest ``count`` sells; their ids."""
    replies = client.request_compact([[NEW, BTC, SELL, PRICE, qty]] * count)
    assert all(r[0] == OK and r[2] == STATUS_CODES["new"] for r in replies), replies
    return [r[1] for r in replies]


def _reports(client: EntryClient, count: int) -> list[tuple[int, list[Any]]]:
    """The session's reports once ``count`` have arrived."""

    def arrived() -> bool:
        client.poll(0.05)
        return len(client.reports) >= count

    wait_for(arrived)
    return client.reports


@pytest.fixture
def served(daemon: DaemonFactory) -> Daemon:
    return daemon()


def test_a_fill_is_pushed_to_the_owner_of_the_resting_order(served: Daemon) -> None:
    with _session(served, "maker") as maker, _session(served, "taker") as taker:
        ids = _rest(maker, 3)
        # One taker fills the first maker and half the second, in one command;
        # then another fills the rest.
        [reply] = taker.request_compact([[NEW, BTC, BUY, PRICE, 15]])
        assert reply[:5] == [OK, reply[1], STATUS_CODES["filled"], 15, 0]
        [reply] = taker.request_compact([[NEW, BTC, BUY, PRICE, 15]])
        assert reply[2] == STATUS_CODES["filled"]
        reports = _reports(maker, 4)
        # [symbol, order_id, trade_id, price, qty, remaining], numbered from 1.
        assert reports == [
            (1, [BTC, ids[0], 1, PRICE, 10, 0]),
            (2, [BTC, ids[1], 2, PRICE, 5, 5]),
            (3, [BTC, ids[1], 3, PRICE, 5, 0]),
            (4, [BTC, ids[2], 4, PRICE, 10, 0]),
        ]
        assert taker.reports == []  # a taker's fills are in its reply


def test_sequence_numbers_are_gapless_for_every_session_of_the_account(served: Daemon) -> None:
    with _session(served, "desk") as first, _session(served, "desk") as second:
        ids = _rest(first, 40, qty=1)
        with _entry(served) as other:  # the map protocol trades too
            body = {"symbol": "BTC-USD", "side": "buy", "price": "64000", "qty": "0.001"}
            for _ in range(4):
                other.request([["new", body]])
        for session in (first, second):
            reports = _reports(session, 40)
            assert [seq for seq, _ in reports] == list(range(1, 41))
            assert [report[1] for _, report in reports] == ids


def test_a_reconnecting_session_replays_what_it_missed(daemon: DaemonFactory) -> None:
    served = daemon(env={"SPRINTD_ORDERS__REPORT_RING": "3"})
    with _session(served, "maker") as maker:
        ids = _rest(maker, 5, qty=1)
        with _session(served, "taker") as taker:
            taker.request_compact([[NEW, BTC, BUY, PRICE, 1]])
            assert _reports(maker, 1)[0][0] == 1
    # The maker is gone while four more fill.
    with _session(served, "taker") as taker:
        taker.request_compact([[NEW, BTC, BUY, PRICE, 1]] * 4)
    with _session(served, "maker", after_seq=2) as maker:
        assert maker.last_seq == 5
        assert [(seq, report[1]) for seq, report in _reports(maker, 3)] == [
            (3, ids[2]),
            (4, ids[3]),
            (5, ids[4]),
        ]
    with _entry(served) as maker:
        # Report 2 has left the ring of 3; 6 has not happened.
        for after, code in ((1, "replay_unavailable"), (6, "bad_sequence")):
            with pytest.raises(EntryError, match=code):
                maker.hello("maker", after)


def test_a_session_that_never_reads_does_not_stall_order_entry(daemon: DaemonFactory) -> None:
    served = daemon(env={"SPRINTD_ORDERS__REPORT_QUEUE": "1024"})
    found = ENTRY.search(served.stderr())
    assert found is not None
    deaf = socket.socket()
    deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before the window opens
    deaf.settimeout(10)
    deaf.connect((found.group(1), int(found.group(2))))
    count = 3000
    deaf.sendall(_frame([VERSION, [0, "deaf"]]))
    assert _raw_frames(deaf, 1)[0][1][0] == OK
    for _ in range(count // 500):
        deaf.sendall(_frame([VERSION, *[[NEW, BTC, SELL, PRICE, 1]] * 500]))
        assert all(r[0] == OK for r in _raw_frames(deaf, 1)[0][1:])
    # From here the deaf session reads nothing: every fill pushes a report.
    with _session(served, "taker") as taker:
        for _ in range(count // 10):
            replies = taker.request_compact([[NEW, BTC, BUY, PRICE, 1]] * 10)
            assert all(r[0] == OK and r[2] == STATUS_CODES["filled"] for r in replies)
    # The deaf session was closed: it reads what was sent, then the end (a
    # session left open would time the read out instead).
    while deaf.recv(65536):
        pass
    deaf.close()
    assert _state(served)["state_hash"]  # and the daemon serves on


def _raw_frames(sock: socket.socket, count: int) -> list[Any]:
    buf = b""
    out: list[Any] = []
    while len(out) < count:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
        while len(buf) >= 4 and len(buf) >= 4 + struct.unpack(">I", buf[:4])[0]:
            (length,) = struct.unpack(">I", buf[:4])
            out.append(msgpack.unpackb(buf[4 : 4 + length]))
            buf = buf[4 + length :]
    return out


def _frame(value: Any) -> bytes:
    payload = msgpack.packb(value)
    return struct.pack(">I", len(payload)) + payload


def test_malformed_compact_frames_get_errors_and_change_nothing(served: Daemon) -> None:
    before = _state(served)
    with _entry(served) as client:
        sock = client.sock
        # Before hello: commands are refused, in the compact shape.
        sock.sendall(_frame([VERSION, [NEW, BTC, BUY, PRICE, 1]]))
        assert _raw_frames(sock, 1) == [
            [REPLIES, [ERR, "hello_required", "a session begins with hello"]]
        ]
        sock.sendall(_frame([VERSION, [0, "acct"]]))
        assert _raw_frames(sock, 1)[0][1][0] == OK
        sock.sendall(
            _frame([VERSION, "new", [NEW], [NEW, 7, BUY, 1, 1], [NEW, BTC, 2, 1, 1], [99]])
            + _frame([VERSION, [NEW, BTC, BUY, 0, 1], [NEW, BTC, BUY, 1, 10**10]])
            + _frame([3, [NEW, BTC, BUY, PRICE, 1]])
            + struct.pack(">I", 3)
            + b"\xc1\xc1\xc1"  # not msgpack
            + _frame({"a": 1})  # msgpack, not an array
        )
        first, second, version, garbage, mapping = _raw_frames(sock, 5)
        assert [r[1] for r in first[1:]] == [
            "bad_command",
            "bad_command",
            "unknown_symbol",
            "invalid_side",
            "bad_command",
        ]
        assert [r[1] for r in second[1:]] == ["invalid_price", "invalid_qty"]
        assert version[1][1] == "unsupported_version"
        assert garbage[0] == REPLIES and garbage[1][1] == "bad_frame"
        assert mapping[0] == REPLIES and mapping[1][1] == "bad_frame"
        # A length that cannot be a frame ends the session, with the reason.
        sock.sendall(struct.pack(">I", 0))
        [fatal] = _raw_frames(sock, 1)
        assert fatal[:2] == [SESSION_ERROR, "bad_length"]
        assert sock.recv(1) == b""
    after = _state(served)
    assert after["state_hash"] == before["state_hash"]
    assert after["sequences"] == before["sequences"]


def test_both_protocols_share_a_connection_replies_in_order(served: Daemon) -> None:
    body = {"symbol": "BTC-USD", "side": "buy", "price": "1.00", "qty": "0.001"}
    with _entry(served) as client:
        sock = client.sock
        sock.sendall(_frame([VERSION, [0, "both"]]))
        assert _raw_frames(sock, 1)[0][1][0] == OK
        # One read: map, compact, map, compact.
        sock.sendall(
            _frame([["new", body]])
            + _frame([VERSION, [NEW, BTC, BUY, 100, 10]])
            + _frame([["get", 1]])
            + _frame([VERSION, [GET, 2]])
        )
        first, second, third, fourth = _raw_frames(sock, 4)
    assert first[0][0] == "ok" and first[0][1]["order_id"] == 1
    assert second == [REPLIES, [OK, 2, STATUS_CODES["new"], 0, 10, []]]
    assert third[0][0] == "ok" and third[0][1]["order_id"] == 1
    assert fourth == [REPLIES, [OK, 2, STATUS_CODES["new"], 0, 10, []]]


def test_acknowledged_compact_orders_and_fills_survive_kill_9(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = daemon("--tier", "enterprise", data_dir=data_dir)
    sent = [
        [NEW, BTC, BUY if i % 2 else SELL, PRICE + i % 3, 2, 0, False, 0, f"k{i}"]
        for i in range(300)
    ]
    with _session(first, "maker") as maker, _session(first, "taker") as taker:
        ids = _rest(maker, 20, qty=2)
        taker.request_compact([[NEW, BTC, BUY, PRICE, 3]] * 5)
        reported = _reports(maker, 10)
        epoch = maker.epoch
        states = {i: maker.request_compact([[GET, i]])[0] for i in ids}
        # Pipelined, and killed with some answered and the rest under way.
        taker.sock.sendall(b"".join(encode_frame([VERSION, command]) for command in sent))
        acked = {}
        for command in sent[:120]:
            [reply] = taker.receive()
            assert reply[0] == OK
            acked[command[-1]] = reply[1]
        first.process.send_signal(signal.SIGKILL)
    first.process.wait()
    second = daemon("--tier", "enterprise", data_dir=data_dir)
    with _session(second, "maker") as maker, _session(second, "taker") as taker:
        # A new run: a new epoch, its reports numbered from 1 again.
        assert maker.epoch != epoch and maker.last_seq == 0
        # The orders as they were when the fills were reported: a later taker
        # of the pipelined ones may have filled them more since.
        for order_id, state in states.items():
            now = maker.request_compact([[GET, order_id]])[0]
            assert now[3] >= state[3] and now[1] == order_id
        for _, report in reported:
            assert maker.request_compact([[GET, report[1]]])[0][3] > 0
        # Every acknowledged order is there; resending enters only the rest.
        taker.sock.sendall(b"".join(encode_frame([VERSION, command]) for command in sent))
        replies = [taker.receive()[0] for _ in sent]
    ids_now = {command[-1]: reply[1] for command, reply in zip(sent, replies, strict=True)}
    assert all(ids_now[c] == o for c, o in acked.items())
    assert len(set(ids_now.values())) == len(sent)
    live_hash = _state(second)["state_hash"]
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert _replayed_hash(data_dir) == live_hash


# --- in process: reports wait for their own command's record ----------------------


class _HeldJournal:
    """A journal whose appends complete when the test says (the journal is
    not what is under test here: the order of reports and durability is)."""

    unavailable = None
    probe_interval = 1.0

    def __init__(self) -> None:
        self.held: list[trio.Event] = []

    async def append(self, stream: str, payload: bytes) -> None:
        await self.append_many(stream, [payload])

    async def append_many(self, stream: str, payloads: list[bytes]) -> None:
        done = trio.Event()
        self.held.append(done)
        await done.wait()


def _api(journal: _HeldJournal) -> OrdersAPI:
    section = OrdersSection()
    service = OrderService(section, {"price_time": _PriceTime(section.done_capacity, 0)})
    api = OrdersAPI(make_app([]), service, journal)
    api.books = {s: SimpleNamespace(publish=lambda body: None) for s in service.engines}  # type: ignore[misc]
    return api


def _received(sock: socket.socket) -> list[Any]:
    """The report frames the socket holds now, decoded."""
    try:
        data = sock.recv(1 << 16)
    except BlockingIOError:
        return []
    frames = []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        frames.append(msgpack.unpackb(data[4 : 4 + length]))
        data = data[4 + length :]
    return frames


async def test_a_fill_is_reported_only_once_its_own_command_is_journaled() -> None:
    journal = _HeldJournal()
    api = _api(journal)
    handler = CompactHandler(api.service)
    maker_end, maker_peer = socket.socketpair()
    taker_end, _taker_peer = socket.socketpair()
    for end in (maker_end, maker_peer, taker_end):
        end.setblocking(False)
    maker = Session(Conn(maker_end, bytearray()), api.reports, 1 << 20)
    taker = Session(Conn(taker_end, bytearray()), api.reports, 1 << 20)
    maker.hello([0, "maker"])
    taker.hello([0, "taker"])

    async def batch(session: Session, *commands: list[Any]) -> None:
        payloads: list[bytes] = []
        handler.frame(session, [VERSION, *commands], payloads, True)
        await api.journaled(payloads)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(batch, maker, [NEW, BTC, SELL, PRICE, 1], [NEW, BTC, SELL, PRICE, 1])
        await wait_all_tasks_blocked()
        journal.held[0].set()
        await wait_all_tasks_blocked()
        # A takes the first, B the second; neither is durable yet.
        nursery.start_soon(batch, taker, [NEW, BTC, BUY, PRICE, 1])
        await wait_all_tasks_blocked()
        nursery.start_soon(batch, taker, [NEW, BTC, BUY, PRICE, 1])
        await wait_all_tasks_blocked()
        # A batch with nothing to journal (a get) reports nothing of theirs.
        await batch(taker, [GET, 1])
        assert _received(maker_peer) == []
        journal.held[1].set()  # A is durable (and B is not)
        await wait_all_tasks_blocked()
        assert _received(maker_peer) == [[REPORTS, 1, [BTC, 1, 1, PRICE, 1, 0]]]
        journal.held[2].set()
        await wait_all_tasks_blocked()
        assert _received(maker_peer) == [[REPORTS, 2, [BTC, 2, 2, PRICE, 1, 0]]]
    for end in (maker_end, maker_peer, taker_end, _taker_peer):
        end.close()
