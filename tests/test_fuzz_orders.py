"""Orders over the whole numeric range, on both ports, in process: every
request is answered 2xx or 4xx, and the live state always equals a fresh
replay of the journal (nothing applied that was not journaled).

The HTTP requests go through the server's real connection loop (socketpairs,
``sprintd.testing``), the binary frames through the order-entry handler the port
serves, encoded and decoded as the port does.
"""

from __future__ import annotations

import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprintd.framing import decode_payload, encode_frame
from sprintd.plugins.orders.events import MAX_PRICE, MAX_QTY
from sprintd.plugins.orders.plugin import OrdersPlugin
from sprintd.testing import exchange, make_app, make_server

from .test_orders import _replayed_hash

# BTC-USD's grid (tick 0.01, lot 0.0001) and bounds, as decimals.
TICK, LOT = Decimal("0.01"), Decimal("0.0001")
EDGES = [
    str(MAX_PRICE * TICK),
    str(MAX_PRICE * TICK + TICK),
    str(MAX_QTY * LOT),
    str(MAX_QTY * LOT + LOT),
]

# Beyond the bounds, and beyond what a journal's 64-bit ints hold in lots or ticks.
HUGE = ["2000000000000000", 2**64 - 1, 2**63, -(2**63), "1e16", "1e29", 10**15, 1e15]

# Every kind of number a client can send, over the whole range.
numbers = st.one_of(
    st.sampled_from(HUGE),
    st.integers(-(2**63), 2**64 - 1),
    st.integers(-(10**40), 10**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.sampled_from(["1e400", "-0", "-0.00", "NaN", "Infinity", "-Infinity", "1E-5", "0x10"]),
    st.sampled_from([*EDGES, "1" * 70, "0." + "0" * 60 + "1", "100.00", "0.0001", "1"]),
    st.builds(lambda m, e: f"{m}e{e}", st.integers(-(10**6), 10**6), st.integers(-400, 400)),
    st.decimals(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=8),
)
# Mostly in range, so the book fills and trades.
prices = st.one_of(st.integers(9_900, 10_100).map(lambda t: str(t * TICK)), numbers)
qtys = st.one_of(st.integers(1, 300).map(lambda n: str(n * LOT)), numbers)


@st.composite
def new_bodies(draw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "symbol": "BTC-USD",
        "side": draw(st.sampled_from(["buy", "sell"])),
        "price": draw(prices),
        "qty": draw(qtys),
    }
    extra = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "type": st.sampled_from(["limit", "market"]),
                "tif": st.sampled_from(["GTC", "IOC", "FOK"]),
                "client_order_id": st.sampled_from(["a", "b", "c"]),
                "account": st.sampled_from(["x", "y"]),
            },
        )
    )
    return body | extra


operations = st.lists(
    st.one_of(
        st.tuples(st.just("http-json"), new_bodies()),
        st.tuples(st.just("http-msgpack"), new_bodies()),
        st.tuples(
            st.just("patch"),
            st.integers(1, 30),
            st.fixed_dictionaries({}, optional={"price": prices, "qty": qtys}),
        ),
        st.tuples(st.just("delete"), st.integers(1, 30)),
        st.tuples(
            st.just("frame"),
            st.lists(
                st.one_of(
                    new_bodies().map(lambda b: ["new", b]),
                    st.tuples(st.just("cancel"), st.integers(1, 30)).map(list),
                    st.tuples(
                        st.just("replace"),
                        st.integers(1, 30),
                        st.fixed_dictionaries({}, optional={"price": prices, "qty": qtys}),
                    ).map(list),
                ),
                min_size=1,
                max_size=5,
            ),
        ),
    ),
    min_size=1,
    max_size=25,
)


def _fits_msgpack(value: Any) -> bool:
    try:
        msgpack.packb(value)
    except (OverflowError, ValueError, TypeError):
        return False
    return True


def _request(method: str, path: str, body: bytes, content_type: bytes) -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n"
    ).encode()
    return head + b"Content-Type: " + content_type + b"\r\n\r\n" + body


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def _run(data_dir: Path, ops: list[tuple[Any, ...]]) -> str:
    app = make_app([OrdersPlugin()], {"SPRINTD_DATA_DIR": str(data_dir)})
    try:
        api = app.pm.get_plugins().pop().api  # the one plugin registered
        server = make_server(app)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(app.journal.run)
            for op in ops:
                if op[0] == "frame":
                    if not _fits_msgpack(op[1]):
                        continue
                    batch = [decode_payload(encode_frame(op[1])[4:])]
                    [replies] = await api.entry(batch)
                    assert len(replies) == len(op[1])
                    for reply in replies:
                        assert reply[0] == "ok" or reply[1] not in ("internal_error",), reply
                    continue
                if op[0] == "http-msgpack":
                    if not _fits_msgpack(op[1]):
                        continue
                    raw = _request(
                        "POST", "/v1/orders", msgpack.packb(op[1]), b"application/msgpack"
                    )
                elif op[0] == "http-json":
                    raw = _request(
                        "POST", "/v1/orders", json.dumps(op[1]).encode(), b"application/json"
                    )
                elif op[0] == "patch":
                    raw = _request(
                        "PATCH",
                        f"/v1/orders/{op[1]}",
                        json.dumps(op[2]).encode(),
                        b"application/json",
                    )
                else:
                    raw = _request("DELETE", f"/v1/orders/{op[1]}", b"", b"application/json")
                response = await exchange(server, raw)
                assert 200 <= _status(response) < 500, response
            await app.journal.sync()
            live = api.service.state_hash()
            assert api.service.halted is None
            nursery.cancel_scope.cancel()
    finally:
        app.teardown()
    return live


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_the_live_state_is_always_the_journals(ops: list[tuple[Any, ...]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        live = trio.run(_run, data_dir, ops)
        assert _replayed_hash(data_dir) == live
