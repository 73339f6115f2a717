"""The prices plugin end to end: HTTP contract, snapshots, figures, the feed port."""

from __future__ import annotations

import json
import re
import socket
import struct
import threading
import time
from typing import Any

import msgpack
import pytest

from sprintd.framing import encode_frame
from sprintd.plugins.orders.client import EntryClient

from .daemons import Daemon, DaemonFactory

pytestmark = pytest.mark.slow

FEED = re.compile(r"serving prices-feed on (\S+):(\d+)")
JSON_HEADERS = {"Content-Type": "application/json"}
MAX_TEST_UPDATES = 100_000


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon(env={"SPRINTD_PRICES__MAX_TEST_UPDATES": str(MAX_TEST_UPDATES)})


def _post(served: Daemon, path: str, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    result = served.request("POST", path, data, JSON_HEADERS)
    return result.status, result.json()


def _metrics(served: Daemon) -> dict[str, Any]:
    result = served.get("/v1/price-engine/metrics")
    assert result.status == 200
    body: dict[str, Any] = result.json()
    return body


def _feed(served: Daemon) -> EntryClient:
    found = FEED.search(served.stderr())
    assert found is not None, served.stderr()
    return EntryClient(found.group(1), int(found.group(2)))


def _raw_post(body: bytes) -> bytes:
    return (
        b"POST /v1/prices HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )


# --- HTTP ----------------------------------------------------------------------


def test_a_get_after_the_post_is_answered_sees_it(served: Daemon) -> None:
    """On one keep-alive connection and on another: the snapshot is current
    before the POST is answered."""
    with served.connect() as conn, served.connect() as other:
        for n in range(1, 30):
            price = f"{100 + n}.25"
            body = json.dumps({"symbol": "FRESH-1", "price": price}).encode()
            conn.send(_raw_post(body))
            assert conn.read_response().status == 200
            for reader in (conn, other):
                reader.send(b"GET /v1/prices/FRESH-1 HTTP/1.1\r\nHost: t\r\n\r\n")
                assert reader.read_response().json()["price"] == price
            other.send(b"GET /v1/prices HTTP/1.1\r\nHost: t\r\n\r\n")
            assert other.read_response().json()["prices"]["FRESH-1"]["price"] == price


def test_one_update_or_a_list_in_arrival_order(served: Daemon) -> None:
    status, single = _post(served, "/v1/prices", {"symbol": "ORD-A", "price": 1.5, "volume": 2})
    assert status == 200 and single["applied"] == 1
    status, listed = _post(
        served,
        "/v1/prices",
        [
            {"symbol": "ORD-A", "price": "2", "timestamp_ms": 50},
            ["ORD-B", 7, 1, 10, -0.5],
            {"symbol": "ORD-A", "price": "3", "timestamp_ms": 40},
        ],
    )
    assert status == 200
    assert listed == {"applied": 3, "sequence": single["sequence"] + 3}
    quote = served.get("/v1/prices/ORD-A").json()
    assert quote == {
        "symbol": "ORD-A",
        "price": "3",
        "volume": "2",
        "timestamp_ms": 40,
        "change_24h": None,
        "sequence": single["sequence"] + 3,
    }
    every = served.get("/v1/prices").json()
    assert every["prices"]["ORD-B"]["change_24h"] == "-0.5"
    assert every["count"] == len(every["prices"])
    head = served.request("HEAD", "/v1/prices/ORD-B")
    assert head.status == 200 and head.body == b""
    assert int(head.headers["content-length"]) == len(served.get("/v1/prices/ORD-B").body)


def test_msgpack_is_answered_in_kind(served: Daemon) -> None:
    result = served.request(
        "POST",
        "/v1/prices",
        msgpack.packb({"symbol": "PACK", "price": 9.5}),
        {"Content-Type": "application/msgpack"},
    )
    assert result.status == 200
    assert result.headers["content-type"] == "application/msgpack"
    assert msgpack.unpackb(result.body)["applied"] == 1
    assert served.get("/v1/prices/PACK").json()["price"] == "9.5"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"symbol": "BAD-1", "price": -5}, "invalid_price"),
        ({"symbol": "BAD-1", "price": 5, "volume": -1}, "invalid_volume"),
        ({"symbol": "BAD-1", "price": "five"}, "invalid_price"),
        ({"symbol": "BAD-1", "price": 5, "bid": 4}, "unknown_field"),
        ({"symbol": "bad 1", "price": 5}, "invalid_symbol"),
        ([{"symbol": "BAD-1", "price": 5}, {"symbol": "BAD-1", "price": True}], "invalid_price"),
        (b'{"symbol": "BAD-1", "price": ', "invalid_json"),
        ([], "empty_batch"),
    ],
)
def test_invalid_updates_are_a_400_with_a_reason_and_apply_nothing(
    served: Daemon, body: Any, code: str
) -> None:
    assert _post(served, "/v1/prices", {"symbol": "BAD-1", "price": 1})[0] == 200
    with served.connect() as conn:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.send(_raw_post(data))
        refused = conn.read_response()
        assert refused.status == 400
        assert refused.json()["error"]["code"] == code
        assert refused.json()["error"]["message"]
        # The connection goes on, and nothing of the request was applied.
        conn.send(b"GET /v1/prices/BAD-1 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert conn.read_response().json()["price"] == "1"


def test_an_unknown_symbol_is_a_404(served: Daemon) -> None:
    result = served.get("/v1/prices/NEVER-SEEN")
    assert result.status == 404
    assert result.json()["error"]["code"] == "unknown_symbol"


# --- figures -------------------------------------------------------------------


def test_the_metrics_count_every_update_exactly(served: Daemon) -> None:
    assert _post(served, "/v1/price-engine/reset", b"")[0] == 200
    good = {"symbol": "CNT", "price": 1}
    assert _post(served, "/v1/prices", good)[0] == 200
    assert _post(served, "/v1/prices", [good, good, good])[0] == 200
    assert _post(served, "/v1/prices", [good, {**good, "price": -1}])[0] == 400
    assert _post(served, "/v1/prices", b"{nope")[0] == 400
    metrics = _metrics(served)
    assert set(metrics) == {
        "latency",
        "throughput",
        "messages_received",
        "messages_processed",
        "errors",
        "error_rate",
        "uptime_ms",
        "symbols",
        "sla_p95_us",
        "history",
    }
    assert set(metrics["latency"]) == {"p50", "p95", "p99", "mean", "min", "max", "sample_count"}
    assert metrics["messages_received"] == 7
    assert metrics["messages_processed"] == 4
    assert metrics["errors"] == 3
    assert metrics["error_rate"] == round(3 / 7, 6)
    latency = metrics["latency"]
    assert latency["sample_count"] == 4
    assert 0 < latency["min"] <= latency["p50"] <= latency["p95"] <= latency["p99"]
    assert latency["p99"] <= latency["max"]
    assert metrics["throughput"] > 0
    assert metrics["uptime_ms"] > 0
    assert isinstance(metrics["history"], list)

    reset = _post(served, "/v1/price-engine/reset", b"")[1]
    assert (reset["messages_received"], reset["errors"], reset["latency"]["sample_count"]) == (
        0,
        0,
        0,
    )
    assert served.get("/v1/prices/CNT").status == 200  # the prices stay
    check = served.health()["checks"]["prices"][0]
    assert check["status"] == "pass"


def test_the_performance_test_answers_the_metrics_shape_and_a_verdict(served: Daemon) -> None:
    status, result = _post(served, "/v1/price-engine/performance-test", {"num_updates": 3000})
    assert status == 200
    assert result["passed"] is (result["latency"]["p95"] < 1000)
    assert result["num_updates"] == result["messages_processed"] == 3000
    assert result["latency"]["sample_count"] == 3000
    assert result["errors"] == 0
    assert set(_metrics(served)) - {"history"} <= set(result)
    # It ran on a scratch engine: no test symbol reached the live map.
    assert "PERF-0" not in served.get("/v1/prices").json()["prices"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"num_updates": MAX_TEST_UPDATES + 1}, "invalid_num_updates"),
        ({"num_updates": 0}, "invalid_num_updates"),
        ({"num_updates": "10"}, "invalid_num_updates"),
        ({"num_updates": True}, "invalid_num_updates"),
        ({"updates": 10}, "unknown_field"),
        ([10], "invalid_body"),
    ],
)
def test_a_performance_test_out_of_bounds_is_a_400(served: Daemon, body: Any, code: str) -> None:
    status, answer = _post(served, "/v1/price-engine/performance-test", body)
    assert (status, answer["error"]["code"]) == (400, code)


