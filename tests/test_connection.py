"""The connection loop's timeouts, in-process over socketpairs with the real reaper."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from time import perf_counter_ns

import trio

from sprintd.app import App, Route
from sprintd.hookspecs import hookimpl
from sprintd.http import Request, Response
from sprintd.testing import exchange, make_app, make_server

BIG = 8 * 1024 * 1024  # far more than a socketpair buffers


class _Big:
    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        def big(request: Request) -> Response:
            return Response(200, b"x" * BIG, b"application/octet-stream")

        return [Route("GET", "/big", big)]


async def test_a_client_that_never_reads_its_response_is_cut_off() -> None:
    app = make_app([_Big()], {"SPRINTD_SERVER__BODY_TIMEOUT": "0.3"})
    server = make_server(app)
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    with ours:
        ours.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.reap)
            with trio.fail_after(5):
                await server.connection(theirs)
            nursery.cancel_scope.cancel()
        assert not server.connections
        # What it did take is the start of the response, never all of it.
        ours.setblocking(False)
        taken = 0
        try:
            while chunk := ours.recv(1 << 20):
                taken += len(chunk)
        except BlockingIOError:
            pass
        assert 0 < taken < BIG


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
