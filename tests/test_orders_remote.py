"""Symbols partitioned across instances: two real daemons on loopback, each
owning one symbol and forwarding the other's commands to its owner's
order-entry port (plugins/orders/remote.py, README "Symbols on other instances").
"""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sprintd.plugins.orders.client import EntryClient
from sprintd.plugins.orders.config import parse_owner

from .daemons import CLIResult, Daemon, DaemonFactory, wait_for
from .scraping import promtool_complaints, scrape, value
from .servers import free_port
from .test_fuzz_orders import _fits_msgpack, new_bodies
from .test_settings import assert_config_error

JSON_HEADERS = {"Content-Type": "application/json"}
LOOPBACK = "127.0.0.1"
# Small, so a stalled owner's test is quick; a dead one is seen at once anyway.
FORWARD_TIMEOUT = 0.5
FORWARDED = "sprintd_orders_forwarded_commands_total"


def _config(path: Path, own: str, other: str, other_port: int) -> Path:
    grids = {"BTC-USD": ("0.01", "0.0001"), "ETH-USD": ("0.01", "0.001")}
    tick, lot = grids[own]
    path.write_text(
        f"[orders]\nforward_timeout = {FORWARD_TIMEOUT}\n"
        f'[orders.symbols.{own}]\ntick_size = "{tick}"\nlot_size = "{lot}"\n'
        f'[orders.symbols.{other}]\nowner = "{LOOPBACK}:{other_port}"\n'
    )
    return path


@dataclass
class Pair:
    """Two instances, each naming the other as an owner: by default A owns
    BTC-USD and B owns ETH-USD, and each forwards the other's."""

    factory: DaemonFactory
    a: Daemon
    b: Daemon
    a_port: int
    b_port: int
    b_config: Path

    def restart_b(self) -> None:
        self.b = _start(self.factory, self.b_config, self.b_port, self.b.data_dir)


def _start(
    factory: DaemonFactory,
    config: Path,
    entry_port: int,
    data_dir: Path | None = None,
    workers: int = 1,
) -> Daemon:
    # The environment's entry port, as tests/daemons.py sets one for every daemon.
    env = {"SPRINTD_ORDERS__ENTRY_PORT": str(entry_port)}
    args = ("--config", str(config), "--workers", str(workers))
    return factory(*args, env=env, data_dir=data_dir, workers=workers)


def _owner(served: Daemon, owner_port: int) -> dict[str, Any]:
    owner: dict[str, Any] = served.health()["checks"]["orders"][0]["owners"][
        f"{LOOPBACK}:{owner_port}"
    ]
    return owner


def _up(served: Daemon, owner_port: int) -> bool:
    # With two workers a /health from worker 1 lists worker 0's checks by name
    # only: asked again, it reaches worker 0 in time.
    orders = served.health()["checks"].get("orders")
    return orders is not None and bool(orders[0]["owners"][f"{LOOPBACK}:{owner_port}"]["up"])


def _pair(
    daemon: DaemonFactory,
    tmp_path: Path,
    a_owns: str = "BTC-USD",
    b_owns: str = "ETH-USD",
    a_workers: int = 1,
) -> Pair:
    """A owns ``a_owns`` and names B the owner of the other symbol; B the other
    way round; both started and linked."""
    a_port, b_port = free_port(), free_port()
    others = {"BTC-USD": "ETH-USD", "ETH-USD": "BTC-USD"}
    a_config = _config(tmp_path / "a.toml", a_owns, others[a_owns], b_port)
    b_config = _config(tmp_path / "b.toml", b_owns, others[b_owns], a_port)
    a = _start(daemon, a_config, a_port, workers=a_workers)
    b = _start(daemon, b_config, b_port)
    wait_for(lambda: _up(a, b_port) and _up(b, a_port))
    return Pair(daemon, a, b, a_port, b_port, b_config)


@pytest.fixture
def pair(daemon: DaemonFactory, tmp_path: Path) -> Pair:
    return _pair(daemon, tmp_path)


