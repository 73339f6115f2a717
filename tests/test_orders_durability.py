"""The orders plugin's durability contract on real daemons: every command is
all-or-nothing (out-of-range values refused before the book changes, a
failing engine fences the service), and client order ids survive restarts.
Each test kills the daemon with SIGKILL and compares the restarted state with
the live one and with a fresh replay of the journal."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from .daemons import PLUGINS_DIR, Daemon, DaemonFactory, wait_for
from .test_orders import _entry, _order, _post, _replayed_hash, _state

# 2**64 - 1 and 2e15 BTC: more lots than the journal's msgpack ints hold.
HUGE_QTY = "2000000000000000"
# BTC-USD's qty bound (10**9 lots of 0.0001), as the 400 message names it.
QTY_BOUND = "100000.0000"


def _kill(first: Daemon) -> None:
    first.process.send_signal(signal.SIGKILL)
    first.process.wait()


@pytest.fixture(scope="module")
def served_patch(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon()


def _book(served: Daemon) -> dict[str, list[list[str]]]:
    book: dict[str, list[list[str]]] = served.get("/v1/book/BTC-USD").json()
    return {"bids": book["bids"], "asks": book["asks"]}


def test_an_order_too_big_to_journal_is_refused_over_http(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = daemon(data_dir=data_dir)
    status, answer = _post(first, _order("sell", "100.00", HUGE_QTY))
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_qty"
    assert QTY_BOUND in answer["error"]["message"]
    for _ in range(2):
        status, buy = _post(first, _order("buy", "100.00", "1"))
        assert (status, buy["status"], buy["fills"]) == (201, "new", [])
    live = _state(first)["state_hash"]
    before = _book(first)
    _kill(first)
    second = daemon(data_dir=data_dir)
    assert _state(second)["state_hash"] == live
    assert _book(second) == before == {"bids": [["100.00", "2.0000"]], "asks": []}
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert _replayed_hash(data_dir) == live


def test_a_patch_beyond_the_bounds_is_refused(served_patch: Daemon) -> None:
    _, order = _post(served_patch, _order("buy", "10.00", "1"))
    path = f"/v1/orders/{order['order_id']}"
    headers = {"Content-Type": "application/json"}
    for body, code, bound in (
        (b'{"qty": "2000000000000000"}', "invalid_qty", QTY_BOUND),
        (b'{"price": "1e400"}', "invalid_price", "10000000.00"),
        (b'{"price": "10000000.01"}', "invalid_price", "10000000.00"),
    ):
        before = _state(served_patch)
        result = served_patch.request("PATCH", path, body, headers)
        assert result.status == 400, result.body
        assert result.json()["error"]["code"] == code
        assert bound in result.json()["error"]["message"]
        assert _state(served_patch) == before


def test_an_order_too_big_to_journal_is_refused_on_the_entry_port(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = daemon(data_dir=data_dir)
    huge = {**_order("sell", "100.00", "1"), "qty": 2**64 - 1}
    with _entry(first) as client:
        replies = client.request(
            [
                ["new", _order("buy", "99.00", "1")],
                ["new", huge],
                ["new", _order("buy", "100.00", "1")],
                ["new", _order("buy", "100.00", "1")],
            ]
        )
    assert [r[0] for r in replies] == ["ok", "error", "ok", "ok"], replies
    assert replies[1][1] == "invalid_qty"
    assert QTY_BOUND in replies[1][2]
    assert [r[1]["status"] for r in replies if r[0] == "ok"] == ["new"] * 3
    live = _state(first)["state_hash"]
    before = _book(first)
    _kill(first)
    second = daemon(data_dir=data_dir)
    assert _state(second)["state_hash"] == live
    assert _book(second) == before
    assert before["bids"] == [["100.00", "2.0000"], ["99.00", "1.0000"]]
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert _replayed_hash(data_dir) == live


# --- the fence: an engine that raises ------------------------------------------------


def _faulty(daemon: DaemonFactory, tmp_path: Path, data_dir: Path) -> Daemon:
    """A daemon whose BTC-USD book has the faulty engine (the default symbols)."""
    config = tmp_path / "faulty.toml"
    if not config.exists():
        config.write_text(
            'plugins = ["sprintd_test_faulty_engine"]\n'
            '[orders.symbols.BTC-USD]\ntick_size = "0.01"\nlot_size = "0.0001"\n'
            'engine = "faulty"\n'
            '[orders.symbols.ETH-USD]\ntick_size = "0.01"\nlot_size = "0.001"\n'
        )
    return daemon("--config", str(config), pythonpath=[PLUGINS_DIR], data_dir=data_dir)


def _assert_fenced(served: Daemon, order_id: int) -> None:
    status, answer = _post(served, _order("buy", "1.00", "1"))
    assert status == 503, answer
    assert answer["error"]["code"] == "orders_halted"
    result = served.request("DELETE", f"/v1/orders/{order_id}")
    assert (result.status, result.json()["error"]["code"]) == (503, "orders_halted")
    assert result.headers["retry-after"] == "30"
    patch = served.request("PATCH", f"/v1/orders/{order_id}", b'{"qty": "0.0001"}')
    assert (patch.status, patch.json()["error"]["code"]) == (503, "orders_halted")
    # Reads are still served; readiness and the orders check fail.
    assert served.get(f"/v1/orders/{order_id}").status == 200
    assert served.get("/readyz").status == 503
    health = served.get("/health")
    assert health.status == 503
    assert health.json()["checks"]["orders"][0]["status"] == "fail"
    with _entry(served) as client:
        new, get = client.request([["new", _order("buy", "1.00", "1")], ["get", order_id]])
    assert new[:2] == ["error", "orders_halted"]
    assert get[0] == "ok"


def test_an_engine_that_raises_fences_the_service_over_http(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = _faulty(daemon, tmp_path, data_dir)
    status, maker = _post(first, _order("sell", "100.00", "0.0005"))
    assert status == 201
    journaled = _state(first)["state_hash"]
    # The engine trades 5 lots and rests 8, then raises: never journaled.
    status, _ = _post(first, _order("buy", "100.00", "0.0013"))
    assert status == 500
    _assert_fenced(first, maker["order_id"])
    # The book on the fast path stays at the journal's: no half-applied fill.
    assert _book(first) == {"bids": [], "asks": [["100.00", "0.0005"]]}
    _kill(first)
    second = _faulty(daemon, tmp_path, data_dir)
    assert _state(second)["state_hash"] == journaled
    assert second.get(f"/v1/orders/{maker['order_id']}").json()["status"] == "new"
    assert second.get("/readyz").status == 200
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert _replayed_hash(data_dir) == journaled


def test_an_engine_that_raises_mid_frame_fences_the_rest(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = _faulty(daemon, tmp_path, data_dir)
    with _entry(first) as client:
        replies = client.request(
            [
                ["new", _order("sell", "100.00", "0.0005")],
                ["new", _order("buy", "100.00", "0.0013")],
                ["new", _order("sell", "101.00", "0.0001")],
            ]
        )
    assert [r[:2] for r in replies[1:]] == [
        ["error", "internal_error"],
        ["error", "orders_halted"],
    ], replies
    maker = replies[0][1]
    assert replies[0][0] == "ok"
    _assert_fenced(first, maker["order_id"])
    _kill(first)
    second = _faulty(daemon, tmp_path, data_dir)
    # What was answered "ok" before the failure is journaled; nothing after it.
    assert second.get(f"/v1/orders/{maker['order_id']}").json()["status"] == "new"
    assert _book(second) == {"bids": [], "asks": [["100.00", "0.0005"]]}
    live = _state(second)["state_hash"]
    second.signal(signal.SIGTERM)
    assert second.wait() == 0
    assert _replayed_hash(data_dir) == live


# --- client order ids across a restart -------------------------------------------


def test_client_ids_survive_kill_9_through_snapshot_and_replay(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {"SPRINTD_JOURNAL__CHECKPOINT_RECORDS": "50"}
    first = daemon(data_dir=data_dir, env=env)
    live = _order("buy", "10.00", "1", client_order_id="live", account="alice")
    done = _order("buy", "11.00", "1", client_order_id="done", account="alice", tif="IOC")
    sent = {"live": _post(first, live)[1], "done": _post(first, done)[1]}
    assert (sent["live"]["status"], sent["done"]["status"]) == ("new", "cancelled")
    with _entry(first) as client:
        # Past a snapshot, so the ids come back from one and from the tail:
        # a frame at a time, a record each (frames read together would
        # share a batch record).
        for i in range(120):
            body = _order("buy", "1.00", "0.01", tif="IOC", client_order_id=f"x{i}")
            assert client.request([["new", body]])[0][0] == "ok"
    wait_for(lambda: first.health()["checks"]["journal"][0]["last_checkpoint_seq"] > 0)
    _kill(first)
    second = daemon(data_dir=data_dir, env=env)
    for name, body in (("live", live), ("done", done)):
        status, again = _post(second, body)
        assert (status, again["order_id"]) == (200, sent[name]["order_id"]), name
    with _entry(second) as client:
        [reply] = client.request([["new", live]])
    assert reply[1]["order_id"] == sent["live"]["order_id"]
