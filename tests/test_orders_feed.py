"""Live market data over WebSocket (``plugins/orders/feed.py``), against real
daemons, with a real client library (``websockets``' sync client).

No timed assertions: a client waits for the message it expects (with a
generous timeout that only a hang reaches), and a slow consumer is made by
a client that does not read, never by a sleep.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from sprintd.plugins.orders.feed import CLOSE_BAD_SUBSCRIBE, CLOSE_SLOW, Feed, _Closed
from sprintd.plugins.orders.plugin import OrdersPlugin
from sprintd.plugins.prices.plugin import PricesPlugin
from sprintd.testing import make_app

from .daemons import FAST_SERVER_ENV, Daemon, DaemonFactory
from .test_orders import _entry

JSON_HEADERS = {"Content-Type": "application/json"}
WAIT = 20.0  # only a hang waits this long
TRADER_KEY = "feed-trader-key-0123456789"
OTHER_KEY = "feed-other-key-0123456789"
READER_KEY = "feed-reader-key-0123456789"
ADMIN_KEY = "feed-admin-key-0123456789"
AUTH_ENV = {
    "SPRINTD_AUTH__ENABLED": "true",
    "SPRINTD_AUTH__KEYS__TRADER__KEY": TRADER_KEY,
    "SPRINTD_AUTH__KEYS__TRADER__SCOPES": '["read", "trade"]',
    "SPRINTD_AUTH__KEYS__OTHER__KEY": OTHER_KEY,
    "SPRINTD_AUTH__KEYS__OTHER__SCOPES": '["read", "trade"]',
    "SPRINTD_AUTH__KEYS__READER__KEY": READER_KEY,
    "SPRINTD_AUTH__KEYS__READER__SCOPES": '["read"]',
    "SPRINTD_AUTH__KEYS__ADMIN__KEY": ADMIN_KEY,
    "SPRINTD_AUTH__KEYS__ADMIN__SCOPES": '["admin"]',
}


def _ws(served: Daemon, key: str | None = None, **options: Any) -> ClientConnection:
    headers = {} if key is None else {"X-API-Key": key}
    return connect(
        f"ws://{served.host}:{served.port}/v1/ws",
        additional_headers=headers,
        proxy=None,
        open_timeout=WAIT,
        **options,
    )


@contextlib.contextmanager
def _subscribe(
    served: Daemon, channels: list[str], key: str | None = None
) -> Iterator[ClientConnection]:
    with _ws(served, key) as ws:
        ws.send(json.dumps({"subscribe": channels}))
        yield ws


def _next(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(ws.recv(timeout=WAIT))
    return message


def _order(side: str, price: str, qty: str) -> dict[str, Any]:
    return {"symbol": "BTC-USD", "side": side, "price": price, "qty": qty}


def _post(served: Daemon, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    headers = JSON_HEADERS if key is None else {**JSON_HEADERS, "X-API-Key": key}
    result = served.request("POST", "/v1/orders", json.dumps(body).encode(), headers)
    assert result.status in (200, 201), result.body
    answer: dict[str, Any] = result.json()
    return answer


def _closed_with(ws: ClientConnection) -> int | None:
    """Read to the end: the close code the server sent (None: no close frame)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=WAIT)
    return None if closed.value.rcvd is None else closed.value.rcvd.code


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon()