@pytest.fixture(scope="module")
def shared_pair(module_daemon: DaemonFactory, tmp_path_factory: pytest.TempPathFactory) -> Pair:
    return _pair(module_daemon, tmp_path_factory.mktemp("pair"))


def _post(served: Daemon, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    result = served.request("POST", "/v1/orders", json.dumps(body).encode(), JSON_HEADERS)
    return result.status, result.json()


def _eth(side: str, price: str, qty: str, **extra: Any) -> dict[str, Any]:
    return {"symbol": "ETH-USD", "side": side, "price": price, "qty": qty, **extra}


def _btc(side: str, price: str, qty: str, **extra: Any) -> dict[str, Any]:
    return {"symbol": "BTC-USD", "side": side, "price": price, "qty": qty, **extra}


def _get(served: Daemon, order_id: int, query: str = "") -> tuple[int, Any]:
    result = served.get(f"/v1/orders/{order_id}{query}")
    return result.status, result.json()


def _book(served: Daemon, symbol: str) -> dict[str, Any]:
    result = served.get(f"/v1/book/{symbol}")
    assert result.status == 200, result.body
    book: dict[str, Any] = result.json()
    return book


def test_orders_for_either_symbol_entered_at_either_instance_trade_at_the_owner(
    pair: Pair,
) -> None:
    a, b = pair.a, pair.b
    # A sell of ETH-USD entered at A (forwarded to B) and a buy entered at B trade.
    status, maker = _post(a, _eth("sell", "2000.00", "1.000", client_order_id="m1"))
    assert status == 201, maker
    assert maker["symbol"] == "ETH-USD" and maker["status"] == "new"
    status, taker = _post(b, _eth("buy", "2000.00", "0.400"))
    assert status == 201, taker
    assert taker["status"] == "filled"
    assert taker["fills"][0]["maker_order_id"] == maker["order_id"]
    # The same client_order_id again through A: the owner's existing order, 200.
    status, again = _post(a, _eth("sell", "2000.00", "1.000", client_order_id="m1"))
    assert status == 200, again
    assert again["order_id"] == maker["order_id"]
    assert again["filled_qty"] == "0.400"

    # The binary port at A forwards too, mixed with A's own symbol in one frame,
    # the replies in the frame's order.
    with EntryClient(LOOPBACK, pair.a_port) as client:
        eth, btc = client.request(
            [
                ["new", _eth("buy", "2000.00", "0.100")],
                ["new", _btc("sell", "60000.00", "0.5000")],
            ]
        )
    assert eth[0] == "ok" and eth[1]["status"] == "filled", eth
    assert btc[0] == "ok" and btc[1]["status"] == "new", btc
    # A's BTC-USD sell taken by a buy entered at B's binary port.
    with EntryClient(LOOPBACK, pair.b_port) as client:
        [taken] = client.request([["new", _btc("buy", "60000.00", "0.2000")]])
        # An order id routed by a trailing symbol: A's order, asked at B.
        [seen] = client.request([["get", btc[1]["order_id"], "BTC-USD"]])
        # And a trailing symbol B owns itself: the order id decides.
        [own] = client.request([["get", maker["order_id"], "ETH-USD"]])
    assert taken[0] == "ok" and taken[1]["status"] == "filled", taken
    assert taken[1]["fills"][0]["maker_order_id"] == btc[1]["order_id"]
    assert seen == ["ok", _get(a, btc[1]["order_id"])[1]]
    assert own[0] == "ok" and own[1]["filled_qty"] == "0.500"

    # Order-id routes name the symbol with ?symbol=: the owner's answer.
    status, via_a = _get(a, maker["order_id"], "?symbol=ETH-USD")
    assert (status, via_a) == _get(b, maker["order_id"])
    result = a.request("PATCH", f"/v1/orders/{maker['order_id']}?symbol=ETH-USD",
                       json.dumps({"qty": "0.800"}).encode(), JSON_HEADERS)  # fmt: skip
    assert result.status == 200, result.body
    assert result.json()["remaining_qty"] == "0.300"
    result = a.request("DELETE", f"/v1/orders/{maker['order_id']}?symbol=ETH-USD")
    assert result.status == 200 and result.json()["status"] == "cancelled", result.body
    # The owner's refusals keep their status and code.
    result = a.request("DELETE", f"/v1/orders/{maker['order_id']}?symbol=ETH-USD")
    assert result.status == 409 and result.json()["error"]["code"] == "order_done"
    status, body = _get(a, 999_999, "?symbol=ETH-USD")
    assert status == 404 and body["error"]["code"] == "unknown_order"
    status, body = _post(a, _eth("buy", "2000.00", "abc"))
    assert status == 400 and body["error"]["code"] == "invalid_qty"

    # The book is read at its owner: A points there.
    result = a.get("/v1/book/ETH-USD")
    assert result.status == 404, result.body
    error = result.json()["error"]
    assert error["code"] == "remote_symbol" and f"{LOOPBACK}:{pair.b_port}" in error["message"]
    assert _book(b, "ETH-USD")["bids"] == [] and _book(b, "ETH-USD")["asks"] == []
    assert _book(a, "BTC-USD")["asks"] == [["60000.00", "0.3000"]]

    # Visible: counted per owner, at each forwarder.
    text, samples, _ = scrape(a)
    assert promtool_complaints(text) == ""
    to_b = f"{LOOPBACK}:{pair.b_port}"
    # m1 twice, the frame's ETH-USD new, GET, PATCH, DELETE twice, GET, the bad qty.
    assert value(samples, FORWARDED, owner=to_b, outcome="answered") == 9
    assert value(samples, FORWARDED, owner=to_b, outcome="unavailable") == 0
    assert value(samples, "sprintd_orders_owner_up", owner=to_b) == 1
    _, samples, _ = scrape(b)
    to_a = f"{LOOPBACK}:{pair.a_port}"
    assert value(samples, FORWARDED, owner=to_a, outcome="answered") == 2


def test_concurrent_forwards_share_one_link_and_each_gets_its_own_answer(pair: Pair) -> None:
    # Many requests in flight on the link at once (HTTP connections from
    # threads, and frames pipelined on one port connection): replies are
    # matched first in, first out, so each must find its own order.
    a = pair.a
    prices = [f"{1000 + i}.00" for i in range(40)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda p: _post(a, _eth("buy", p, "0.001")), prices))
    assert [(status, order["price"]) for status, order in answers] == [(201, p) for p in prices]
    frames = [[["new", _eth("sell", f"{5000 + i}.00", "0.001")]] for i in range(40)]
    with EntryClient(LOOPBACK, pair.a_port) as client:
        client.send_many(frames)
        replies = [client.receive() for _ in frames]
    assert [reply[0][1]["price"] for reply in replies] == [f"{5000 + i}.00" for i in range(40)]
    assert len(_book(pair.b, "ETH-USD")["bids"]) == 20  # the book's default depth


