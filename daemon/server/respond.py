"""Answering a parsed request, whichever parser read it (h11 or the strict one).

Dispatch (``dispatch``) turns the request into bytes; this sends them: an
async handler awaited, the last answer of a draining worker marked
``connection: close``, the send (the connection in SEND while the peer is
slow to take it), and the route's latency from ``t0``, when the request's
bytes were in hand. A response that ends the connection with more input
already read is followed by a lingering close, so the peer reads the
response rather than a reset.
"""

from __future__ import annotations

from time import perf_counter_ns

from ..app import App
from ..latency import Recorder
from ..sockio import linger, send_now, send_rest
from .dispatch import dispatch
from .limits import LINGER_BYTES, LINGER_TIME, LINGER_TIMEOUT
from .state import LINGER, SEND, Conn

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
    response, recorder = dispatch(
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
        response = await response
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
    recorder.record(perf_counter_ns() - t0)
    return keep_alive


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
