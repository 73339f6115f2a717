"""Taking a connection over (``server.upgrade``): the 101, the session, the reaper, drain.

In process, over socketpairs, with the real connection loop and reaper on
trio's autojump clock; the WebSocket built on it is tested against a real
daemon in ``test_orders_feed.py``.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

import pytest
import trio

from sprintd import (
    Conn,
    HTTPError,
    Request,
    Response,
    Route,
    Upgrade,
    asks_upgrade,
    hookimpl,
    recv,
    send_all,
    websocket_accept,
)
from sprintd.app import App
from sprintd.server.connection import HTTPServer
from sprintd.testing import make_app, make_server

TIMEOUTS = {
    "SPRINTD_SERVER__HEADER_TIMEOUT": "0.5",
    "SPRINTD_SERVER__BODY_TIMEOUT": "0.7",
    "SPRINTD_SERVER__KEEPALIVE_TIMEOUT": "1.0",
    "SPRINTD_SERVER__FRAMED_IDLE_TIMEOUT": "1.0",
}
# Longer than every timeout above together.
QUIET = 30.0


async def _echo(conn: Conn, rest: bytes) -> None:
    """Says what came with the head, echoes until the peer ends; says
    goodbye when a drain ends it."""
    assert conn.takeover is not None
    view = memoryview(conn.buf)
    await send_all(conn.sock, b"rest:" + rest + b";")
    with conn.takeover:
        while data := await recv(conn.sock, view):
            await send_all(conn.sock, data)
    if conn.closing:
        await send_all(conn.sock, b"goodbye")


async def _boom(conn: Conn, rest: bytes) -> None:
    raise RuntimeError("the session's bug")


class _Upgrading:
    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        def echo(request: Request) -> Response:
            # Answers Upgrade whatever was asked: dispatch must refuse it
            # to a request that did not ask for this protocol.
            return Upgrade(_echo, b"echo", ((b"x-session", b"echo"),))

        def boom(request: Request) -> Response:
            assert asks_upgrade(request) == b"echo"
            return Upgrade(_boom, b"echo")

        return [Route("GET", "/echo", echo, scope="open"), Route("GET", "/boom", boom)]


def _asking(path: str, extra: bytes = b"") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: t\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n".encode()
        + extra
    )


async def _read_until(sock: trio.socket.SocketType, end: bytes) -> bytes:
    got = b""
    while not got.endswith(end):
        more = await sock.recv(65536)
        assert more, got
        got += more
    return got


async def _served(server: HTTPServer, nursery: trio.Nursery) -> trio.socket.SocketType:
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    nursery.start_soon(server.connection, theirs)
    return trio.socket.from_stdlib_socket(ours)


async def test_an_upgrade_is_a_101_then_the_session_has_the_connection() -> None:
    server = make_server(make_app([_Upgrading()]))
    async with trio.open_nursery() as nursery:
        client = await _served(server, nursery)
        # The session's first bytes came with the head, in the same write.
        await client.send(_asking("/echo", b"early"))
        answer = await _read_until(client, b"rest:early;")
        head, _, _ = answer.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 101 Switching Protocols"
        assert {b"upgrade: echo", b"connection: Upgrade", b"x-session: echo"} <= set(lines)
        assert not any(line.startswith(b"content-length") for line in lines)
        await client.send(b"GET / HTTP/1.1\r\n\r\n")  # not HTTP any more: echoed
        assert await _read_until(client, b"\r\n\r\n") == b"GET / HTTP/1.1\r\n\r\n"
        client.shutdown(socket.SHUT_WR)
        assert await client.recv(100) == b""
    assert not server.connections


async def test_an_upgrade_the_request_did_not_ask_for_is_the_routes_500() -> None:
    server = make_server(make_app([_Upgrading()]))
    async with trio.open_nursery() as nursery:
        client = await _served(server, nursery)
        for asked in (
            b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n",  # no Upgrade: the strict parser's
            b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: other\r\nConnection: upgrade\r\n\r\n",
            b"GET /echo HTTP/1.1\r\nHost: t\r\nUpgrade: echo\r\n\r\n",  # no Connection: upgrade
        ):
            await client.send(asked)
            answer = await _read_until(client, b"}}")
            assert answer.startswith(b"HTTP/1.1 500 "), answer
            assert b'"internal_error"' in answer
        client.close()


async def test_an_upgraded_connection_is_left_alone_by_the_reaper(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = make_server(make_app([_Upgrading()], TIMEOUTS))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.reap)
        client = await _served(server, nursery)
        await client.send(_asking("/echo"))
        await _read_until(client, b"rest:;")
        await trio.sleep(QUIET)  # past every timeout, many reaper ticks
        await client.send(b"still here")
        assert await _read_until(client, b"here") == b"still here"
        client.close()
        while server.connections:
            await trio.sleep(0.1)
        nursery.cancel_scope.cancel()


async def test_a_drain_ends_the_session_which_says_goodbye() -> None:
    server = make_server(make_app([_Upgrading()]))
    async with trio.open_nursery() as nursery:
        client = await _served(server, nursery)
        await client.send(_asking("/echo"))
        await _read_until(client, b"rest:;")
        server.drain()
        with trio.fail_after(10):
            assert await _read_until(client, b"goodbye") == b"goodbye"
        # Then the server's FIN, after which it reads what we still send.
        assert await client.recv(100) == b""
        client.close()
    assert not server.connections


async def test_a_session_that_raises_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server(make_app([_Upgrading()]))
    with caplog.at_level(logging.ERROR, "sprintd.server"):
        async with trio.open_nursery() as nursery:
            failing = await _served(server, nursery)
            await failing.send(_asking("/boom"))
            answer = await _read_until(failing, b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 101 ")
            assert await failing.recv(100) == b""
            other = await _served(server, nursery)
            await other.send(_asking("/echo"))
            await _read_until(other, b"rest:;")
            failing.close()
            other.close()
    assert "an upgraded connection's session failed" in caplog.text
    assert "the session's bug" in caplog.text


def test_websocket_accept_is_rfc_6455s_and_refuses_a_bad_handshake() -> None:
    def handshake(*headers: tuple[bytes, bytes]) -> Request:
        return Request(b"GET", b"/ws", b"", list(headers))

    version = (b"sec-websocket-version", b"13")
    # RFC 6455 section 1.3's own example.
    key = (b"sec-websocket-key", b"dGhlIHNhbXBsZSBub25jZQ==")
    assert websocket_accept(handshake(version, key)) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    with pytest.raises(HTTPError) as old:
        websocket_accept(handshake((b"sec-websocket-version", b"8"), key))
    assert old.value.status == 426
    with pytest.raises(HTTPError) as keyless:
        websocket_accept(handshake(version))
    assert keyless.value.status == 400
