"""The framed ports' connection loop under the server: timeouts, buffers, faults.

In-process over socketpairs, with the server's real per-listener connection
wrapper and its real reaper, on trio's autojump clock: a timeout takes no
real time, and every wait is bounded by ``trio.fail_after`` on that clock.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from sprintd.app import Listener
from sprintd.framing import FrameDecoder, decode_payload, encode_frame
from sprintd.server.connection import HTTPServer
from sprintd.server.framed import framed_listener
from sprintd.server.state import NO_BUFFER
from sprintd.testing import make_app, make_server

TIMEOUTS = {
    "SPRINTD_SERVER__FRAMED_IDLE_TIMEOUT": "0.3",
    "SPRINTD_SERVER__BODY_TIMEOUT": "0.3",
}
# Far past every timeout above: a connection still open then is never closed.
BOUND = 5.0


async def _echo(batch: list[list[Any]]) -> list[Any]:
    return [["ok", *cmd] for cmd in batch]


async def _short(batch: list[list[Any]]) -> list[Any]:
    return [["ok"]] * (len(batch) - 1)


def _server(environ: dict[str, str] | None = None) -> HTTPServer:
    return make_server(make_app([], environ))


@asynccontextmanager
async def _port(
    server: HTTPServer, handler: Any = _echo, name: str = "test-port"
) -> AsyncIterator[Any]:
    """Yields ``connect()``: a client socket whose peer the server serves."""
    serve = server.listener_connection(Listener(name, "127.0.0.1", 0, framed_listener(handler)))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.reap)

        def connect() -> trio.socket.SocketType:
            ours, theirs = socket.socketpair()
            theirs.setblocking(False)
            nursery.start_soon(serve, theirs)
            return trio.socket.from_stdlib_socket(ours)

        yield connect
        nursery.cancel_scope.cancel()


async def _replies(client: trio.socket.SocketType, count: int) -> list[Any]:
    decoder = FrameDecoder()
    replies: list[Any] = []
    while len(replies) < count:
        chunk = await client.recv(65536)
        assert chunk, f"closed after {replies}"
        decoder.feed(chunk)
        replies += [decode_payload(p) for p in decoder.frames()]
    return replies


async def _closed(client: trio.socket.SocketType) -> bytes:
    """What the server sent until it closed (bounded: a close that never comes fails)."""
    received = bytearray()
    with trio.fail_after(BOUND):
        try:
            while chunk := await client.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    return bytes(received)


async def test_a_handler_with_too_few_replies_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = _server()
    calls = 0

    async def handler(batch: list[list[Any]]) -> list[Any]:
        nonlocal calls
        calls += 1
        return await (_short(batch) if calls == 1 else _echo(batch))

    with caplog.at_level(logging.ERROR):
        async with _port(server, handler, "orders-entry") as connect:
            faulty, healthy = connect(), connect()
            with faulty, healthy:
                await faulty.send(encode_frame(["a"]) + encode_frame(["b"]))
                assert await _closed(faulty) == b""
                # The server and the other connection are still up.
                await healthy.send(encode_frame(["c"]))
                with trio.fail_after(BOUND):
                    assert await _replies(healthy, 1) == [["ok", "c"]]
    assert "orders-entry" in caplog.text
    assert "2 frames got 1 replies" in caplog.text


async def test_a_handler_that_raises_closes_only_its_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = _server()

    async def handler(batch: list[list[Any]]) -> list[Any]:
        if batch[0] == ["boom"]:
            raise ValueError("the handler broke")
        return await _echo(batch)

    with caplog.at_level(logging.ERROR):
        async with _port(server, handler, "prices-feed") as connect:
            faulty, healthy = connect(), connect()
            with faulty, healthy:
                await faulty.send(encode_frame(["boom"]))
                assert await _closed(faulty) == b""
                await healthy.send(encode_frame(["c"]))
                with trio.fail_after(BOUND):
                    assert await _replies(healthy, 1) == [["ok", "c"]]
    assert "prices-feed" in caplog.text
    assert "the handler broke" in caplog.text


async def test_an_idle_connection_is_closed_after_the_idle_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = _server(TIMEOUTS)
    async with _port(server) as connect:
        with connect() as client:
            await client.send(encode_frame(["a"]))
            with trio.fail_after(BOUND):
                assert await _replies(client, 1) == [["ok", "a"]]
            assert await _closed(client) == b""
            with connect() as silent:  # never sends a byte
                assert await _closed(silent) == b""
    assert not server.connections


async def test_a_partial_frame_is_closed_after_the_body_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The idle timeout is long: only the partial frame's own timeout can close it.
    server = _server(TIMEOUTS | {"SPRINTD_SERVER__FRAMED_IDLE_TIMEOUT": "600"})
    async with _port(server) as connect:
        with connect() as client:
            # A 1 MiB frame announced, one byte of it sent.
            await client.send(struct.pack(">I", 1 << 20) + b"\x91")
            assert await _closed(client) == b""
    assert not server.connections


async def test_a_peer_that_never_reads_its_replies_is_closed(
    autojump_clock: trio.abc.Clock,
) -> None:
    server = _server(TIMEOUTS | {"SPRINTD_SERVER__FRAMED_IDLE_TIMEOUT": "600"})
    async with _port(server) as connect:
        with connect() as client:
            # Frames that each get a reply ~10x their size, sent until the
            # server stops reading because its replies no longer fit.
            bad = (struct.pack(">I", 1) + b"\xc1") * 1024
            with trio.move_on_after(BOUND):
                try:
                    while True:
                        await client.send(bad)
                except OSError:
                    pass  # closed by the server while we were still sending
            with trio.fail_after(BOUND):
                while server.connections:
                    await trio.sleep(0.05)


async def test_a_connection_takes_a_read_buffer_only_once_bytes_arrive() -> None:
    server = _server()
    async with _port(server) as connect:
        with connect() as silent, connect() as talker:
            await talker.send(encode_frame(["a"]))
            with trio.fail_after(BOUND):
                assert await _replies(talker, 1) == [["ok", "a"]]
            buffers = sorted(conn.buf is NO_BUFFER for conn in server.connections)
            assert buffers == [False, True]
            assert silent.fileno() >= 0
