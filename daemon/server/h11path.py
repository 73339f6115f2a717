"""The h11 path: every request the fast path declined.

Strategy: h11 parses; sprintd answers. A fresh ``h11.Connection`` reads one
request (head, then body), so h11's state machine decides what is malformed,
and its ``error_status_hint`` picks the status (400, 431 for a head over
the limit, or 501 for a transfer coding other than chunked, as RFC 9112
section 6.1 asks). The response is encoded by ``http.encode_response``, the encoder
the fast path's snapshots use, and keep-alive follows RFC 9112 section 9.3:
HTTP/1.1 persists unless either side says ``Connection: close``; HTTP/1.0
closes. What h11 received past the request's end is handed back to the
connection loop, so pipelined requests keep their order.

h11 parses and validates the head (request line, headers, Content-Length and
Transfer-Encoding); a Content-Length body is then framed here from the bytes
h11 has not consumed, and a chunked one is read through h11's events. Bodies
are limited twice: a Content-Length over the limit is refused before a byte
of the body is read (413 and close, since the body would have to be read to
keep the connection), and a chunked body is counted as it comes.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Coroutine
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, cast

import h11

from ..http import HTTPError, Request, Response, encode_response, error_response
from ..latency import Recorder
from ..routing import BoundRoute, method_not_allowed
from .sockio import recv, send_all, send_now, send_rest
from .state import BODY, BUSY, HEAD, SEND, Conn

if TYPE_CHECKING:
    from ..app import App
    from ..auth import Key
    from .connection import HTTPServer

__all__ = ["dispatch", "handle"]

log = logging.getLogger("sprintd.server")

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


async def handle(server: HTTPServer, conn: Conn, data: bytes, t0: int) -> bytes | None:
    """Serve one request starting at ``data``; return what followed it, or None to close."""
    sock = conn.sock
    view = memoryview(conn.buf)
    parser = h11.Connection(h11.SERVER, max_incomplete_event_size=server.max_head)
    parser.receive_data(data)
    fed = len(data)
    conn.state = HEAD
    try:
        event = parser.next_event()
        while event is h11.NEED_DATA:
            more = await recv(sock, view)
            parser.receive_data(more)
            fed += len(more)
            event = parser.next_event()
        if type(event) is h11.ConnectionClosed:
            return None
        request = event
        if type(request) is not h11.Request:  # h11 yields nothing else at IDLE
            return None
        # h11's Headers is a Python-level sequence: read it once, in one pass.
        headers = list(request.headers)
        keep_alive = request.http_version == b"1.1"
        length = 0
        chunked = expect = False
        for name, value in headers:
            if name == b"content-length":
                length = int(value)  # h11 has validated it
            elif name == b"transfer-encoding":
                chunked = True  # h11 admits chunked alone
            elif name == b"connection":
                keep_alive = keep_alive and b"close" not in _tokens(value)
            elif name == b"expect":
                expect = value.lower() == b"100-continue"
        rest = parser.trailing_data[0]
        # h11 limits only a head still arriving; one that came whole is
        # measured here, so the limit does not depend on how it was sent.
        if fed - len(rest) > server.max_head:
            message = f"request head over {server.max_head} bytes"
            await _refuse(server, sock, 431, "header_too_large", message, t0=t0)
            return None
        if length > server.max_body:
            await _refuse_body(server, sock, t0=t0)
            return None
        conn.state = BODY
        conn.since_ns = perf_counter_ns()
        if chunked:
            if expect:
                await send_all(sock, _CONTINUE)
            read = await _read_chunked(server, parser, sock, view)
        else:
            read = await _read_length(rest, length, sock, view, expect)
        if read is None:
            await _refuse_body(server, sock, t0=t0)
            return None
        if not read:  # the peer closed before its body ended
            return None
        body, rest = read
    except h11.RemoteProtocolError as exc:
        status = exc.error_status_hint
        code = "not_implemented" if status == 501 else "bad_request"
        await _refuse(server, sock, status, code, str(exc), t0=t0)
        return None

    conn.state = BUSY
    response, recorder = dispatch(
        server,
        request.method,
        request.target,
        headers,
        body,
        keep_alive=keep_alive,
        sock=sock,
        received_ns=t0,
    )
    if not isinstance(response, bytes):
        response = await response
    if keep_alive and conn.closing:
        # The worker began to drain while this request was under way: this is
        # the connection's last response, and it says so.
        keep_alive = False
        response = _closing(response)
    sent = send_now(sock, response)
    if sent != len(response):
        conn.state = SEND
        conn.since_ns = perf_counter_ns()
        await send_rest(sock, response, sent)
    recorder.record(perf_counter_ns() - t0)
    return rest if keep_alive else None


# A body read: (body, what followed it); () when the peer closed first; None
# when it went over the limit.
_Read = tuple[bytes, bytes] | tuple[()] | None


async def _read_length(
    rest: bytes, length: int, sock: socket.socket, view: memoryview, expect: bool
) -> _Read:
    """A Content-Length body, framed here: h11 has parsed and checked the head,
    and its two events for a body already in hand cost a third of its parse."""
    if len(rest) >= length:
        return rest[:length], rest[length:]
    if expect:
        await send_all(sock, _CONTINUE)
    parts = [rest]
    have = len(rest)
    while have < length:
        more = await recv(sock, view)
        if not more:
            return ()
        parts.append(more)
        have += len(more)
    whole = b"".join(parts)
    return whole[:length], whole[length:]


async def _read_chunked(
    server: HTTPServer, parser: h11.Connection, sock: socket.socket, view: memoryview
) -> _Read:
    """A chunked body, through h11's events; its size is counted as it comes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            parser.receive_data(await recv(sock, view))
        elif type(event) is h11.Data:
            size += len(event.data)
            if size > server.max_body:
                return None
            chunks.append(event.data)
        elif type(event) is h11.EndOfMessage:
            rest, _ = parser.trailing_data
            return b"".join(chunks), rest
        else:  # ConnectionClosed before the body ended
            return ()


