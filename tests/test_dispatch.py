"""X-Request-ID, as dispatch handles it, on a real daemon's strict and h11 paths.

A client's valid id is echoed; an invalid one (too long, a space, a byte
outside visible ASCII) is replaced; a dynamic response to a request without
one gets one made by the worker; a snapshot asked without one is answered
pre-encoded, without one (the fast path's bytes), and with one it is echoed.
"""

from __future__ import annotations

import re

import pytest

from .daemons import Daemon, DaemonFactory, RawResponse

# A made id: the worker's random prefix, a dash, a 12-digit hex counter.
MADE = re.compile(r"[0-9a-f]{10}-[0-9a-f]{12}")
PATHS = {
    "strict": {},
    "h11": {"SPRINTD_SERVER__STRICT_PARSER": "false"},
}


@pytest.fixture(scope="module", params=sorted(PATHS))
def served(request: pytest.FixtureRequest, module_daemon: DaemonFactory) -> Daemon:
    return module_daemon(env=PATHS[request.param])


def _ask(daemon: Daemon, head: str) -> RawResponse:
    with daemon.connect() as conn:
        conn.send(head.encode("latin-1"))
        return conn.read_response(head=head.startswith("HEAD "))


def test_a_valid_id_is_echoed_on_a_dynamic_response(served: Daemon) -> None:
    response = _ask(served, "GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Request-ID: abc-123.Z\r\n\r\n")
    assert response.status == 200
    assert response.header("x-request-id") == "abc-123.Z"


def test_a_request_without_one_gets_one_made(served: Daemon) -> None:
    first = _ask(served, "GET /v1/stats HTTP/1.1\r\nHost: x\r\n\r\n").header("x-request-id")
    second = _ask(served, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").header("x-request-id")
    assert first is not None and MADE.fullmatch(first), first
    assert second is not None and MADE.fullmatch(second), second
    assert first != second
    # One worker: one prefix, a counter after it.
    assert first[:11] == second[:11]


@pytest.mark.parametrize(
    "value",
    ["r" * 129, "two words", "caf\xe9"],
    ids=["too-long", "space", "not-ascii"],
)
def test_an_invalid_id_is_replaced(served: Daemon, value: str) -> None:
    response = _ask(served, f"GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Request-ID: {value}\r\n\r\n")
    made = response.header("x-request-id")
    assert response.status == 200, response.raw_head
    assert made is not None and MADE.fullmatch(made), made


def test_the_longest_valid_id_is_echoed(served: Daemon) -> None:
    value = "r" * 128
    response = _ask(served, f"GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Request-ID: {value}\r\n\r\n")
    assert response.header("x-request-id") == value


def test_errors_carry_it(served: Daemon) -> None:
    response = _ask(served, "DELETE /livez HTTP/1.1\r\nHost: x\r\nX-Request-ID: e-1\r\n\r\n")
    assert response.status == 405
    assert response.header("x-request-id") == "e-1"


def test_a_snapshot_without_one_is_answered_without_one(served: Daemon) -> None:
    response = _ask(served, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    assert response.status == 200
    assert response.header("x-request-id") is None


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_snapshot_with_one_echoes_it(served: Daemon, method: str) -> None:
    plain = _ask(served, f"{method} /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    response = _ask(served, f"{method} /livez HTTP/1.1\r\nHost: x\r\nX-Request-ID: s-9\r\n\r\n")
    assert response.status == 200
    assert response.header("x-request-id") == "s-9"
    assert response.body == plain.body
    assert response.header("content-length") == plain.header("content-length")


def test_a_snapshot_with_an_invalid_one_gets_one_made(served: Daemon) -> None:
    response = _ask(served, "GET /livez HTTP/1.1\r\nHost: x\r\nX-Request-ID: a b\r\n\r\n")
    made = response.header("x-request-id")
    assert made is not None and MADE.fullmatch(made), made
