"""HTTP/1.1 conformance (RFC 9110, RFC 9112) of a real daemon, over raw sockets.

What a strict peer or a proxy in front of sprintd relies on: only HTTP/1.0
and 1.1 are spoken (505 otherwise), control characters in a field value are
refused, a request with both Content-Length and Transfer-Encoding is framed by
the latter and its connection closed, an absolute-form target is served,
empty lines before a request line are ignored, and a response that closes
the connection reaches the client even when it is still sending (a
lingering close, not a reset).

Each case is sent to a snapshot path (which the fast path would take) and to
a route, so both paths are held to it. The lingering close's bounds are
tested in-process too, on a socketpair with trio's autojump clock, where
its timeouts take no real time.
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from collections.abc import Awaitable, Callable

import pytest
import trio

from sprintd.server.connection import HTTPServer
from sprintd.server.limits import LINGER_BYTES, LINGER_TIME, LINGER_TIMEOUT
from sprintd.testing import make_app, make_server

from .daemons import FAST_SERVER_ENV, PLUGINS_DIR, Daemon, DaemonFactory, RawConn
from .test_server import CLOSE_BOUND, LIVEZ, MAX_BODY, MAX_HEAD, error_of

ENV = FAST_SERVER_ENV | {
    "SPRINTD_PLUGINS": '["sprintd_test_slow"]',
    "SPRINTD_SERVER__MAX_HEADER_BYTES": str(MAX_HEAD),
    "SPRINTD_SERVER__MAX_BODY_BYTES": str(MAX_BODY),
}
PATHS = ["/livez", "/health"]  # a snapshot (the fast path's) and a route (h11's)
GET_LIVEZ = b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n"
GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon(env=ENV, pythonpath=[PLUGINS_DIR])


def assert_serving(served: Daemon, conn: RawConn | None = None) -> None:
    """/livez answers on ``conn`` (when it should still be open) and on a new one."""
    if conn is not None:
        conn.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
        assert conn.read_response().body == LIVEZ
    assert served.get("/livez").status == 200


# --- versions (RFC 9110 section 15.6.6, RFC 9112 section 2.3) --------------------


@pytest.mark.parametrize("version", ["HTTP/9.9", "HTTP/1.2", "HTTP/2.0", "HTTP/0.9", "HTTP/3.0"])
@pytest.mark.parametrize("path", PATHS)
def test_a_version_other_than_1_0_or_1_1_is_505(served: Daemon, path: str, version: str) -> None:
    with served.connect() as conn:
        conn.send(f"GET {path} {version}\r\nHost: t\r\n\r\n".encode())
        response = conn.read_response()
        assert response.status == 505, response
        assert error_of(response)["code"] == "http_version_not_supported"
        assert response.header("connection") == "close"
        assert conn.wait_closed(CLOSE_BOUND) == b""
    assert_serving(served)


def test_the_http2_preface_is_505(served: Daemon) -> None:
    """A client that speaks HTTP/2 with prior knowledge hears why it failed."""
    with served.connect() as conn:
        conn.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        response = conn.read_response()
        assert response.status == 505, response
        assert error_of(response)["code"] == "http_version_not_supported"
        assert conn.wait_closed(CLOSE_BOUND) == b""
    assert_serving(served)


# --- field values (RFC 9110 section 5.5) ----------------------------------------

# Every control character but HTAB; NUL, VT, FF and CR are h11's own refusals.
CONTROLS = [*range(0x00, 0x09), *range(0x0B, 0x0D), *range(0x0E, 0x20), 0x7F]


@pytest.mark.parametrize("byte", CONTROLS, ids=lambda b: f"0x{b:02x}")
@pytest.mark.parametrize("path", PATHS)
def test_a_control_character_in_a_field_value_is_400(served: Daemon, path: str, byte: int) -> None:
    with served.connect() as conn:
        conn.send(b"GET %s HTTP/1.1\r\nHost: t\r\nX-Note: a%cb\r\n\r\n" % (path.encode(), byte))
        response = conn.read_response()
        assert response.status == 400, response
        assert error_of(response)["code"] == "bad_request"
        assert conn.wait_closed(CLOSE_BOUND) == b""
    assert_serving(served)


@pytest.mark.parametrize("value", [b"a\tb", b"caf\xe9", b"\x80\xff", b"a  b"], ids=repr)
@pytest.mark.parametrize("path", PATHS)
def test_tabs_and_obs_text_in_a_field_value_are_accepted(
    served: Daemon, path: str, value: bytes
) -> None:
    with served.connect() as conn:
        conn.send(b"GET %s HTTP/1.1\r\nHost: t\r\nX-Note: %s\r\n\r\n" % (path.encode(), value))
        assert conn.read_response().status == 200
        assert_serving(served, conn)


# --- Content-Length with Transfer-Encoding (RFC 9112 section 6.1) ----------------

CHUNKED_HELLO = b"5\r\nhello\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n",
        b"Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
        # A length over the limit is not the body's: Transfer-Encoding frames it.
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % (10 * MAX_BODY),
    ],
    ids=["length-first", "coding-first", "zero-length", "length-over-limit"],
)
def test_a_request_with_both_framings_is_read_chunked_then_closed(
    served: Daemon, framing: bytes
) -> None:
    """The smuggling set-up: a proxy that frames by Content-Length would see
    another request in what sprintd reads as the body, or the reverse; closing
    after the response leaves nothing for either to disagree on."""
    head = b"POST /test/echo HTTP/1.1\r\nHost: t\r\n" + framing + b"\r\n"
    smuggled = b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n"
    with served.connect() as conn:
        conn.send(head + CHUNKED_HELLO + smuggled)
        response = conn.read_response()
        assert response.status == 200, response
        assert response.json() == {"length": 5, "head": "hello"}
        assert response.header("connection") == "close"
        # What followed the chunked body is not answered.
        assert conn.wait_closed(CLOSE_BOUND) == b""
    assert_serving(served)


# --- absolute-form targets (RFC 9112 section 3.2.2) ------------------------------


def _not_found(path: str) -> bytes:
    return b'{"error":{"code":"not_found","message":"no route for %s"}}' % path.encode()


@pytest.mark.parametrize(
    ("target", "status", "body"),
    [
        (b"http://t/livez", 200, LIVEZ),
        (b"http://t:8080/livez", 200, LIVEZ),
        (b"HTTP://T/livez", 200, LIVEZ),
        (b"https://t/livez", 200, LIVEZ),
        (b"http://t/test/slow?seconds=0", 200, b'{"slept":0.0}'),
        (b"http://t/no/such", 404, _not_found("/no/such")),
        # The path of "http://t" is "/" (RFC 9112 section 3.2.2).
        (b"http://t", 404, _not_found("/")),
        (b"http://t?x=1", 404, _not_found("/")),
    ],
)
def test_an_absolute_form_target_is_served_by_its_path(
    served: Daemon, target: bytes, status: int, body: bytes
) -> None:
    with served.connect() as conn:
        conn.send(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % target)
        response = conn.read_response()
        assert (response.status, response.body) == (status, body), response
        assert_serving(served, conn)


# --- HEAD (RFC 9110 section 9.3.2) ------------------------------------------------


@pytest.mark.parametrize("path", ["/no/such", "/test/echo"])
def test_an_error_answering_a_head_has_no_body(served: Daemon, path: str) -> None:
    """A body after it would be read as the start of the next response."""
    with served.connect() as conn:
        conn.send(b"HEAD %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode() + GET_LIVEZ)
        head = conn.read_response(head=True)
        assert head.status in (404, 405), head
        assert int(head.header("content-length") or 0) > 0
        after = conn.read_response()
        assert (after.status, after.body) == (200, LIVEZ), after


# --- empty lines before a request (RFC 9112 section 2.2) --------------------------


@pytest.mark.parametrize("lines", [b"\r\n", b"\n", b"\r\n\n\r\n", b"\r\n" * 8])
@pytest.mark.parametrize("request_", [GET_LIVEZ, GET_HEALTH], ids=PATHS)
def test_empty_lines_before_a_request_line_are_ignored(
    served: Daemon, lines: bytes, request_: bytes
) -> None:
    with served.connect() as conn:
        # Before the first request, and between two (a client that ends a
        # body with an extra CRLF).
        conn.send(lines + request_ + lines + request_)
        assert conn.read_response().status == 200
        assert conn.read_response().status == 200
        assert_serving(served, conn)


def test_empty_lines_arriving_one_by_one_are_ignored(served: Daemon) -> None:
    with served.connect() as conn:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for part in (b"\r", b"\n", b"\n", b"\r\n", GET_LIVEZ):
            conn.send(part)
            time.sleep(0.01)  # most likely a read each; a 400 would be read below
        assert conn.read_response().body == LIVEZ


def test_empty_lines_past_the_cap_are_400(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(b"\r\n" * 1000 + GET_LIVEZ)
        response = conn.read_response()
        assert response.status == 400, response
        conn.wait_closed(CLOSE_BOUND)
    assert_serving(served)


# --- a lingering close after an error (RFC 9112 section 9.6) ----------------------

BAD_HEAD = b"GARBAGE\r\n\r\n"
OVER_LIMIT = b"POST /test/echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (100 * MAX_BODY)
EXTRA = b"x" * 16384
EXTRA_SENDS = 8


@pytest.mark.parametrize(("head", "status"), [(BAD_HEAD, 400), (OVER_LIMIT, 413)], ids=str)
def test_a_client_still_sending_reads_the_whole_error_then_a_clean_close(
    served: Daemon, head: bytes, status: int
) -> None:
    """Closing with unread input makes the kernel reset the connection: the
    client's next send fails and its read ends in ECONNRESET, so a client
    that sends its whole request before reading never sees the status. The
    server shuts its side, reads what still comes, and closes only then."""
    with served.connect(CLOSE_BOUND) as conn:
        sock = conn.sock
        sock.sendall(head)
        # The error is on its way; the client, not reading yet, sends on.
        ready, _, _ = select.select([sock], [], [], CLOSE_BOUND)
        assert ready, "no answer"
        for _ in range(EXTRA_SENDS):
            sock.sendall(EXTRA)  # a reset makes this raise
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):  # a reset makes this raise
            conn.buf += chunk
    conn.eof = True
    response = conn.read_response()
    assert response.status == status, response
    assert response.header("connection") == "close"
    error_of(response)
    assert conn.buf == b"", "more than the one response"
    assert_serving(served)


# --- the lingering close's bounds, in-process -------------------------------------


async def _linger(
    server: HTTPServer, peer: Callable[[trio.socket.SocketType], Awaitable[None]]
) -> tuple[float, bytes]:
    """Send a bad request, run ``peer`` beside the connection until it ends;
    how long the connection took after its answer, and what the client read."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    client = trio.socket.from_stdlib_socket(ours)
    with client:
        await client.send(BAD_HEAD)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer, client)
            start = trio.current_time()
            await server.connection(theirs)
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
        received = b""
        with contextlib.suppress(OSError):
            while chunk := await client.recv(65536):
                received += chunk
    assert not server.connections
    return elapsed, received


