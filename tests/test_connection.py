"""The connection loop's timeouts, in-process over socketpairs with the real reaper.

They run on trio's autojump clock, so each timeout is measured exactly on
that clock and costs no real time: a connection must be closed after its
state's timeout and no later than two reaper ticks past it (``state``).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from time import perf_counter_ns

import trio

from sprintd.app import App, Route, SnapshotSpec
from sprintd.hookspecs import hookimpl
from sprintd.http import Request, Response
from sprintd.server.connection import HTTPServer
from sprintd.server.limits import REAPER_TICK
from sprintd.testing import StaticPlugin, exchange, make_app, make_server

BIG = 8 * 1024 * 1024  # far more than a socketpair buffers


class _Big:
    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        def big(request: Request) -> Response:
            return Response(200, b"x" * BIG, b"application/octet-stream")

        return [Route("GET", "/big", big)]


class _Sleepy:
    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        async def sleepy(request: Request) -> Response:
            await trio.sleep(SLEPT)
            return Response(200, b'{"slept":true}')

        return [Route("GET", "/sleepy", sleepy)]


TIMEOUTS = {
    "SPRINTD_SERVER__HEADER_TIMEOUT": "0.5",
    "SPRINTD_SERVER__BODY_TIMEOUT": "0.7",
    "SPRINTD_SERVER__KEEPALIVE_TIMEOUT": "1.0",
}
# Longer than every timeout above together.
SLEPT = 5.0
LATE = 2 * REAPER_TICK + 1e-6


async def _until_closed(server: HTTPServer, sent: bytes) -> tuple[float, bytes]:
    """Serve one connection that sends ``sent`` and then nothing: how long (on
    trio's clock) until the server closed it, and everything it answered."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    with ours:
        if sent:
            ours.sendall(sent)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.reap)
            with trio.fail_after(60):
                await server.connection(theirs)
            elapsed = trio.current_time() - start
            nursery.cancel_scope.cancel()
        assert not server.connections
        ours.setblocking(False)
        received = bytearray()
        try:
            while chunk := ours.recv(1 << 20):
                received += chunk
        except (BlockingIOError, ConnectionResetError):
            pass
    return elapsed, bytes(received)


async def test_a_connection_that_never_sends_is_closed_after_the_keepalive_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    elapsed, received = await _until_closed(make_server(make_app([], TIMEOUTS)), b"")
    assert 1.0 <= elapsed <= 1.0 + LATE
    assert received == b""


async def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server(make_app([StaticPlugin([SnapshotSpec("/ping", b"{}")])], TIMEOUTS))
    elapsed, received = await _until_closed(server, b"GET /ping HTTP/1.1\r\nHost: t\r\n\r\n")
    assert 1.0 <= elapsed <= 1.0 + LATE
    # The answer, then nothing: an idle connection is just closed.
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.count(b"HTTP/1.1") == 1


async def test_a_slow_head_is_cut_off_after_the_header_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server(make_app([], TIMEOUTS))
    elapsed, received = await _until_closed(server, b"GET /livez HTTP/1.1\r\nHost: t\r\n")
    assert 0.5 <= elapsed <= 0.5 + LATE
    assert received.startswith(b"HTTP/1.1 408 ")


async def test_a_slow_body_is_cut_off_after_the_body_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server(make_app([], TIMEOUTS))
    head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc"
    elapsed, received = await _until_closed(server, head)
    assert 0.7 <= elapsed <= 0.7 + LATE
    assert received.startswith(b"HTTP/1.1 408 ")


async def test_a_connection_busy_in_a_handler_is_not_timed_out(
    autojump_clock: trio.abc.Clock,
) -> None:
    """No timeout applies while a handler runs; the keep-alive one after it."""
    server = make_server(make_app([_Sleepy()], TIMEOUTS))
    elapsed, received = await _until_closed(server, b"GET /sleepy HTTP/1.1\r\nHost: t\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert received.endswith(b'{"slept":true}')
    assert SLEPT + 1.0 <= elapsed <= SLEPT + 1.0 + LATE


async def test_a_client_that_never_reads_its_response_is_cut_off(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = make_app([_Big()], {"SPRINTD_SERVER__BODY_TIMEOUT": "0.3"})
    elapsed, received = await _until_closed(
        make_server(app), b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n"
    )
    assert 0.3 <= elapsed <= 0.3 + LATE
    # What it did take is the start of the response, never all of it.
    assert 0 < len(received) < BIG


class _Stamp:
    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        def stamp(request: Request) -> Response:
            return Response(200, b"%d %d" % (request.received_ns, perf_counter_ns()))

        return [Route("POST", "/stamp", stamp)]


async def test_a_handler_sees_when_its_request_was_read() -> None:
    server = make_server(make_app([_Stamp()]))
    before = perf_counter_ns()
    answer = await exchange(
        server, b"POST /stamp HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
    )
    received, handled = (int(n) for n in answer.rsplit(b"\r\n\r\n", 1)[1].split())
    assert before <= received <= handled