@pytest.fixture(scope="module")
def guarded(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon(env=AUTH_ENV)


def test_a_book_is_a_snapshot_then_every_change_gapless(served: Daemon) -> None:
    with _subscribe(served, ["book:BTC-USD", "trades:BTC-USD"]) as ws:
        first = _next(ws)
        assert first["channel"] == "book:BTC-USD"
        assert first["seq"] == 1
        assert first["data"] == served.get("/v1/book/BTC-USD").json()
        sequence = first["data"]["sequence"]
        _post(served, _order("sell", "70000.00", "1"))
        _post(served, _order("buy", "69000.00", "2"))
        _post(served, _order("buy", "70000.00", "0.25"))  # trades with the sell
        books = [_next(ws), _next(ws), _next(ws), _next(ws)]
        trade = next(m for m in books if m["channel"] == "trades:BTC-USD")
        books.remove(trade)
        assert [m["seq"] for m in books] == [2, 3, 4]
        assert [m["data"]["sequence"] > sequence for m in books] == [True] * 3
        assert books[-1]["data"] == served.get("/v1/book/BTC-USD").json()
        assert trade["seq"] == 1
        assert trade["data"]["symbol"] == "BTC-USD"
        assert (trade["data"]["price"], trade["data"]["qty"]) == ("70000.00", "0.2500")
        assert trade["data"]["taker_side"] == "buy"


@pytest.mark.parametrize(
    "first",
    [
        "not json",
        '{"subscribe": "book:BTC-USD"}',
        '{"subscribe": []}',
        '["book:BTC-USD"]',
        '{"subscribe": ["book:NOPE-USD"]}',
        '{"subscribe": ["candles"]}',
        '{"subscribe": ["orders"]}',  # no key: auth is off
    ],
)
def test_a_bad_first_message_is_closed_with_1008(served: Daemon, first: str) -> None:
    with _ws(served) as ws:
        ws.send(first)
        assert _closed_with(ws) == CLOSE_BAD_SUBSCRIBE


def test_a_plain_get_is_told_to_upgrade(served: Daemon) -> None:
    result = served.get("/v1/ws")
    assert result.status == 426
    assert result.json()["error"]["code"] == "upgrade_required"
    assert result.headers["upgrade"] == "websocket"
    # The daemon serves on after the refusal and the sessions.
    assert served.get("/livez").status == 200


def test_keys_and_scopes_are_https(guarded: Daemon) -> None:
    for key, status in ((None, 401), ("not-a-key", 401), (ADMIN_KEY, 403)):
        with pytest.raises(InvalidStatus) as refused:
            _ws(guarded, key)
        assert refused.value.response.status_code == status
    with _subscribe(guarded, ["book:BTC-USD"], READER_KEY) as ws:
        assert _next(ws)["channel"] == "book:BTC-USD"


def test_orders_are_the_keys_own_with_the_fills_of_its_resting_ones(guarded: Daemon) -> None:
    with (
        _subscribe(guarded, ["orders"], TRADER_KEY) as trader,
        _subscribe(guarded, ["orders"], READER_KEY) as reader,
    ):
        resting = _post(guarded, _order("buy", "50000.00", "1"), TRADER_KEY)
        mine = _next(trader)
        assert mine == {"channel": "orders", "seq": 1, "data": resting}
        taker = _post(guarded, _order("sell", "50000.00", "0.4"), OTHER_KEY)
        fill = _next(trader)
        assert fill["seq"] == 2
        assert fill["data"]["order_id"] == resting["order_id"]
        assert fill["data"]["filled_qty"] == "0.4000"
        [trade] = fill["data"]["fills"]
        assert trade["taker_order_id"] == taker["order_id"]
        # The reader's key entered nothing: its channel stays empty, which
        # a ping answered after all of the above shows.
        reader.ping().wait(WAIT)
        with pytest.raises(TimeoutError):
            reader.recv(timeout=0)


def test_a_slow_consumer_never_slows_the_engine(daemon: DaemonFactory) -> None:
    """Clients that stop reading: the one behind on trades is dropped, the
    one on the book only gets the latest book; the engine and a reading
    client go on. Far more is sent than a socket's buffers hold."""
    served = daemon(
        env={"SPRINTD_ORDERS__FEED_MAX_PENDING": "50", "SPRINTD_SERVER__BODY_TIMEOUT": "600"}
    )
    rounds, per_frame = 40, 50
    trades = rounds * per_frame

    @contextlib.contextmanager
    def stalled(channels: list[str]) -> Iterator[ClientConnection]:
        # websockets stops reading once max_queue frames wait unread; the
        # small receive buffer makes the kernel hold little more.
        sock = socket.create_connection((served.host, served.port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        with connect(f"ws://{served.host}:{served.port}/v1/ws", sock=sock, max_queue=1) as ws:
            ws.send(json.dumps({"subscribe": channels}))
            yield ws

    got: list[dict[str, Any]] = []

    def read_all(ws: ClientConnection) -> None:
        while len(got) < trades:
            got.append(_next(ws))

    with (
        stalled(["trades:BTC-USD", "book:BTC-USD"]) as behind,
        stalled(["book:BTC-USD"]) as coalesced,
        _subscribe(served, ["trades:BTC-USD"]) as reading,
        _entry(served) as entry,
    ):
        reader = threading.Thread(target=read_all, args=(reading,))
        reader.start()
        # Twenty levels of bids, so that every book message is large.
        entry.request([["new", _order("buy", f"{40000 + i}.00", "1")] for i in range(20)])
        entry.request([["new", _order("sell", "60000.00", "100000")]])
        for _ in range(rounds):
            replies = entry.request(
                [["new", _order("buy", "60000.00", "0.0001")] for _ in range(per_frame)]
            )
            assert all(r[0] == "ok" and r[1]["status"] == "filled" for r in replies)
        reader.join(WAIT)
        assert not reader.is_alive()
        assert [m["seq"] for m in got] == list(range(1, trades + 1))
        final = served.get("/v1/book/BTC-USD").json()
        # The book-only client is behind, not dropped: it reads on to the
        # latest book, gapless in seq, having skipped states in between.
        books = [_next(coalesced)]
        while books[-1]["data"]["sequence"] != final["sequence"]:
            books.append(_next(coalesced))
        assert [m["seq"] for m in books] == list(range(1, len(books) + 1))
        assert len(books) < trades
        assert books[-1]["data"] == final
        # The one behind on trades was dropped: 1013, or no close frame when
        # the server was mid-frame to it; either way it missed trades.
        seen = 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                seen += json.loads(behind.recv(timeout=WAIT))["channel"] == "trades:BTC-USD"
        assert closed.value.rcvd is None or closed.value.rcvd.code == CLOSE_SLOW
        assert seen < trades


def test_a_drain_closes_subscribers_with_1001(daemon: DaemonFactory) -> None:
    served = daemon(env=FAST_SERVER_ENV)
    with _subscribe(served, ["book:BTC-USD"]) as ws:
        _next(ws)
        served.signal(signal.SIGTERM)
        assert _closed_with(ws) == 1001
    assert served.wait() == 0


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # websockets reads proxies from the environment unless told not to.
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield


# --- the first message, in process ---------------------------------------------

VALID = ["book:BTC-USD", "trades:ETH-USD", "prices", "orders"]
CHANNEL = st.one_of(st.sampled_from([*VALID, "book:", "book:NOPE", "trades", "Prices"]), st.text())


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Feed]:
    app = make_app(
        [OrdersPlugin(), PricesPlugin()],
        {"SPRINTD_DATA_DIR": str(tmp_path_factory.mktemp("data"))},
    )
    try:
        app.pm.hook.sprintd_listeners(app=app)  # the orders plugin takes its books here
        [api] = [p.api for p in app.pm.get_plugins() if isinstance(p, OrdersPlugin)]
        assert api is not None
        yield api.feed
    finally:
        app.teardown()


@given(
    message=st.one_of(
        st.text(),
        st.builds(lambda names: json.dumps({"subscribe": names}), st.lists(CHANNEL)),
        st.builds(json.dumps, st.dictionaries(st.text(), st.integers() | st.text())),
    ),
    key=st.sampled_from([None, "trader"]),
)
@example(message="[" * 60_000, key=None)  # deeper than Python's recursion limit
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_first_message_subscribes_or_is_refused_with_1008(
    feed: Feed, message: str, key: str | None
) -> None:
    try:
        names = feed._check(message, key)
    except _Closed as closed:
        assert closed.code == CLOSE_BAD_SUBSCRIBE
        assert closed.reason
        return
    subscribe = json.loads(message)["subscribe"]
    assert names == list(dict.fromkeys(subscribe))
    assert names and set(names) <= set(VALID)
    assert key is not None or "orders" not in names
