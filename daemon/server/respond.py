"""Answering a parsed request, whichever parser read it (h11 or the strict one).

Dispatch (``dispatch``) turns the request into bytes; this sends them: an
async handler awaited, the last answer of a draining worker marked
``connection: close``, the send (the connection in SEND while the peer is
slow to take it), and the route's latency from ``t0``, when the request's
bytes were in hand. A response that ends the connection with more input
already read is followed by a lingering close, so the peer reads the
response rather than a reset.

A ``Streamed`` answer is produced here, through a ``_Writer`` on the
connection: its head, then each piece as the producer writes it (chunked on
a connection that stays open, until the close on one that does not), its
latency recorded once the body has ended.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from time import perf_counter_ns
from typing import Any

from ..app import App
from ..http import HTTPError, Streamed, encode_head, encode_response, error_response
from ..latency import Recorder
from ..sockio import linger, send_now, send_rest
from .dispatch import dispatch
from .limits import LINGER_BYTES, LINGER_TIME, LINGER_TIMEOUT
from .state import BUSY, LINGER, SEND, Conn

log = logging.getLogger("sprintd.server")

__all__ = ["close_lingering", "respond"]


async def respond(
    app: App,
    unmatched: Recorder,
    conn: Conn,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    keep_alive: bool,
    t0: int,
) -> bool:
    """Answer one request on ``conn``; whether the connection goes on."""
    response, recorder, request_id, key_name = dispatch(
        app,
        unmatched,
        method,
        target,
        headers,
        body,
        keep_alive=keep_alive,
        conn=conn,
        received_ns=t0,
    )
    if not isinstance(response, bytes):
        # A coroutine (an async route's) or a Streamed answer; ``type() is``
        # tells them apart with no call more for an async route.
        pending: Any = response
        if type(pending) is not Streamed:
            pending = await pending
        if type(pending) is Streamed:
            return await _produce(pending, conn, method, target, keep_alive, recorder, t0)
        response = pending
    if keep_alive and conn.closing:
        # The worker began to drain while this request was under way: this is
        # the connection's last response, and it says so.
        keep_alive = False
        response = _closing(response)
    sock = conn.sock
    sent = send_now(sock, response)
    if sent != len(response):
        conn.state = SEND
        await send_rest(sock, response, sent)
    elapsed = perf_counter_ns() - t0
    recorder.record(elapsed)
    access = app.access_log
    if access is not None:
        access.request(method, target, response, elapsed, request_id, key_name)
    return keep_alive


class _Writer:
    """The ``ResponseWriter`` of one ``Streamed`` answer on one connection.

    ``status`` is 0 until the head is sent; ``broken`` once a send failed
    (the peer has gone: nothing to tell it, nothing to log).
    """

    __slots__ = (
        "body",
        "broken",
        "chunked",
        "complete",
        "conn",
        "head",
        "keep_alive",
        "length",
        "status",
        "written",
    )

    def __init__(self, conn: Conn, *, head: bool, keep_alive: bool) -> None:
        self.conn = conn
        self.head = head
        # Draining: this is the connection's last answer, and says so.
        self.keep_alive = keep_alive and not conn.closing
        self.status = self.written = 0
        self.length = -1
        self.body = self.chunked = self.broken = self.complete = False

    async def whole(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        self._begin(status)
        await self.send(
            encode_response(
                status, body, content_type, headers, head=self.head, keep_alive=self.keep_alive
            )
        )
        self.complete = True

    async def start(
        self, status: int, content_type: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        self._begin(status)
        self.body = status not in (204, 304) and not self.head
        # A Content-Length given is the producer's promise (a HEAD's, of the
        # GET's length): the body goes as it is and is held to it; without
        # one it is chunked, or runs to the close. A HEAD's head says what a
        # GET's would, with no chunk after it.
        self.length = next((int(v) for n, v in headers if n == b"content-length"), -1)
        self.chunked = self.keep_alive and status not in (204, 304) and self.length < 0
        await self.send(
            encode_head(
                status, content_type, headers, keep_alive=self.keep_alive, chunked=self.chunked
            )
        )

    async def write(self, chunk: bytes) -> None:
        if not self.status:
            raise RuntimeError("write() before start()")
        if self.body and chunk:
            if self.chunked:
                await self.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                return
            self.written += len(chunk)
            if 0 <= self.length < self.written:
                raise RuntimeError(f"the body is longer than its content-length, {self.length}")
            await self.send(chunk)

    async def end(self) -> None:
        if self.complete:
            return
        if self.body:
            if self.chunked:
                await self.send(b"0\r\n\r\n")
            elif 0 <= self.written < self.length:
                raise RuntimeError(f"the body is shorter than its content-length, {self.length}")
        self.complete = True

    def _begin(self, status: int) -> None:
        if self.status:
            raise RuntimeError("the response has begun already")
        if not 200 <= status <= 599:
            raise ValueError(f"the status {status} is not a final one (200-599)")
        self.status = status

    @property
    def sock(self) -> socket.socket:
        return self.conn.sock

    async def send(self, data: bytes) -> None:
        conn = self.conn
        try:
            sent = send_now(conn.sock, data)
            if sent != len(data):
                conn.state = SEND
                await send_rest(conn.sock, data, sent)
                conn.state = BUSY
        except OSError:
            self.broken = True
            raise


async def _produce(
    streamed: Streamed,
    conn: Conn,
    method: bytes,
    target: bytes,
    keep_alive: bool,
    recorder: Recorder,
    t0: int,
) -> bool:
    """Run a ``Streamed`` answer's producer on ``conn``; whether the connection goes on.

    Error handling: what the producer raises before its head is sent is the
    request's answer (``HTTPError``) or its 500 with one log line, as for a
    handler; after it, the body is cut short and the connection closed,
    since its framing cannot be ended honestly; after a whole answer, it is
    logged and the connection goes on (a framework that answered its own 500
    and raised the bug on). A send that failed (the peer has gone) ends the
    connection without a log line.
    """
    writer = _Writer(conn, head=method == b"HEAD", keep_alive=keep_alive)
    try:
        await streamed.produce(writer)
        if not writer.status:
            raise RuntimeError("the producer returned without an answer")
        await writer.end()
    except (Exception, SystemExit) as exc:
        if writer.broken:
            raise
        where = f"{method.decode('latin-1')} {target.decode('latin-1')}"
        if not writer.status:
            await _refuse(writer, exc, where)
        else:
            stage = "answer" if writer.complete else "head"
            log.error("handler failed after its %s: %s: %r", stage, where, exc, exc_info=exc)
            if not writer.complete:
                recorder.count_status(writer.status)
                return False
    recorder.count_status(writer.status)
    recorder.record(perf_counter_ns() - t0)
    return writer.keep_alive


async def _refuse(writer: _Writer, exc: BaseException, where: str) -> None:
    """What a producer raised before it answered, as the answer: an
    ``HTTPError`` as it says, anything else a 500 and one log line."""
    if isinstance(exc, HTTPError):
        status, code, message, headers = exc.status, exc.code, exc.message, exc.headers
    else:
        log.error("handler failed: %s: %r", where, exc, exc_info=exc)
        status, code, headers = 500, "internal_error", ()
        message = "the handler failed; see the daemon's log"
    writer.status = status
    keep_alive = writer.keep_alive
    await writer.send(
        error_response(status, code, message, headers, keep_alive=keep_alive, head=writer.head)
    )


def _closing(response: bytes) -> bytes:
    """A keep-alive response (it has no Connection header) made the last one."""
    end = response.index(b"\r\n") + 2
    return response[:end] + b"connection: close\r\n" + response[end:]


async def close_lingering(conn: Conn) -> None:
    """A lingering close after a response that ends the connection (``linger``):
    the peer may be sending still (a body refused, a pipelined request).

    The connection is in LINGER meanwhile: a drain ends it at once.
    """
    conn.state = LINGER
    await linger(conn.sock, seconds=LINGER_TIME, quiet=LINGER_TIMEOUT, most=LINGER_BYTES)