def test_the_daemon_keeps_serving_while_a_performance_test_runs(served: Daemon) -> None:
    outcome: list[tuple[float, int, dict[str, Any]]] = []

    def run() -> None:
        status, result = _post(
            served, "/v1/price-engine/performance-test", {"num_updates": MAX_TEST_UPDATES}
        )
        outcome.append((time.monotonic(), status, result))

    thread = threading.Thread(target=run)
    thread.start()
    answered: list[float] = []
    with served.connect() as conn:
        while thread.is_alive():
            conn.send(b"GET /v1/price-engine/metrics HTTP/1.1\r\nHost: t\r\n\r\n")
            assert conn.read_response().status == 200
            answered.append(time.monotonic())
    thread.join()
    [(ended, status, result)] = outcome
    assert status == 200 and result["num_updates"] == MAX_TEST_UPDATES
    # Answers that came while the test was running, by its own clock.
    began = ended - result["duration_ms"] / 1000
    meanwhile = [t for t in answered if began < t < ended]
    assert len(meanwhile) >= 2, (result["duration_ms"], len(answered))


# --- the binary feed -------------------------------------------------------------


def test_feed_frames_are_batches_answered_in_order(served: Daemon) -> None:
    assert _post(served, "/v1/price-engine/reset", b"")[0] == 200
    with _feed(served) as feed:
        first = feed.request([["FEED-A", 10.5, 1], {"symbol": "FEED-B", "price": "20"}])
        assert first[:2] == ["ok", 2]
        # Pipelined: three frames in one send, the middle one refused whole.
        feed.send_many(
            [
                [["FEED-A", 11]],
                [["FEED-A", 99], ["FEED-B", -1]],
                [["FEED-B", 21], ["FEED-A", 12]],
            ]
        )
        replies = [feed.receive() for _ in range(3)]
    assert replies[0] == ["ok", 1, first[2] + 1]
    assert replies[1][:2] == ["error", "invalid_price"]
    assert replies[2] == ["ok", 2, first[2] + 3]
    assert served.get("/v1/prices/FEED-A").json()["price"] == "12"
    assert served.get("/v1/prices/FEED-B").json()["price"] == "21"
    metrics = _metrics(served)
    assert (metrics["messages_received"], metrics["messages_processed"], metrics["errors"]) == (
        7,
        5,
        2,
    )
    assert metrics["latency"]["sample_count"] == 5


