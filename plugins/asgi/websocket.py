"""A WebSocket as an ASGI 3 exchange (the ``websocket`` scope), on the core's ``Upgrade``.

The application decides the handshake, as the spec asks: the mount's
handler starts it, in a nursery of the plugin's, with the scope and
``websocket.connect``, and waits for its first message.
``websocket.accept`` is answered 101 (with its subprotocol and headers)
and the connection is then the session's; ``websocket.close`` first is
answered 403; an application that fails or returns first is the request's
500. The application's task outlives the handler: the nursery runs it
until it returns.

Past the handshake wsproto frames the messages both ways: the peer's text
or bytes is a ``websocket.receive`` (fragments joined, at most
``MAX_MESSAGE`` bytes), its close or its going away a
``websocket.disconnect`` with the code; the application's
``websocket.send`` is a frame, its ``websocket.close`` a close frame. Pings
are answered here. A drain closes with 1001 and tells the application so;
an application that returns without closing closes with 1000. A send once
the connection is closed raises ``OSError`` (spec 2.4, as for HTTP).

``client`` and ``server`` are not in the scope: a handler is not given its
socket, and the spec makes them optional.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Message, Ping, TextMessage
from wsproto.utilities import RemoteProtocolError

from sprintd import Conn, HTTPError, Request, Response, Upgrade, recv, send_all, websocket_accept

__all__ = ["MAX_MESSAGE", "WebSocket", "handshake"]

log = logging.getLogger("sprintd.plugins.asgi")

ASGIMessage = dict[str, Any]

# What one message of the peer's may hold (uvicorn's default too).
MAX_MESSAGE = 16 << 20
# Messages read ahead of the application: past this, reading waits for it.
INBOX = 64
# After the close: how long the application has to see it and return.
CLOSE_WAIT = 5.0
CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_PROTOCOL, CLOSE_ABNORMAL, CLOSE_TOO_BIG = (
    1000,
    1001,
    1002,
    1006,
    1009,
)


async def handshake(
    app: Any, scope: MutableMapping[str, Any], request: Request, nursery: trio.Nursery
) -> Response:
    """The answer to a WebSocket handshake: the application's decision (module doc).

    Raises:
        HTTPError: not a version 13 handshake with a key.
        RuntimeError: the application failed or returned before deciding (a 500).
    """
    accept = websocket_accept(request)
    socket = WebSocket(app, scope)
    nursery.start_soon(socket.run)
    await socket.decided.wait()
    accepted = socket.accepted
    if accepted is None:
        if socket.failure is not None:
            raise RuntimeError(f"the ASGI application's WebSocket failed: {socket.failure}")
        raise HTTPError(403, "forbidden", "the application refused the WebSocket")
    headers = [(b"sec-websocket-accept", accept)]
    if accepted.get("subprotocol"):
        headers.append((b"sec-websocket-protocol", accepted["subprotocol"].encode("ascii")))
    headers += [(bytes(name), bytes(value)) for name, value in accepted.get("headers", ())]
    return Upgrade(socket.session, b"websocket", headers)


class WebSocket:
    """One WebSocket of the application: its handshake's decision, then its messages."""

    def __init__(self, app: Any, scope: MutableMapping[str, Any]) -> None:
        self.app = app
        self.scope = scope
        self.decided = trio.Event()
        self.accepted: ASGIMessage | None = None
        self.failure: str | None = None
        self.finished = trio.Event()
        # The session has the connection: frames may go out.
        self.linked = trio.Event()
        self.conn: Conn | None = None
        self.ws = Connection(ConnectionType.SERVER)
        self.connected = False
        self.gone: ASGIMessage = {"type": "websocket.disconnect", "code": CLOSE_ABNORMAL}
        self.inbox_send, self.inbox = trio.open_memory_channel[ASGIMessage](INBOX)
        self.lock = trio.Lock()

    async def run(self) -> None:
        try:
            await self.app(self.scope, self.receive, self.send)
        except Exception as exc:
            if self.decided.is_set():
                log.exception("the ASGI application's WebSocket failed")
            else:
                self.failure = repr(exc)
        finally:
            if not self.decided.is_set() and self.failure is None:
                self.failure = "it returned before accepting or closing"
            self.decided.set()
            self.finished.set()

    async def receive(self) -> ASGIMessage:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        try:
            return await self.inbox.receive()
        except trio.EndOfChannel:
            return self.gone

    async def send(self, message: ASGIMessage) -> None:
        kind = message["type"]
        if not self.decided.is_set():
            if kind == "websocket.accept":
                self.accepted = message
                self.decided.set()
                return
            if kind == "websocket.close":
                self.decided.set()
                return
            raise RuntimeError(f"ASGI message {kind!r} before the WebSocket was accepted")
        if self.accepted is None:
            raise RuntimeError(f"ASGI message {kind!r} on a WebSocket that was refused")
        await self.linked.wait()
        ws = self.ws
        if kind == "websocket.send":
            if ws.state is not ConnectionState.OPEN:
                raise OSError("the WebSocket is closed")
            data = message.get("bytes")
            event = BytesMessage(data) if data is not None else TextMessage(message.get("text", ""))
            await self._send(ws.send(event))
        elif kind == "websocket.close":
            if ws.state is ConnectionState.OPEN:
                code = message.get("code", CLOSE_NORMAL)
                await self._send(ws.send(CloseConnection(code, message.get("reason") or "")))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} on a WebSocket")

    async def session(self, conn: Conn, rest: bytes) -> None:
        """The connection past the 101, until the peer or the application ends it."""
        self.conn = conn
        if rest:
            self.ws.receive_data(rest)
        self.linked.set()
        takeover = conn.takeover
        assert takeover is not None  # the h11 path's, before the session
        code = CLOSE_ABNORMAL
        with takeover:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stop_with_application, nursery.cancel_scope)
                code = await self._read(memoryview(conn.buf))
                nursery.cancel_scope.cancel()
        if takeover.cancelled_caught:
            code = CLOSE_GOING_AWAY
        if self.ws.state is ConnectionState.OPEN:
            closing = CLOSE_GOING_AWAY if code == CLOSE_GOING_AWAY else CLOSE_NORMAL
            await self._send(self.ws.send(CloseConnection(closing)))
        self.gone = {"type": "websocket.disconnect", "code": code}
        await self.inbox_send.aclose()
        with trio.move_on_after(CLOSE_WAIT):
            await self.finished.wait()

    async def _stop_with_application(self, reading: trio.CancelScope) -> None:
        await self.finished.wait()
        reading.cancel()

    async def _read(self, view: memoryview) -> int:
        """Hand the peer's messages to the application; its close code at the end."""
        assert self.conn is not None
        ws = self.ws
        parts: list[Any] = []
        size = 0
        while True:
            try:
                for event in ws.events():
                    if isinstance(event, Ping):
                        await self._send(ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._send(ws.send(event.response()))
                        return event.code
                    elif isinstance(event, Message):
                        parts.append(event.data)
                        size += len(event.data)
                        if size > MAX_MESSAGE:
                            await self._send(ws.send(CloseConnection(CLOSE_TOO_BIG)))
                            return CLOSE_TOO_BIG
                        if event.message_finished:
                            key = "text" if isinstance(event, TextMessage) else "bytes"
                            whole = "".join(parts) if key == "text" else b"".join(parts)
                            parts, size = [], 0
                            await self.inbox_send.send({"type": "websocket.receive", key: whole})
            except RemoteProtocolError:
                # A frame wsproto could not parse: the peer broke the protocol.
                if ws.state is ConnectionState.OPEN:
                    await self._send(ws.send(CloseConnection(CLOSE_PROTOCOL)))
                return CLOSE_PROTOCOL
            data = await recv(self.conn.sock, view)
            if not data:
                return CLOSE_ABNORMAL
            ws.receive_data(data)

    async def _send(self, data: bytes) -> None:
        assert self.conn is not None
        async with self.lock:
            await send_all(self.conn.sock, data)
