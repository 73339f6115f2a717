"""The price engine in process: arrival order, all-or-nothing batches, snapshots, figures."""

from __future__ import annotations

import json
from time import perf_counter_ns
from typing import Any

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from sprintd.http import HTTPError, Request
from sprintd.latency import Recorder
from sprintd.plugins.prices import perftest
from sprintd.plugins.prices.api import PricesAPI, post_prices
from sprintd.plugins.prices.config import PricesSection
from sprintd.plugins.prices.engine import HISTORY_POINTS, PriceEngine
from sprintd.plugins.prices.updates import InvalidUpdate
from sprintd.snapshots import SnapshotTable

JSON_TYPE = ((b"content-type", b"application/json"),)


def _engine(**limits: Any) -> tuple[PriceEngine, SnapshotTable]:
    table = SnapshotTable()
    reads = Recorder("reads")
    engine = PriceEngine(
        lambda path, body: table.register(path, body, reads),
        max_symbols=limits.get("max_symbols", 100),
        max_batch=limits.get("max_batch", 100),
        allowed=limits.get("allowed"),
    )
    return engine, table


def _published(table: SnapshotTable, path: str) -> Any:
    snapshot = table.get(path)
    assert snapshot is not None, path
    # What the fast path sends: the whole pre-encoded response.
    head, body = snapshot.response(head=False).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    return json.loads(body)


def test_updates_apply_in_arrival_order_and_take_sequences_in_turn() -> None:
    engine, table = _engine()
    assert engine.ingest(
        [
            {"symbol": "BTC-USD", "price": 100, "timestamp_ms": 9},
            {"symbol": "ETH-USD", "price": 5},
            # Older by its timestamp, but it arrived last: it is the price.
            {"symbol": "BTC-USD", "price": 99, "timestamp_ms": 1},
        ],
        perf_counter_ns(),
    ) == (3, 3)
    btc = _published(table, "/v1/prices/BTC-USD")
    assert (btc["price"], btc["timestamp_ms"], btc["sequence"]) == ("99", 1, 3)
    assert _published(table, "/v1/prices/ETH-USD")["sequence"] == 2
    assert engine.ingest({"symbol": "ETH-USD", "price": "6.5"}, perf_counter_ns()) == (1, 4)
    every = _published(table, "/v1/prices")
    assert every["count"] == 2
    assert {s: q["price"] for s, q in every["prices"].items()} == {
        "BTC-USD": "99",
        "ETH-USD": "6.5",
    }


def test_left_out_fields_keep_their_last_value() -> None:
    engine, table = _engine()
    engine.ingest({"symbol": "A", "price": 1, "volume": 7, "change_24h": -2}, perf_counter_ns())
    engine.ingest({"symbol": "A", "price": 2}, perf_counter_ns())
    quote = _published(table, "/v1/prices/A")
    assert (quote["price"], quote["volume"], quote["change_24h"]) == ("2", "7", "-2")
    engine.ingest({"symbol": "B", "price": 3}, perf_counter_ns())
    assert _published(table, "/v1/prices/B")["volume"] is None


def test_a_batch_with_one_bad_update_changes_nothing() -> None:
    engine, table = _engine()
    engine.ingest({"symbol": "A", "price": 1}, perf_counter_ns())
    before = {s.path: s.response(head=False) for s in table}
    with pytest.raises(InvalidUpdate) as caught:
        engine.ingest(
            [
                {"symbol": "A", "price": 2},
                {"symbol": "NEW", "price": 3},
                {"symbol": "A", "price": -1},
            ],
            perf_counter_ns(),
        )
    assert caught.value.code == "invalid_price"
    assert {s.path: s.response(head=False) for s in table} == before
    assert "NEW" not in engine.quotes
    assert engine.sequence == 1
    figures = engine.figures()
    assert (figures["messages_received"], figures["messages_processed"], figures["errors"]) == (
        4,
        1,
        3,
    )
    assert figures["error_rate"] == 0.75


def test_symbol_limits_refuse_the_whole_batch() -> None:
    engine, _ = _engine(max_symbols=2)
    engine.ingest([{"symbol": "A", "price": 1}, {"symbol": "B", "price": 1}], perf_counter_ns())
    with pytest.raises(InvalidUpdate) as caught:
        engine.ingest([{"symbol": "A", "price": 2}, {"symbol": "C", "price": 1}], perf_counter_ns())
    assert caught.value.code == "symbol_limit"
    assert engine.quotes["A"].price == "1"

    listed, _ = _engine(allowed=frozenset({"BTC-USD"}))
    listed.ingest({"symbol": "BTC-USD", "price": 1}, perf_counter_ns())
    with pytest.raises(InvalidUpdate) as caught:
        listed.ingest({"symbol": "ETH-USD", "price": 1}, perf_counter_ns())
    assert caught.value.code == "unknown_symbol"