async def _silent(client: trio.socket.SocketType) -> None:
    await trio.sleep_forever()


async def _trickle(client: trio.socket.SocketType) -> None:
    """A byte every half LINGER_TIMEOUT: never quiet long enough to be let go."""
    with contextlib.suppress(OSError):  # the server closed
        while True:
            await client.send(b"x")
            await trio.sleep(LINGER_TIMEOUT / 2)


async def _flood(client: trio.socket.SocketType) -> None:
    """Four times the byte cap without a pause, then quiet."""
    with contextlib.suppress(OSError):  # the server closed
        for _ in range(4 * LINGER_BYTES // len(EXTRA)):
            await client.send(EXTRA)
    await trio.sleep_forever()


def _answered_400(received: bytes) -> None:
    assert received.startswith(b"HTTP/1.1 400 "), received[:100]
    assert received.endswith(b"}"), "the whole response, then the end of stream"


async def test_a_lingering_close_lets_a_silent_peer_go_after_the_linger_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    elapsed, received = await _linger(make_server(make_app([])), _silent)
    assert LINGER_TIMEOUT <= elapsed < LINGER_TIME
    _answered_400(received)


async def test_a_lingering_close_ends_after_the_linger_time_for_a_peer_that_keeps_sending(
    autojump_clock: trio.abc.Clock,
) -> None:
    elapsed, received = await _linger(make_server(make_app([])), _trickle)
    assert LINGER_TIME <= elapsed < LINGER_TIME + LINGER_TIMEOUT
    _answered_400(received)


async def test_a_lingering_close_reads_no_more_than_the_byte_cap(
    autojump_clock: trio.abc.Clock,
) -> None:
    elapsed, received = await _linger(make_server(make_app([])), _flood)
    # Read to its end, the flood would be followed by LINGER_TIMEOUT of quiet.
    assert elapsed < LINGER_TIMEOUT
    _answered_400(received)


@pytest.mark.parametrize("peer", [_silent, _trickle], ids=["silent", "sending"])
async def test_a_drain_ends_a_lingering_close(
    autojump_clock: trio.abc.Clock, peer: Callable[[trio.socket.SocketType], Awaitable[None]]
) -> None:
    server = make_server(make_app([]))

    async def drained_soon(client: trio.socket.SocketType) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer, client)
            await trio.sleep(LINGER_TIMEOUT / 4)
            server.drain()

    elapsed, received = await _linger(server, drained_soon)
    assert elapsed < LINGER_TIMEOUT
    _answered_400(received)