def test_a_killed_owner_is_503_with_retry_after_then_forwarding_resumes(pair: Pair) -> None:
    a = pair.a
    acked = []
    for i in range(5):
        status, order = _post(a, _eth("sell", f"{2100 + i}.00", "1.000", client_order_id=f"k{i}"))
        assert status == 201, order
        acked.append(order)

    linked = _owner(a, pair.b_port)["connects"]
    pair.b.signal(signal.SIGKILL)
    pair.b.wait()
    wait_for(lambda: not _up(a, pair.b_port))
    result = a.request("POST", "/v1/orders", json.dumps(_eth("buy", "1.00", "1.000")).encode(),
                       JSON_HEADERS)  # fmt: skip
    assert result.status == 503, result.body
    assert result.json()["error"]["code"] == "owner_unavailable"
    assert result.headers["retry-after"] == "1"
    assert a.get(f"/v1/orders/{acked[0]['order_id']}?symbol=ETH-USD").status == 503
    with EntryClient(LOOPBACK, pair.a_port) as client:
        [refused, own] = client.request(
            [["new", _eth("buy", "1.00", "1.000")], ["new", _btc("buy", "1.00", "1.0000")]]
        )
    assert refused[:2] == ["error", "owner_unavailable"], refused
    # A's own symbol trades on; its health warns, naming the owner.
    assert own[0] == "ok" and own[1]["status"] == "new", own
    assert _post(a, _btc("buy", "2.00", "1.0000"))[0] == 201
    health = a.health()
    assert health["checks"]["orders"][0]["status"] == "warn"
    _, samples, _ = scrape(a)
    to_b = f"{LOOPBACK}:{pair.b_port}"
    assert value(samples, FORWARDED, owner=to_b, outcome="unavailable") == 3
    assert value(samples, "sprintd_orders_owner_up", owner=to_b) == 0

    pair.restart_b()
    wait_for(lambda: _up(a, pair.b_port))
    assert _owner(a, pair.b_port)["connects"] > linked
    # Every acknowledged order is at the owner, once; a retry finds it.
    for order in acked:
        assert _get(pair.b, order["order_id"]) == (200, order)
    status, retried = _post(a, _eth("sell", "2100.00", "1.000", client_order_id="k0"))
    assert (status, retried) == (200, acked[0])
    asks = _book(pair.b, "ETH-USD")["asks"]
    assert asks == [[f"{2100 + i}.00", "1.000"] for i in range(5)]
    status, fresh = _post(a, _eth("buy", "2100.00", "0.500"))
    assert status == 201 and fresh["fills"][0]["maker_order_id"] == acked[0]["order_id"]