_updates = st.lists(
    st.fixed_dictionaries(
        {
            "symbol": st.sampled_from(["A", "B-C", "D.E_F"]),
            "price": st.floats(1e-6, 1e12) | st.decimals(1, 10**9, places=4).map(str),
        },
        optional={"volume": st.integers(0, 10**12), "change_24h": st.floats(-100, 100)},
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(st.lists(_updates, min_size=1, max_size=5))
def test_the_snapshots_are_json_of_the_last_update_of_each_symbol(batches: list[Any]) -> None:
    engine, table = _engine()
    last: dict[str, Any] = {}
    for batch in batches:
        engine.ingest(batch, perf_counter_ns())
        for update in batch:
            last[update["symbol"]] = update
    every = _published(table, "/v1/prices")
    assert set(every["prices"]) == set(last)
    for symbol, update in last.items():
        quote = _published(table, f"/v1/prices/{symbol}")
        assert every["prices"][symbol] == quote
        assert float(quote["price"]) == pytest.approx(float(update["price"]))
    assert engine.sequence == sum(len(b) for b in batches)


def test_every_applied_update_is_timed_once() -> None:
    engine, _ = _engine()
    received = perf_counter_ns()
    engine.ingest([{"symbol": "A", "price": 1}] * 5, received)
    # A feed read: frames applied one by one, published and timed together.
    engine.submit([{"symbol": "B", "price": 1}] * 2)
    engine.submit({"symbol": "A", "price": 2})
    assert engine.recorder.count == 5
    engine.publish(received)
    latency = engine.figures()["latency"]
    assert latency["sample_count"] == engine.recorder.count == engine.processed == 8
    assert 0 < latency["min"] <= latency["p50"] <= latency["p95"] <= latency["max"]
    assert latency["max"] * 1000 <= perf_counter_ns() - received


def test_history_is_one_point_a_second_and_reset_clears_the_figures() -> None:
    engine, table = _engine()
    engine.ingest([{"symbol": "A", "price": 1}] * 3, perf_counter_ns())
    point = engine.tick(1000)
    assert (point["t"], point["updates"]) == (1000, 3)
    assert 0 < point["p50"] <= point["p95"] <= point["p99"]
    assert engine.tick(2000) == {"t": 2000, "updates": 0, "p50": None, "p95": None, "p99": None}
    for t in range(HISTORY_POINTS + 5):
        engine.tick(t)
    assert len(engine.history) == HISTORY_POINTS

    engine.reset()
    figures = engine.figures()
    assert figures["latency"]["sample_count"] == 0
    assert (figures["messages_received"], figures["messages_processed"], figures["errors"]) == (
        0,
        0,
        0,
    )
    assert not engine.history
    # The prices stay.
    assert figures["symbols"] == 1
    assert _published(table, "/v1/prices/A")["price"] == "1"
    engine.ingest({"symbol": "A", "price": 2}, perf_counter_ns())
    assert engine.tick(3000)["updates"] == 1


def test_the_route_function_answers_and_refuses() -> None:
    engine, _ = _engine()
    json_type = JSON_TYPE
    answer = post_prices(
        engine, Request(b"POST", b"/v1/prices", b"", json_type, b'{"symbol":"A","price":1}', 1)
    )
    assert (answer.status, json.loads(answer.body)) == (200, {"applied": 1, "sequence": 1})
    with pytest.raises(HTTPError) as caught:
        post_prices(engine, Request(b"POST", b"/v1/prices", b"", json_type, b'{"symbol":'))
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
    with pytest.raises(HTTPError) as caught:
        post_prices(engine, Request(b"POST", b"/v1/prices", b"", json_type, b'{"symbol":"a"}'))
    assert (caught.value.status, caught.value.code) == (400, "invalid_symbol")
    assert (engine.received, engine.processed, engine.errors) == (3, 1, 2)


async def test_the_performance_test_runs_the_route_and_lets_others_run() -> None:
    engine, table = _engine()
    turns = 0
    finished = trio.Event()

    async def other() -> None:
        nonlocal turns
        while not finished.is_set():
            turns += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        figures = await perftest.run(3 * perftest.SLICE + 7, engine, post_prices)
        finished.set()
    count = 3 * perftest.SLICE + 7
    assert turns >= 3
    assert figures["num_updates"] == figures["messages_processed"] == count
    assert figures["messages_received"] == count
    assert figures["errors"] == 0
    assert figures["latency"]["sample_count"] == count
    assert figures["passed"] is (figures["latency"]["p95"] < 1000)
    assert figures["throughput"] > 0 and figures["duration_ms"] > 0
    assert figures["symbols"] == len(perftest.SYMBOLS)
    assert {s.path for s in table} == {"/v1/prices"} | {f"/v1/prices/{s}" for s in perftest.SYMBOLS}


def test_synthetic_bodies_are_valid_updates() -> None:
    engine, _ = _engine()
    for body in perftest.synthetic_bodies(200, seed=3):
        engine.ingest(json.loads(body), perf_counter_ns())
    assert engine.errors == 0 and engine.processed == 200


async def test_one_performance_test_at_a_time() -> None:
    engine, _ = _engine()
    api = PricesAPI(PricesSection(), engine)

    def request(count: int) -> Request:
        body = b'{"num_updates": %d}' % count
        return Request(b"POST", b"/v1/price-engine/performance-test", b"", JSON_TYPE, body)

    answers: list[int] = []

    async def first() -> None:
        answers.append((await api.performance_test(request(4 * perftest.SLICE))).status)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(first)
            while not api.testing:
                await trio.sleep(0)
            with pytest.raises(HTTPError) as caught:
                await api.performance_test(request(10))
            assert (caught.value.status, caught.value.code) == (409, "test_running")
    assert answers == [200]
    assert not api.testing
    # The live engine saw none of it.
    assert engine.received == 0 and not engine.quotes
    assert (await api.performance_test(request(10))).status == 200
