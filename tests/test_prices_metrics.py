"""The prices plugin's families on GET /metrics (``plugins/prices/metrics.py``), from a
real daemon: updates over HTTP and the feed, errors, the latency histogram."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from sprintd.plugins.orders.client import EntryClient

from .daemons import Daemon, DaemonFactory
from .scraping import Samples, promtool_complaints, scrape, value

FEED = re.compile(r"serving prices-feed on (\S+):(\d+)")
COUNTERS = (
    "sprintd_prices_updates_received_total",
    "sprintd_prices_updates_total",
    "sprintd_prices_update_errors_total",
    "sprintd_prices_update_duration_seconds_count",
)


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon()


def post(served: Daemon, body: Any) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return served.request("POST", "/v1/prices", data, {"Content-Type": "application/json"}).status


def counts(samples: Samples) -> tuple[float, ...]:
    return tuple(value(samples, name) for name in COUNTERS)


def test_updates_errors_and_latency_count_http_and_feed(served: Daemon) -> None:
    _, before, _ = scrape(served)
    good = {"symbol": "MET-A", "price": 1}
    assert post(served, good) == 200
    assert post(served, [good, {"symbol": "MET-B", "price": "2.5"}]) == 200
    assert post(served, [good, {**good, "price": -1}]) == 400  # refused whole: 2 errors
    assert post(served, b"{nope") == 400  # 1 error
    found = FEED.search(served.stderr())
    assert found is not None
    with EntryClient(found.group(1), int(found.group(2))) as feed:
        assert feed.request([["MET-A", 3], ["MET-C", 4]])[:2] == ["ok", 2]
        assert feed.request([["MET-C", -4]])[:2] == ["error", "invalid_price"]

    text, after, types = scrape(served)
    assert promtool_complaints(text) == ""
    assert types["sprintd_prices_update_duration_seconds"] == "histogram"
    moved = tuple(a - b for a, b in zip(counts(after), counts(before), strict=True))
    # received, applied, refused, timed.
    assert moved == (9, 5, 4, 5)
    latency = "sprintd_prices_update_duration_seconds"
    assert value(after, latency + "_bucket", le="+Inf") == value(after, latency + "_count")
    assert value(after, latency + "_sum") > value(before, latency + "_sum")
    assert value(after, "sprintd_prices_symbols") >= 3
    # The engine's own figures and /metrics are the same counts.
    figures = served.get("/v1/price-engine/metrics").json()
    assert figures["messages_received"] == value(after, COUNTERS[0])
    assert figures["errors"] == value(after, COUNTERS[2])
