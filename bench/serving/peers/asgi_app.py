"""A raw ASGI app for uvicorn, granian (asgi) and hypercorn.

No framework: the comparison is between servers, so the app does the least an
app can do, as sprintd's plugin does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bench.serving.payload import CONTENT_TYPE, ECHO_PATH, GET_BODY, GET_PATH

__all__ = ["app"]

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_GET_HEADERS = [(b"content-type", CONTENT_TYPE), (b"content-length", b"%d" % len(GET_BODY))]
_NOT_FOUND = b'{"error":"not_found"}'


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    method, path = scope["method"], scope["path"]
    if method == "GET" and path == GET_PATH:
        await _respond(send, 200, _GET_HEADERS, GET_BODY)
    elif method == "POST" and path == ECHO_PATH:
        body = await _read_body(receive)
        content_type = _header(scope, b"content-type") or CONTENT_TYPE
        headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
        await _respond(send, 200, headers, body)
    else:
        headers = [(b"content-type", CONTENT_TYPE), (b"content-length", b"%d" % len(_NOT_FOUND))]
        await _respond(send, 404, headers, _NOT_FOUND)


async def _respond(send: Send, status: int, headers: Headers, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes:
    message = await receive()
    body: bytes = message.get("body", b"")
    # A small body nearly always comes in one message; join only when it did not.
    if message.get("more_body", False):
        parts = [body]
        while message.get("more_body", False):
            message = await receive()
            parts.append(message.get("body", b""))
        body = b"".join(parts)
    return body


def _header(scope: Message, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def _lifespan(receive: Receive, send: Send) -> None:
    # Answered rather than raised on, so hypercorn does not log a lifespan error.
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