def _closing(response: bytes) -> bytes:
    """A keep-alive response (it has no Connection header) made the last one."""
    end = response.index(b"\r\n") + 2
    return response[:end] + b"connection: close\r\n" + response[end:]


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip() for token in value.lower().split(b",")]


async def _refuse_body(server: HTTPServer, sock: socket.socket, *, t0: int) -> None:
    message = f"body over {server.max_body} bytes"
    await _refuse(server, sock, 413, "body_too_large", message, t0=t0)


async def _refuse(
    server: HTTPServer, sock: socket.socket, status: int, code: str, message: str, *, t0: int
) -> None:
    await send_all(sock, error_response(status, code, message, keep_alive=False))
    server.malformed.record(perf_counter_ns() - t0)
    server.malformed.count_status(status)


def dispatch(
    server: HTTPServer,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    keep_alive: bool,
    sock: socket.socket | None = None,
    received_ns: int = 0,
) -> tuple[bytes | Coroutine[Any, Any, bytes], Recorder]:
    """The encoded response to a parsed request, and the recorder it counts in.

    A synchronous handler is answered here; an async one comes back as a
    coroutine that gives the encoded response, so a sync route pays for no
    coroutine at all. With auth enabled, whatever is not open is answered
    only once the guard admits it (``sock`` names the peer in audit lines).
    ``received_ns`` becomes the request's ``received_ns``.
    """
    path, _, query = target.partition(b"?")
    head = method == b"HEAD"
    app = server.app
    guard = app.guard
    if head or method == b"GET":
        snap = app.snapshots.get(path.decode("latin-1"))
        # A snapshot answers its exact path; with a query, a route for the
        # path (GET /v1/book/X?depth=50) is asked instead.
        if snap is not None and not (query and app.router.has_route(method, path)):
            if guard is not None and snap.scope != "open":
                admitted = guard.admit(headers, snap.scope, method, path, sock)
                if isinstance(admitted, HTTPError):
                    refused = Request(method, path, query, headers, body)
                    return _failed(
                        admitted, refused, snap.recorder, keep_alive=keep_alive
                    ), snap.recorder
            snap.recorder.count_status(snap.status)
            if keep_alive:
                return snap.response(head=head), snap.recorder
            return encode_response(
                snap.status, snap.body, snap.content_type, head=head, keep_alive=False
            ), snap.recorder
    request = Request(method, path, query, headers, body, received_ns)
    try:
        bound = app.router.resolve(method, path, request)
    except HTTPError as exc:
        if app.snapshots.get(path.decode("latin-1")) is not None:
            # A snapshot path without a route for this method: the router
            # knows only routes, so it said 404 or left GET and HEAD out.
            exc = method_not_allowed(exc.allowed | {b"GET", b"HEAD"})
        return _failed(exc, request, server.unmatched, keep_alive=keep_alive), server.unmatched
    recorder = bound.recorder
    key = None
    if guard is not None and bound.scope != "open":
        admitted = guard.admit(headers, bound.scope, method, path, sock)
        if isinstance(admitted, HTTPError):
            return _failed(admitted, request, recorder, keep_alive=keep_alive), recorder
        key = admitted
    if bound.scope == "admin":
        action = _admin_action(app, bound, request, key, head=head, keep_alive=keep_alive)
        return action, recorder
    if bound.is_async:
        return _respond_later(bound, request, head=head, keep_alive=keep_alive), recorder
    try:
        response = cast(Response, bound.handler(request))
    except Exception as exc:
        return _failed(exc, request, recorder, keep_alive=keep_alive), recorder
    return _encode(response, recorder, head=head, keep_alive=keep_alive), recorder


