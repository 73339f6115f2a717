"""The orders plugin's families on GET /metrics (``plugins/orders/metrics.py``), from a
real daemon: commands by kind and outcome, trades, resting orders, engine latency."""

from __future__ import annotations

import json
from typing import Any

import pytest

from .daemons import Daemon, DaemonFactory
from .scraping import Samples, promtool_complaints, scrape, value

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon()


def send(served: Daemon, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    result = served.request(method, path, data, JSON_HEADERS)
    return result.status, result.json()


def order(side: str, price: str, qty: str, **extra: Any) -> dict[str, Any]:
    return {"symbol": "BTC-USD", "side": side, "price": price, "qty": qty, **extra}


def commands(samples: Samples, kind: str, outcome: str) -> float:
    return value(samples, "sprintd_orders_commands_total", kind=kind, outcome=outcome)


def test_commands_trades_and_resting_orders_move_with_the_books(served: Daemon) -> None:
    _, before, _ = scrape(served)
    status, maker = send(served, "POST", "/v1/orders", order("sell", "50000.00", "0.5"))
    assert status == 201
    resting = value(before, "sprintd_orders_resting_orders", symbol="BTC-USD")
    _, placed, _ = scrape(served)
    assert value(placed, "sprintd_orders_resting_orders", symbol="BTC-USD") == resting + 1

    # A taker that trades, one the engine rejects (post-only that would
    # take), a replace and a cancel: each applied, each counted once.
    assert send(served, "POST", "/v1/orders", order("buy", "50001", "0.2"))[1]["fills"]
    status, rejected = send(
        served, "POST", "/v1/orders", order("buy", "50000", "0.1", post_only=True)
    )
    assert rejected["status"] == "rejected", (status, rejected)
    path = f"/v1/orders/{maker['order_id']}"
    assert send(served, "PATCH", path, {"qty": "0.4"})[1]["status"] != "rejected"
    assert send(served, "DELETE", path)[0] == 200
    # Refused before reaching a book: not commands.
    assert send(served, "DELETE", path)[0] == 409
    assert send(served, "DELETE", "/v1/orders/987654321")[0] == 404
    assert send(served, "POST", "/v1/orders", {"symbol": "BTC-USD"})[0] == 400

    text, after, types = scrape(served)
    assert promtool_complaints(text) == ""
    assert types["sprintd_orders_commands"] == "counter"
    assert types["sprintd_orders_resting_orders"] == "gauge"
    assert types["sprintd_orders_engine_duration_seconds"] == "histogram"
    moved = {
        (kind, outcome): commands(after, kind, outcome) - commands(before, kind, outcome)
        for kind in ("new", "cancel", "replace")
        for outcome in ("accepted", "rejected")
    }
    assert moved == {
        ("new", "accepted"): 2,
        ("new", "rejected"): 1,
        ("cancel", "accepted"): 1,
        ("cancel", "rejected"): 0,
        ("replace", "accepted"): 1,
        ("replace", "rejected"): 0,
    }
    trades = "sprintd_orders_trades_total"
    assert value(after, trades, symbol="BTC-USD") - value(before, trades, symbol="BTC-USD") == 1
    assert value(after, trades, symbol="ETH-USD") == value(before, trades, symbol="ETH-USD")
    assert value(after, "sprintd_orders_resting_orders", symbol="BTC-USD") == resting
    count = "sprintd_orders_engine_duration_seconds_count"
    assert value(after, count) - value(before, count) == 5
    inf = value(after, "sprintd_orders_engine_duration_seconds_bucket", le="+Inf")
    assert inf == value(after, count)
    assert value(after, "sprintd_orders_engine_duration_seconds_sum") > 0
    assert value(after, "sprintd_orders_halted") == 0


def test_the_journal_counts_the_commands_it_made_durable(served: Daemon) -> None:
    _, before, _ = scrape(served)
    for price in ("100", "101", "102"):
        assert send(served, "POST", "/v1/orders", order("buy", price, "1"))[0] == 201
    _, after, _ = scrape(served)
    records = "sprintd_journal_records_written_total"
    assert value(after, records) - value(before, records) == 3
    assert value(after, "sprintd_journal_last_seq") - value(before, "sprintd_journal_last_seq") == 3