def test_an_owner_that_does_not_answer_is_503_and_a_retry_is_not_applied_twice(
    pair: Pair,
) -> None:
    a, b = pair.a, pair.b
    b.signal(signal.SIGSTOP)
    try:
        # Answered once the forward_timeout passes, not when the owner wakes.
        status, body = _post(a, _eth("sell", "2500.00", "2.000", client_order_id="late"))
        assert status == 503 and body["error"]["code"] == "owner_unavailable", body
        assert "did not answer" in body["error"]["message"]
    finally:
        b.signal(signal.SIGCONT)
    wait_for(lambda: _up(a, pair.b_port))
    # The owner may have applied it when it woke; the retry with the same
    # client_order_id enters it at most once either way.
    status, order = _post(a, _eth("sell", "2500.00", "2.000", client_order_id="late"))
    assert status in (200, 201), order
    assert _book(b, "ETH-USD")["asks"] == [["2500.00", "2.000"]]
    assert _get(b, order["order_id"]) == (200, order)


# Unique per example, so the two entries of one body are two orders.
_cids = iter(range(1 << 62))


@settings(max_examples=100, deadline=None)
@given(new_bodies())
def test_a_forwarded_order_is_answered_as_its_owner_answers_it(
    shared_pair: Pair, body: dict[str, Any]
) -> None:
    # The same body entered at B (BTC-USD's forwarder) and at A (its owner),
    # over HTTP and the port: the same status and code, the same order fields
    # that do not depend on the book.
    if "client_order_id" in body:
        body["client_order_id"] = f"fuzz-{next(_cids)}"
    a, b = shared_pair.a, shared_pair.b
    data = json.dumps(body).encode()
    there = b.request("POST", "/v1/orders", data, JSON_HEADERS)
    if "client_order_id" in body:
        body["client_order_id"] = f"fuzz-{next(_cids)}"
    here = a.request("POST", "/v1/orders", json.dumps(body).encode(), JSON_HEADERS)
    assert there.status == here.status, (there.body, here.body)
    if here.status >= 400:
        assert there.json() == here.json()
    else:
        fixed = ("symbol", "side", "price", "qty")
        assert {k: there.json()[k] for k in fixed} == {k: here.json()[k] for k in fixed}
    if not _fits_msgpack(body):
        return  # no client can send it on the port
    with (
        EntryClient(LOOPBACK, shared_pair.b_port) as forwarder,
        EntryClient(LOOPBACK, shared_pair.a_port) as owner,
    ):
        [there_reply] = forwarder.request([["new", body]])
        [here_reply] = owner.request([["new", body]])
    assert there_reply[0] == here_reply[0], (there_reply, here_reply)
    if here_reply[0] == "error":
        assert there_reply == here_reply
    else:
        assert len(there_reply) == len(here_reply) == 2


# --- configuration -------------------------------------------------------------