async def _respond_later(
    bound: BoundRoute, request: Request, *, head: bool, keep_alive: bool
) -> bytes:
    try:
        response = await cast(Awaitable[Response], bound.handler(request))
    except Exception as exc:
        return _failed(exc, request, bound.recorder, keep_alive=keep_alive)
    return _encode(response, bound.recorder, head=head, keep_alive=keep_alive)


async def _admin_action(
    app: App, bound: BoundRoute, request: Request, key: Key | None, *, head: bool, keep_alive: bool
) -> bytes:
    """Run an admin route's handler and write the action, with its outcome, to the audit log."""
    status = 500
    try:
        response = bound.handler(request)
        if bound.is_async:
            response = await cast(Awaitable[Response], response)
        response = cast(Response, response)
    except Exception as exc:
        if isinstance(exc, HTTPError):
            status = exc.status
        encoded = _failed(exc, request, bound.recorder, keep_alive=keep_alive)
    else:
        status = response.status
        encoded = _encode(response, bound.recorder, head=head, keep_alive=keep_alive)
    app.audit.emit(
        "admin_action",
        key=None if key is None else key.name,
        method=request.method.decode("latin-1"),
        path=request.path.decode("latin-1"),
        status=status,
    )
    return encoded


def _encode(response: Response, recorder: Recorder, *, head: bool, keep_alive: bool) -> bytes:
    recorder.count_status(response.status)
    return encode_response(
        response.status,
        response.body,
        response.content_type,
        response.headers,
        head=head,
        keep_alive=keep_alive,
    )


def _failed(exc: Exception, request: Request, recorder: Recorder, *, keep_alive: bool) -> bytes:
    msgpack_ = request.wants_msgpack()
    if isinstance(exc, HTTPError):
        recorder.count_status(exc.status)
        return error_response(
            exc.status,
            exc.code,
            exc.message,
            exc.headers,
            keep_alive=keep_alive,
            msgpack_=msgpack_,
        )
    log.error(
        "handler failed: %s %s",
        request.method.decode(),
        request.path.decode("latin-1"),
        exc_info=exc,
    )
    recorder.count_status(500)
    return error_response(
        500,
        "internal_error",
        "the handler failed; see the daemon's log",
        keep_alive=keep_alive,
        msgpack_=msgpack_,
    )