def test_malformed_feed_frames_get_reasons(served: Daemon) -> None:
    with _feed(served) as feed:
        feed.sock.sendall(struct.pack(">I", 1) + b"\xc1")  # not msgpack
        assert feed.receive()[:2] == ["error", "bad_frame"]
        feed.sock.sendall(encode_frame({"symbol": "X"}))  # not an array
        assert feed.receive()[:2] == ["error", "bad_frame"]
        assert feed.request([])[:2] == ["error", "empty_batch"]
        assert feed.request(["FEED-C"])[:2] == ["error", "invalid_update"]
        assert feed.request([["FEED-C", 1]])[:2] == ["ok", 1]
        # A length that cannot be a frame: a reason, then the close.
        feed.sock.sendall(struct.pack(">I", 0))
        assert feed.receive()[:2] == ["error", "bad_length"]
        feed.sock.settimeout(5)
        assert feed.sock.recv(1) == b""
    assert served.get("/v1/prices/FEED-C").json()["price"] == "1"


def test_a_big_batched_feed_is_all_applied(served: Daemon) -> None:
    frames = [[[f"BULK-{n % 7}", 100 + i, 1] for n in range(500)] for i in range(40)]
    with _feed(served) as feed:
        feed.send_many(frames)
        replies = [feed.receive() for _ in frames]
    assert all(reply[:2] == ["ok", 500] for reply in replies)
    assert [r[2] for r in replies] == sorted(r[2] for r in replies)
    assert served.get("/v1/prices/BULK-3").json()["price"] == "139"


def test_the_feed_port_is_a_listener_of_its_own(served: Daemon) -> None:
    found = FEED.search(served.stderr())
    assert found is not None
    with socket.create_connection((found.group(1), int(found.group(2))), timeout=5):
        pass
    assert int(found.group(2)) != served.port