def _run(sprintd_cli: Any, tmp_path: Path, text: str) -> CLIResult:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result: CLIResult = sprintd_cli("run", "--port", "0", "--config", str(path))
    return result


@pytest.mark.parametrize(
    ("owner", "said"),
    [
        ("10.0.0.2", "is not host:port"),
        ("10.0.0.2:0", "the port must be from 1 to 65535"),
        ("10.0.0.2:65536", "the port must be from 1 to 65535"),
        (":9001", "is not host:port"),
        ("10.0.0.2:http", "the port must be from 1 to 65535"),
    ],
)
def test_a_bad_owner_address_is_a_config_error(
    sprintd_cli: Any, tmp_path: Path, owner: str, said: str
) -> None:
    result = _run(sprintd_cli, tmp_path, f'[orders.symbols.ETH-USD]\nowner = "{owner}"\n')
    assert_config_error(result, "orders.symbols.ETH-USD.owner", said)


def test_an_owned_symbol_takes_no_grid_and_a_local_one_needs_it(
    sprintd_cli: Any, tmp_path: Path
) -> None:
    result = _run(
        sprintd_cli,
        tmp_path,
        '[orders.symbols.ETH-USD]\nowner = "10.0.0.2:9001"\ntick_size = "0.01"\n',
    )
    assert_config_error(result, "orders.symbols.ETH-USD", "tick_size with owner")
    result = _run(sprintd_cli, tmp_path, '[orders.symbols.ETH-USD]\nengine = "price_time"\n')
    assert_config_error(result, "orders.symbols.ETH-USD", "tick_size and lot_size are required")


@given(st.text(max_size=40))
def test_parse_owner_is_host_and_port_or_refused(text: str) -> None:
    try:
        host, port = parse_owner(text)
    except ValueError:
        return
    assert 0 < port <= 65535 and host
    assert int(text.rpartition(":")[2]) == port
    assert host in text


@pytest.mark.parametrize(
    ("text", "found"),
    [("10.0.0.2:9001", ("10.0.0.2", 9001)), ("[::1]:9081", ("::1", 9081)), ("h:1", ("h", 1))],
)
def test_parse_owner_reads_addresses(text: str, found: tuple[str, int]) -> None:
    assert parse_owner(text) == found


def test_a_command_is_forwarded_once_even_when_two_instances_name_each_other(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    # A misconfiguration: X says Y owns BTC-USD, and Y says X does. A command
    # makes one hop and is refused there, instead of bouncing until a timeout.
    pair = _pair(daemon, tmp_path, a_owns="ETH-USD", b_owns="ETH-USD")
    x = pair.a
    with EntryClient(LOOPBACK, pair.a_port) as client:
        [reply] = client.request([["new", _btc("buy", "1.00", "1.0000")]])
    assert reply[:2] == ["error", "unknown_symbol"], reply
    status, body = _post(x, _btc("buy", "1.00", "1.0000"))
    assert status == 404 and body["error"]["code"] == "unknown_symbol", body


def test_a_symbol_owned_by_this_instances_own_port_is_a_config_error(
    sprintd_cli: Any, tmp_path: Path
) -> None:
    path = tmp_path / "self.toml"
    path.write_text('[orders.symbols.ETH-USD]\nowner = "127.0.0.1:9555"\n')
    result = sprintd_cli(
        "run", "--port", "0", "--config", str(path), env={"SPRINTD_ORDERS__ENTRY_PORT": "9555"}
    )
    assert_config_error(result, "orders.symbols.ETH-USD.owner", "this instance's own")


def test_an_instance_of_two_workers_forwards_from_either(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    pair = _pair(daemon, tmp_path, a_workers=2)
    a, b = pair.a, pair.b
    # A connection each: the kernel hands them to either worker; worker 0
    # holds the link, the other forwards to it.
    ids = set()
    for i in range(20):
        status, order = _post(a, _eth("sell", f"{3000 + i}.00", "0.100"))
        assert status == 201, order
        ids.add(order["order_id"])
    assert len(ids) == 20
    assert len(_book(b, "ETH-USD")["asks"]) == 20
