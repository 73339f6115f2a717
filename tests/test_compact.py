"""The compact protocol's codec (``plugins/orders/compact.py``), in process.

The map protocol (``commands.Parser``) is the reference: a compact command
must mean the same order, and the same commands sent either way must reach
the same books.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprintd import Conn, FrameDecoder, decode_payload, encode_frame
from sprintd.plugins.orders.commands import InvalidOrder, Parser
from sprintd.plugins.orders.compact import (
    CANCEL,
    ERR,
    GET,
    MASS_CANCEL,
    NEW,
    OK,
    REPLACE,
    REPLIES,
    STATUS_CODES,
    VERSION,
    CompactHandler,
    is_compact,
    parse_new,
)
from sprintd.plugins.orders.config import OrdersSection
from sprintd.plugins.orders.events import (
    MAX_PRICE,
    MAX_QTY,
    SIDE_NAMES,
    STP_NAMES,
    TIF_NAMES,
)
from sprintd.plugins.orders.plugin import _PriceTime
from sprintd.plugins.orders.reports import ReportHub, Session
from sprintd.plugins.orders.service import OrderService

SYMBOLS = ["BTC-USD", "ETH-USD"]


def _service() -> OrderService:
    section = OrdersSection()
    return OrderService(section, {"price_time": _PriceTime(section.done_capacity, 0)}, lambda: 0.0)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    left.setblocking(False)
    yield left, right
    left.close()
    right.close()


def _session(service: OrderService, sock: socket.socket, account: str) -> Session:
    session = Session(Conn(sock, bytearray()), ReportHub(service, 16), 1 << 20)
    assert session.hello([0, account])[0] == OK
    return session


# --- the codec --------------------------------------------------------------

ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)
values = st.recursive(
    st.none() | st.booleans() | ints | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)
new_fields = st.tuples(
    st.integers(0, 1),  # symbol index
    st.integers(0, 1),  # side
    st.none() | st.integers(1, MAX_PRICE),  # price: None is a market order
    st.integers(1, MAX_QTY),
    st.integers(0, 2),  # tif
    st.booleans(),  # post_only
    st.integers(0, 3),  # stp
    st.none() | st.text(max_size=64),  # client_order_id
    st.text(max_size=64),  # account
)


@given(st.lists(st.lists(values, max_size=6), max_size=5))
def test_compact_frames_round_trip_and_are_told_from_map_frames(
    commands: list[list[Any]],
) -> None:
    frame = [VERSION, *commands]
    decoder = FrameDecoder()
    decoder.feed(encode_frame(frame) + encode_frame(commands))
    compact, old = [decode_payload(p) for p in decoder.frames()]
    assert compact == frame
    assert is_compact(compact)
    # A map frame begins with a command (an array), or is empty.
    assert old == commands
    assert not is_compact(old)


@given(new_fields)
def test_a_compact_new_is_the_order_its_map_body_is(fields: tuple[Any, ...]) -> None:
    index, side, price, qty, tif, post_only, stp, client_id, account = fields
    symbol = SYMBOLS[index]
    parser = Parser(_SPECS)
    spec = _SPECS[symbol]
    body: dict[str, Any] = {
        "symbol": symbol,
        "side": SIDE_NAMES[side],
        "type": "market" if price is None else "limit",
        "qty": str(spec.from_lots(qty)),
        "tif": TIF_NAMES[tif],
        "post_only": post_only,
        "stp": STP_NAMES[stp],
        "account": account,
        "client_order_id": client_id,
    }
    if price is not None:
        body["price"] = str(spec.from_ticks(price))
    compact = [NEW, index, side, price, qty, tif, post_only, stp, client_id]
    assert parse_new(compact, SYMBOLS, account) == parser.new(body)


_SPECS = _service().specs


@given(
    st.lists(values, min_size=1, max_size=9).filter(lambda c: c[0] == NEW or len(c) > 4),
)
def test_a_compact_new_the_map_parser_would_refuse_is_refused(command: list[Any]) -> None:
    """Whatever the fields, parse_new builds a valid command or refuses it."""
    command[0] = NEW
    try:
        parsed = parse_new(command, SYMBOLS, "a")
    except InvalidOrder as exc:
        assert exc.status == 400
        return
    # Accepted: every field is in its domain, as the map parser's checks.
    _, _, symbol, side, _, price, qty, tif, post_only, _, stp, client_id, _ = parsed
    assert symbol in SYMBOLS and side in (0, 1) and tif in (0, 1, 2) and stp in (0, 1, 2, 3)
    assert price is None or 0 < price <= MAX_PRICE
    assert 0 < qty <= MAX_QTY and type(post_only) is bool
    assert client_id is None or isinstance(client_id, str)


# --- the two protocols, one book ---------------------------------------------

orders = st.lists(
    st.tuples(
        st.sampled_from(["new", "new", "new", "cancel", "replace", "get"]),
        st.integers(0, 1),  # side
        st.integers(9_990, 10_010),  # price in ticks: many cross
        st.integers(1, 50),  # qty in lots
        st.integers(1, 40),  # an order id to cancel, replace or get
    ),
    max_size=60,
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(orders)
def test_both_protocols_reach_the_same_books(
    pair: tuple[socket.socket, socket.socket], script: list[tuple[str, int, int, int, int]]
) -> None:
    old, new = _service(), _service()
    parser = Parser(old.specs)
    session = _session(new, pair[0], "acct")
    handler = CompactHandler(new)
    spec = old.specs["BTC-USD"]
    payloads: list[bytes] = []
    for op, side, price, qty, target in script:
        if op == "new":
            body = {
                "symbol": "BTC-USD",
                "side": SIDE_NAMES[side],
                "price": str(spec.from_ticks(price)),
                "qty": str(spec.from_lots(qty)),
                "account": "acct",
            }
            expected: Any = old.submit(parser.new(body))[1].state
            command = [NEW, 0, side, price, qty]
        else:
            try:
                if op == "cancel":
                    expected = old.cancel(target)[1].state
                elif op == "replace":
                    symbol = old.live_symbol(target)
                    expected = old.replace(target, symbol, price, qty)[1].state
                else:
                    expected = old.find(target)[1]
            except InvalidOrder as exc:
                expected = exc.code
            command = {
                "cancel": [CANCEL, target],
                "replace": [REPLACE, target, price, qty],
                "get": [GET, target],
            }[op]
        [kind, reply] = handler.frame(session, [VERSION, command], payloads, True)
        assert kind == REPLIES
        if isinstance(expected, str):
            assert reply[0] == ERR and reply[1] == expected
        else:
            assert reply[:5] == [
                OK,
                expected.order_id,
                STATUS_CODES[expected.status],
                expected.filled_qty,
                expected.remaining_qty,
            ]
        assert old.state_hash() == new.state_hash()
    # And the compact side's records replay to its books.
    replayed = _service()
    for payload in payloads:
        replayed.replay(payload)
    assert replayed.state_hash() == new.state_hash()


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(st.lists(values, max_size=6))
def test_malformed_compact_commands_are_errors_and_change_nothing(
    pair: tuple[socket.socket, socket.socket], commands: list[Any]
) -> None:
    service = _service()
    session = _session(service, pair[0], "acct")
    handler = CompactHandler(service)
    before = service.state_hash()
    payloads: list[bytes] = []
    # Anything that is not a well-formed command, never a new order:
    bad = [c for c in commands if not (isinstance(c, list) and c[:1] in ([NEW], [MASS_CANCEL]))]
    replies = handler.frame(session, [VERSION, *bad], payloads, True)
    assert replies[0] == REPLIES and len(replies) == len(bad) + 1
    assert all(reply[0] == ERR for reply in replies[1:])
    assert payloads == []
    assert service.state_hash() == before


def test_mass_cancel_cancels_the_accounts_orders_as_journaled_cancels(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    service = _service()
    mine, theirs = _session(service, pair[0], "me"), _session(service, pair[0], "them")
    handler = CompactHandler(service)
    payloads: list[bytes] = []
    frame = [VERSION, [NEW, 0, 0, 100, 1], [NEW, 1, 1, 900, 1], [NEW, 0, 1, 200, 1]]
    handler.frame(mine, frame, payloads, True)
    handler.frame(theirs, [VERSION, [NEW, 0, 0, 101, 1]], payloads, True)
    assert handler.frame(mine, [VERSION, [MASS_CANCEL, 0]], payloads, True) == [
        REPLIES,
        [OK, [1, 3]],
    ]
    assert handler.frame(mine, [VERSION, [MASS_CANCEL]], payloads, True) == [REPLIES, [OK, [2]]]
    assert [service.find(i)[1].status for i in (1, 2, 3, 4)] == [
        "cancelled",
        "cancelled",
        "cancelled",
        "new",
    ]
    # Replaying the journaled records reaches the same books.
    replayed = _service()
    for payload in payloads:
        replayed.replay(payload)
    assert replayed.state_hash() == service.state_hash()


def test_commands_before_hello_are_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    service = _service()
    session = Session(Conn(pair[0], bytearray()), ReportHub(service, 16), 1 << 20)
    payloads: list[bytes] = []
    replies = CompactHandler(service).frame(session, [VERSION, [NEW, 0, 0, 1, 1]], payloads, True)
    assert replies == [REPLIES, [ERR, "hello_required", "a session begins with hello"]]
    assert payloads == []
