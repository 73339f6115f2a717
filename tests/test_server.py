"""The HTTP server over real sockets, against daemons in subprocesses.

One shared daemon has small limits and timeouts (header and body 0.5 s,
keep-alive 1 s, heads of 4 KiB, bodies of 1 KiB) and the ``sprintd_test_slow``
plugin; the worker and drain tests start their own.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

import msgpack
import pytest

from .daemons import (
    FAST_SERVER_ENV,
    NO_ORDERS,
    PLUGINS_DIR,
    Daemon,
    DaemonFactory,
    RawConn,
    RawResponse,
    wait_for,
)

MAX_HEAD = 4096
MAX_BODY = 1024
HEADER_TIMEOUT = 0.5
KEEPALIVE_TIMEOUT = 1.0
# Generous: timeouts are checked by a reaper every 0.1 s, on a shared machine.
CLOSE_BOUND = 10.0
SLOW_PLUGIN = {"SPRINTD_PLUGINS": '["sprintd_test_slow"]'}
LIVEZ = b'{"status":"pass"}'


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    env = dict(FAST_SERVER_ENV)
    env |= {
        "SPRINTD_SERVER__HEADER_TIMEOUT": str(HEADER_TIMEOUT),
        "SPRINTD_SERVER__BODY_TIMEOUT": "0.5",
        "SPRINTD_SERVER__KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
        "SPRINTD_SERVER__MAX_HEADER_BYTES": str(MAX_HEAD),
        "SPRINTD_SERVER__MAX_BODY_BYTES": str(MAX_BODY),
        **SLOW_PLUGIN,
    }
    return module_daemon(env=env, pythonpath=[PLUGINS_DIR])


def request(
    method: str,
    path: str,
    *headers: str,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    host: bool = True,
) -> bytes:
    lines = [f"{method} {path} {version}"]
    if host:
        lines.append("Host: test")
    lines += headers
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def error_of(response: RawResponse) -> dict[str, str]:
    assert response.header("content-type") == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"code", "message"}
    assert body["error"]["message"]
    error: dict[str, str] = body["error"]
    return error


def assert_still_healthy(served: Daemon) -> None:
    assert served.process.poll() is None
    assert served.get("/livez").status == 200
    assert served.get("/health").status == 200


# --- keep-alive and pipelining -------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(served: Daemon) -> None:
    pids = set()
    with served.connect() as conn:
        for i in range(12):
            path = ("/livez", "/health", "/readyz", "/v1/stats")[i % 4]
            conn.send(request("GET", path))
            response = conn.read_response()
            assert response.status == 200, (path, response)
            assert response.header("connection") is None
            if path == "/health":
                pids.add(response.json()["runtime"]["pid"])
        assert conn.is_open_after(0.2)
    assert pids == {served.pid}


PIPELINE = [
    # (request, expected status, a check on the body, is it a HEAD)
    (request("GET", "/livez"), 200, lambda b: b == LIVEZ, False),
    (request("GET", "/health"), 200, lambda b: json.loads(b)["tier"] == "free", False),
    (request("GET", "/readyz", "Connection: keep-alive"), 200, lambda b: b == LIVEZ, False),
    (request("POST", "/test/echo", body=b"x" * 300), 200, lambda b: b'"length":300' in b, False),
    (request("POST", "/health", body=b"hello"), 405, lambda b: b"method_not_allowed" in b, False),
    (request("GET", "/no/such"), 404, lambda b: b"not_found" in b, False),
    (request("HEAD", "/livez"), 200, lambda b: b == b"", True),
    (request("GET", "/v1/stats"), 200, lambda b: "routes" in json.loads(b), False),
    (request("GET", "/livez", "X-Trace: 1"), 200, lambda b: b == LIVEZ, False),
]


def _check_pipeline(conn: RawConn) -> None:
    for index, (_, status, check, head) in enumerate(PIPELINE):
        response = conn.read_response(head=head)
        assert response.status == status, (index, response)
        assert check(response.body), (index, response.body)
    assert conn.is_open_after(0.2)


def test_pipelined_requests_answered_in_order(served: Daemon) -> None:
    """Fast-path and h11 requests, with and without bodies, in one send."""
    with served.connect() as conn:
        conn.send(b"".join(r for r, *_ in PIPELINE))
        _check_pipeline(conn)


@pytest.mark.parametrize("chunk", [1, 7, 64])
def test_pipelined_requests_split_anywhere(served: Daemon, chunk: int) -> None:
    """The same pipeline arriving in small pieces: heads and bodies cut mid-way."""
    data = b"".join(r for r, *_ in PIPELINE)
    with served.connect() as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for start in range(0, len(data), chunk):
            conn.send(data[start : start + chunk])
            if start % (chunk * 16) == 0:
                time.sleep(0.001)
        _check_pipeline(conn)


# --- malformed requests --------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /livez HTTP/1.1\r\n\r\n",  # no Host
        b"GET /livez HTTP/1.1\r\nHost: a\r\nno colon here\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost: a\r\nContent-Length: x\r\n\r\n",
        b"GET /li vez HTTP/1.1\r\nHost: a\r\n\r\n",
    ],
    ids=["request-line", "no-host", "header-line", "content-length", "target"],
)
def test_malformed_request_gets_400_and_close(served: Daemon, data: bytes) -> None:
    with served.connect() as conn:
        conn.send(data)
        response = conn.read_response()
        assert response.status == 400
        assert response.header("connection") == "close"
        error_of(response)
        assert conn.wait_closed(CLOSE_BOUND) == b""
    assert_still_healthy(served)


def test_malformed_request_after_a_good_one(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(request("GET", "/livez") + b"BAD LINE\r\n\r\n")
        assert conn.read_response().status == 200
        response = conn.read_response()
        assert response.status == 400
        assert error_of(response)["code"] == "bad_request"
        assert conn.wait_closed(CLOSE_BOUND) == b""
    assert_still_healthy(served)


# --- size limits ---------------------------------------------------------------


def _send_until_answered(conn: RawConn, first: bytes, more: bytes, limit: int) -> None:
    """Send ``first``, then ``more`` repeatedly (up to ``limit`` bytes in all),
    stopping as soon as the server answers or closes."""
    conn.send(first)
    sent = len(first)
    while sent < limit:
        if conn.readable(0.005):
            return
        try:
            conn.send(more)
        except (BrokenPipeError, ConnectionResetError):
            return
        sent += len(more)
    raise AssertionError(f"no answer after {sent} bytes")


def test_oversized_head_sent_incrementally_gets_431(served: Daemon) -> None:
    header = b"X-Filler: " + b"f" * 190 + b"\r\n"
    with served.connect() as conn:
        _send_until_answered(conn, b"GET /health HTTP/1.1\r\nHost: t\r\n", header, 4 * MAX_HEAD)
        response = conn.read_response()
        assert response.status == 431
        error_of(response)
        conn.wait_closed(CLOSE_BOUND)
    assert_still_healthy(served)


def test_oversized_head_sent_whole_gets_431(served: Daemon) -> None:
    """The limit holds whether the head trickles in or arrives in one piece."""
    filler = "".join(f"X-Filler-{i}: {'f' * 100}\r\n" for i in range(60))
    data = f"GET /health HTTP/1.1\r\nHost: t\r\n{filler}\r\n".encode()
    assert len(data) > 1.5 * MAX_HEAD
    with served.connect() as conn:
        conn.send(data)
        response = conn.read_response()
        assert response.status == 431, response.status
        conn.wait_closed(CLOSE_BOUND)


def test_head_under_the_limit_is_served(served: Daemon) -> None:
    filler = "".join(f"X-Filler-{i}: {'f' * 100}\r\n" for i in range(25))
    data = f"GET /health HTTP/1.1\r\nHost: t\r\n{filler}\r\n".encode()
    assert 2048 < len(data) < MAX_HEAD
    with served.connect() as conn:
        conn.send(data)
        assert conn.read_response().status == 200


def test_content_length_over_the_limit_gets_413(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(
            b"POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
        )
        response = conn.read_response()
        assert response.status == 413
        assert error_of(response)["code"] == "body_too_large"
        assert response.header("connection") == "close"
        conn.wait_closed(CLOSE_BOUND)
    assert_still_healthy(served)


def test_body_at_the_limit_is_accepted(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(request("POST", "/test/echo", body=b"b" * MAX_BODY))
        response = conn.read_response()
        assert response.status == 200
        assert response.json()["length"] == MAX_BODY


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def test_chunked_body_over_the_limit_gets_413(served: Daemon) -> None:
    head = b"POST /test/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    with served.connect() as conn:
        _send_until_answered(conn, head, _chunk(b"c" * 200), 8 * MAX_BODY)
        response = conn.read_response()
        assert response.status == 413
        assert error_of(response)["code"] == "body_too_large"
        conn.wait_closed(CLOSE_BOUND)
    assert_still_healthy(served)


def test_chunked_body_under_the_limit_is_accepted(served: Daemon) -> None:
    head = b"POST /test/echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
    with served.connect() as conn:
        conn.send(head + _chunk(b"a" * 500) + _chunk(b"b" * 500) + b"0\r\n\r\n")
        response = conn.read_response()
        assert response.status == 200
        assert response.json()["length"] == 1000


# The timeouts (header, body, keep-alive, a busy handler's none) are tested in
# process on trio's autojump clock: tests/test_connection.py.


# --- routing errors ------------------------------------------------------------


def test_unknown_path_gets_404_json(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(request("GET", "/no/such/thing"))
        response = conn.read_response()
        assert response.status == 404
        assert error_of(response)["code"] == "not_found"
        # A 404 is an answer, not a reason to drop the connection.
        conn.send(request("GET", "/livez"))
        assert conn.read_response().status == 200


def test_unknown_path_in_msgpack(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(request("GET", "/no/such/thing", "Accept: application/msgpack"))
        response = conn.read_response()
        assert response.status == 404
        assert response.header("content-type") == "application/msgpack"
        assert msgpack.unpackb(response.body)["error"]["code"] == "not_found"


def test_wrong_method_gets_405(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(request("DELETE", "/health"))
        response = conn.read_response()
        assert response.status == 405
        assert error_of(response)["code"] == "method_not_allowed"
        conn.send(request("GET", "/livez"))
        assert conn.read_response().status == 200


def test_405_names_the_allowed_methods(served: Daemon) -> None:
    """RFC 9110 section 15.5.6: a 405 MUST carry an Allow header."""
    with served.connect() as conn:
        conn.send(request("DELETE", "/health"))
        response = conn.read_response()
    assert response.status == 405
    allow = response.header("allow")
    assert allow is not None, response.raw_head
    assert {m.strip() for m in allow.split(",")} >= {"GET"}


def test_wrong_method_on_a_snapshot_path_gets_405(served: Daemon) -> None:
    """/livez exists (GET and HEAD): a POST to it is 405, not 404."""
    with served.connect() as conn:
        conn.send(request("POST", "/livez", body=b"{}"))
        response = conn.read_response()
    assert response.status == 405, response.body


# --- a plugin's faults ----------------------------------------------------------

FAULTY_PLUGIN = {"SPRINTD_PLUGINS": '["sprintd_test_faulty"]'}
# The cases of sprintd_test_faulty: a dict, None, a Response with a str body,
# a status outside 100-599 (600, 99), a str header, sys.exit(), and an
# HTTPError whose headers do not encode.
FAULTS = [
    "dict",
    "none",
    "str-body",
    "status-600",
    "status-99",
    "str-header",
    "exit",
    "bad-http-error",
]


@pytest.fixture(scope="module")
def faulty(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon(env=FAST_SERVER_ENV | FAULTY_PLUGIN, pythonpath=[PLUGINS_DIR])


def _assert_500_and_still_serving(faulty: Daemon, data: bytes) -> None:
    with faulty.connect() as conn:
        conn.send(data)
        response = conn.read_response()
        assert response.status == 500, response
        assert error_of(response)["code"] == "internal_error"
        assert response.header("connection") is None  # the connection is kept
        conn.send(request("GET", "/health"))
        assert conn.read_response().status == 200
    assert_still_healthy(faulty)


@pytest.mark.parametrize("case", FAULTS)
@pytest.mark.parametrize("kind", ["", "async/"], ids=["sync", "async"])
def test_a_handler_that_returns_the_wrong_thing_is_a_500(
    faulty: Daemon, kind: str, case: str
) -> None:
    _assert_500_and_still_serving(faulty, request("GET", f"/test/faulty/{kind}{case}"))
    # One line names the route by its pattern, not the path it was asked by.
    line = f"handler failed: GET /test/faulty/{kind}{{case}} (/test/faulty/{kind}{case}):"
    wait_for(lambda: line in faulty.stderr(), timeout=5)


def test_a_handler_that_fails_a_head_is_a_500_without_a_body(faulty: Daemon) -> None:
    with faulty.connect() as conn:
        conn.send(request("HEAD", "/test/faulty/dict") + request("GET", "/livez"))
        head = conn.read_response(head=True)
        assert head.status == 500
        assert int(head.header("content-length") or 0) > 0
        # A body would have been read as the start of this one.
        assert (conn.read_response().body) == LIVEZ


def test_an_admin_handler_that_returns_the_wrong_thing_is_a_500(faulty: Daemon) -> None:
    _assert_500_and_still_serving(faulty, request("POST", "/test/faulty/admin/dict", body=b"{}"))
    line = "handler failed: POST /test/faulty/admin/{case} (/test/faulty/admin/dict): "
    wait_for(lambda: line in faulty.stderr(), timeout=5)


# --- HEAD, HTTP/1.0, Connection: close -----------------------------------------


@pytest.mark.parametrize("extra", [(), ("Connection: keep-alive",)], ids=["fast", "h11"])
def test_head_of_a_snapshot_has_a_length_but_no_body(served: Daemon, extra: tuple[str]) -> None:
    with served.connect() as conn:
        # A GET right behind the HEAD: any body bytes would corrupt its status line.
        conn.send(request("HEAD", "/livez", *extra) + request("GET", "/readyz"))
        head = conn.read_response(head=True)
        assert head.status == 200
        assert head.header("content-length") == str(len(LIVEZ))
        after = conn.read_response()
        assert after.status == 200
        assert after.body == LIVEZ


def test_head_of_a_route_has_a_length_but_no_body(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(request("HEAD", "/health") + request("GET", "/livez"))
        head = conn.read_response(head=True)
        assert head.status == 200
        assert head.header("content-type") == "application/health+json"
        assert int(head.header("content-length") or 0) > 100
        after = conn.read_response()
        assert (after.status, after.body) == (200, LIVEZ)


@pytest.mark.parametrize("path", ["/livez", "/health"])
def test_http_1_0_closes_after_the_response(served: Daemon, path: str) -> None:
    with served.connect() as conn:
        conn.send(request("GET", path, version="HTTP/1.0", host=False))
        response = conn.read_response()
        assert response.status == 200
        assert response.header("connection") == "close"
        assert conn.wait_closed(CLOSE_BOUND) == b""


@pytest.mark.parametrize("path", ["/livez", "/health"])
def test_connection_close_is_honoured(served: Daemon, path: str) -> None:
    with served.connect() as conn:
        # The second request must not be answered: the first one closes.
        conn.send(request("GET", path, "Connection: close") + request("GET", "/livez"))
        response = conn.read_response()
        assert response.status == 200
        assert response.header("connection") == "close"
        assert conn.wait_closed(CLOSE_BOUND) == b""


def test_many_connections_at_once(served: Daemon) -> None:
    conns = [served.connect() for _ in range(40)]
    try:
        for conn in conns:
            conn.send(request("GET", "/livez"))
        for conn in conns:
            assert conn.read_response().body == LIVEZ
    finally:
        for conn in conns:
            conn.close()


# --- workers -------------------------------------------------------------------


def _ppid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def test_two_workers_share_one_port(daemon: DaemonFactory) -> None:
    served = daemon("--workers", "2", workers=2, env=FAST_SERVER_ENV | NO_ORDERS)
    assert sorted(served.worker_lines) == ["0", "1"]
    runtimes: dict[int, dict[str, object]] = {}

    def both_answered() -> bool:
        runtime = served.get("/health").json()["runtime"]  # a fresh connection each time
        runtimes[runtime["pid"]] = runtime
        return len(runtimes) == 2

    wait_for(both_answered, timeout=20, interval=0)
    assert served.pid not in runtimes
    allowed = sorted(os.sched_getaffinity(served.pid))
    for pid, runtime in runtimes.items():
        assert _ppid(pid) == served.pid
        assert runtime["workers"] == 2
        # The free tier pins nothing, however many workers it runs (turbo and
        # enterprise put worker i on core i: test_tuning).
        assert runtime["cpu_affinity"] == allowed
        assert runtime["cpu_affinity"] == sorted(os.sched_getaffinity(pid))
    assert {runtime["worker"] for runtime in runtimes.values()} == {0, 1}

    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    for pid in runtimes:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


# --- signals and drain ---------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_stops_an_idle_daemon_with_status_0(daemon: DaemonFactory, signum: int) -> None:
    served = daemon(env=FAST_SERVER_ENV)
    served.signal(signum)
    assert served.wait() == 0
    assert f"{signal.Signals(signum).name}: draining" in served.stderr()


# The drain's delay, timeout and in-flight requests: in process on the autojump
# clock, tests/test_serve.py; clean closes and last answers: tests/test_drain.py.


# --- Expect: 100-continue, SIGHUP ----------------------------------------------


def test_expect_100_continue(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(
            b"POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        interim = conn.read_response()
        assert interim.status == 100
        conn.send(b"hello")
        response = conn.read_response()
        assert response.status == 200
        assert response.json() == {"length": 5, "head": "hello"}


def test_sighup_reloads_server_limits(daemon: DaemonFactory, tmp_path: Path) -> None:
    config = tmp_path / "limits.toml"
    config.write_text("[server]\nmax_body_bytes = 1024\n")
    env = dict(FAST_SERVER_ENV) | SLOW_PLUGIN
    served = daemon("--config", str(config), env=env, pythonpath=[PLUGINS_DIR])
    body = b"z" * 2000
    assert served.request("POST", "/test/echo", body=body).status == 413

    config.write_text("[server]\nmax_body_bytes = 4096\n")
    served.signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: applied" in served.stderr(), timeout=10)
    assert "server.max_body_bytes" in served.stderr()
    result = served.request("POST", "/test/echo", body=body)
    assert result.status == 200
    assert result.json()["length"] == 2000
    # Still the same process: reloaded, not restarted.
    assert served.health()["runtime"]["pid"] == served.pid


def test_sighup_keeps_the_settings_when_the_file_is_bad(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    config = tmp_path / "limits.toml"
    config.write_text("[server]\nmax_body_bytes = 1024\n")
    env = dict(FAST_SERVER_ENV) | SLOW_PLUGIN
    served = daemon("--config", str(config), env=env, pythonpath=[PLUGINS_DIR])
    config.write_text("[server]\nmax_body_bytes = -5\n")
    served.signal(signal.SIGHUP)
    wait_for(lambda: "SIGHUP: keeping the running settings" in served.stderr(), timeout=10)
    assert served.process.poll() is None
    assert served.request("POST", "/test/echo", body=b"z" * 1000).status == 200
    assert served.request("POST", "/test/echo", body=b"z" * 2000).status == 413
