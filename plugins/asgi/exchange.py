"""One HTTP request as an ASGI 3 exchange with the application (a WebSocket
handshake goes to ``websocket``).

Strategy: the application runs in the connection's own task, as any handler
does: no task, channel or queue per request. The route's handler returns a
``Streamed`` answer whose producer calls the application with a
``ResponseWriter``; ``http.response.start`` is held until the first body
message, so the usual answer (one body, ``more_body`` false) goes out as one
whole response with its length counted (the application's Content-Length
is checked against it), and only a body that says more follows is sent in
pieces, chunked, or as it is when the application gave its length.

The request's body is in hand before the handler runs (the core has read
it within ``server.max_body_bytes``): the first ``receive`` gives it whole;
the next waits until the response is complete and says
``http.disconnect``. The scope says ASGI spec 2.4, so a ``send`` after the
peer has gone raises ``OSError``, which Starlette takes as the disconnect.

``path`` is the whole path, ``root_path`` the mount (as uvicorn's
``--root-path``, and as Starlette and Django strip it), ``raw_path`` and
``query_string`` the bytes as received, ``headers`` as the core parsed them
(names in lower case, in order).
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import unquote

import trio

from sprintd import App, Request, Response, ResponseWriter, Streamed, asks_upgrade

from .websocket import handshake

__all__ = ["ASGIApp", "Mount"]

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
    Awaitable[None],
]

ASGI_VERSION = {"version": "3.0", "spec_version": "2.4"}
# A header an application sends goes out as it is: a name that is not a
# token, or a value with a control character (CR LF: response splitting),
# is the application's fault, and the request's 500.
_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")


def _address(address: Any) -> tuple[str, int] | None:
    """An IP socket's (host, port); None for another kind (a Unix socket)."""
    return (address[0], address[1]) if isinstance(address, tuple) else None


class Mount:
    """An application mounted at ``root_path`` (``""`` for ``/``), served
    once ``ready`` is set (its lifespan start-up complete); ``state`` is the
    lifespan's, copied into each request's scope as the spec asks."""

    def __init__(self, app: ASGIApp, root_path: str) -> None:
        self.app = app
        self.root_path = root_path
        self.state: dict[str, Any] = {}
        self.ready = trio.Event()
        # Where WebSockets run past their handler (``serve_websockets``).
        self.nursery: trio.Nursery | None = None

    async def handle(self, request: Request) -> Response | Streamed:
        """The route's handler: an HTTP exchange runs once the core has the
        writer; a WebSocket's handshake is the application's to answer."""
        if asks_upgrade(request) != b"websocket":
            return Streamed(functools.partial(self.run, request))
        if not self.ready.is_set():
            await self.ready.wait()
        assert self.nursery is not None  # serve_websockets runs from start-up
        scope = self._scope(request, "websocket", "ws")
        scope["subprotocols"] = _subprotocols(request)
        return await handshake(self.app, scope, request, self.nursery)

    async def serve_websockets(self, app: App) -> None:
        """Run the WebSockets' applications: a background task of the worker's."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await trio.sleep_forever()

    async def run(self, request: Request, writer: ResponseWriter) -> None:
        if not self.ready.is_set():
            await self.ready.wait()
        sock = writer.sock
        scope = self._scope(request, "http", "http")
        scope["method"] = request.method.decode("ascii")
        scope["client"] = _address(_peer(sock))
        scope["server"] = _address(sock.getsockname())
        exchange = _Exchange(request.body, writer)
        try:
            await self.app(scope, exchange.receive, exchange.send)
            await exchange.close()
        finally:
            exchange.finish()

    def _scope(self, request: Request, kind: str, scheme: str) -> Message:
        raw = request.path
        path = raw.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        return {
            "type": kind,
            "asgi": ASGI_VERSION,
            "http_version": "1.1",
            "scheme": scheme,
            "path": path,
            "raw_path": raw,
            "query_string": request.query,
            "root_path": self.root_path,
            "headers": request.headers,
            "state": self.state.copy(),
        }


def _subprotocols(request: Request) -> list[str]:
    offered = request.header(b"sec-websocket-protocol") or b""
    return [p.strip().decode("latin-1") for p in offered.split(b",") if p.strip()]


def _peer(sock: socket.socket) -> Any:
    try:
        return sock.getpeername()
    except OSError:  # gone already: its answer will find that out
        return None


class _Exchange:
    """One request's ``receive`` and ``send``: the response's head held until
    its first body message, then the body whole or in pieces (module doc)."""

    __slots__ = (
        "body",
        "complete",
        "content_type",
        "done",
        "headers",
        "length",
        "started",
        "status",
        "writer",
    )

    def __init__(self, body: bytes, writer: ResponseWriter) -> None:
        self.body: bytes | None = body
        self.writer = writer
        self.status = 0
        self.content_type = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.length = -1
        self.started = self.complete = False
        self.done: trio.Event | None = None

    async def receive(self) -> Message:
        body = self.body
        if body is not None:
            self.body = None
            return {"type": "http.request", "body": body, "more_body": False}
        if not self.complete:
            # What a Starlette before spec 2.4 listens for while it streams:
            # the end of the exchange.
            if self.done is None:
                self.done = trio.Event()
            await self.done.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.body":
            if not self.status:
                raise RuntimeError("http.response.body before http.response.start")
            if self.complete:
                raise RuntimeError("http.response.body after the response was complete")
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if not self.started:
                self.started = True
                if not more and self.length in (-1, len(body)):
                    self.complete = True
                    await self.writer.whole(self.status, body, self.content_type, self.headers)
                    return
                if self.length >= 0:
                    self.headers.append((b"content-length", b"%d" % self.length))
                await self.writer.start(self.status, self.content_type, self.headers)
            await self.writer.write(body)
            if not more:
                self.complete = True
        elif kind == "http.response.start":
            if self.status:
                raise RuntimeError("http.response.start sent twice")
            self._head(message)
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an HTTP request")

    def _head(self, message: Message) -> None:
        status = message["status"]
        headers = self.headers
        for raw_name, value in message.get("headers", ()):
            name = raw_name.lower()
            if _NAME.fullmatch(name) is None or _VALUE.fullmatch(value) is None:
                raise ValueError(f"the application's header {name!r}: {value!r} is not sendable")
            if name == b"content-type":
                self.content_type = value
            elif name == b"content-length":
                if not value.isdigit():
                    raise ValueError(f"the application's content-length {value!r}")
                # Counted for a whole answer; held to for one in pieces.
                self.length = int(value)
            else:
                headers.append((name, value))
        self.status = status

    async def close(self) -> None:
        """The application returned: a head without a body is sent, empty."""
        if self.status and not self.started:
            self.started = self.complete = True
            if self.length > 0:
                self.headers.append((b"content-length", b"%d" % self.length))
                await self.writer.start(self.status, self.content_type, self.headers)
            else:
                await self.writer.whole(self.status, b"", self.content_type, self.headers)

    def finish(self) -> None:
        self.complete = True
        if self.done is not None:
            self.done.set()
