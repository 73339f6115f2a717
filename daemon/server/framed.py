"""The connection loop of a binary, framed port (``framing``'s wire format).

A plugin's ``Listener`` can serve its port with ``framed_listener(handler)``:
each read's whole frames are decoded and handed to the handler as one batch,
so a plugin can journal a batch of commands with one group commit before it
acknowledges any of them; the replies go back in order, one frame per
request frame, in one send.

Errors: a frame that does not decode gets an error reply in its place and
the connection goes on (the length prefix keeps the stream in step); a
length that cannot be a frame gets an error reply and the connection closes.
A handler that raises, or answers a batch with the wrong number of replies,
closes that connection: the exception goes to the server, which logs it with
the listener's name and keeps the worker and every other connection up. The
batch may be half applied, and only the client can tell what to resend.

Timeouts: the loop keeps ``conn.state`` for the server's reaper. Between
frames a connection is in SESSION (``server.framed_idle_timeout``); once a
frame has begun, FRAME until it is whole (``server.body_timeout``, from the
read that began it); replies the peer is slow to take, SEND (the same); the
handler's own time, BUSY (none). The read buffer is the server's, taken once
the peer first sends (``HTTPServer.listener_connection``).

A handler that times its work from the wire (the price feed) is served by
``timed_framed_listener``: it is also given the ``perf_counter_ns`` taken
right after the read that brought the batch, before any frame was decoded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any

from ..framing import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    FrameError,
    PayloadError,
    decode_payload,
    encode_frame,
)
from ..sockio import recv, send_now, send_rest
from .state import BUSY, FRAME, SEND, SESSION, Conn

__all__ = [
    "FrameHandler",
    "TimedFrameHandler",
    "error_reply",
    "framed_listener",
    "timed_framed_listener",
]

# One batch of decoded frames in, one reply per frame out, in the same order.
FrameHandler = Callable[[list[list[Any]]], Awaitable[list[Any]]]
# The same, also given when the batch's bytes were read (perf_counter_ns).
TimedFrameHandler = Callable[[list[list[Any]], int], Awaitable[list[Any]]]
# What ``Listener.serve`` is: one connection, served until it ends.
ConnectionServer = Callable[[Conn], Awaitable[None]]


def error_reply(code: str, message: str) -> list[Any]:
    """The reply frame for an error: ``["error", code, message]``."""
    return ["error", code, message]


def framed_listener(
    handler: FrameHandler, *, max_frame: int = DEFAULT_MAX_FRAME
) -> ConnectionServer:
    """A ``Listener.serve`` for a framed port answering through ``handler``."""
    # The untimed handler's coroutine is passed straight through: no second
    # coroutine per batch.
    return timed_framed_listener(lambda batch, _received_ns: handler(batch), max_frame=max_frame)


def timed_framed_listener(
    handler: TimedFrameHandler, *, max_frame: int = DEFAULT_MAX_FRAME
) -> ConnectionServer:
    """``framed_listener`` for a handler that also takes the batch's read time."""

    async def serve(conn: Conn) -> None:
        sock = conn.sock
        decoder = FrameDecoder(max_frame)
        view = memoryview(conn.buf)
        while data := await recv(sock, view):
            received_ns = conn.mark = perf_counter_ns()
            decoder.feed(data)
            # For each frame in order: its index in the handler's batch, or
            # its error reply already encoded.
            order: list[int | bytes] = []
            batch: list[list[Any]] = []
            fatal = None
            try:
                for payload in decoder.frames():
                    try:
                        batch.append(decode_payload(payload))
                    except PayloadError as exc:
                        order.append(encode_frame(error_reply("bad_frame", str(exc))))
                    else:
                        order.append(len(batch) - 1)
            except FrameError as exc:
                fatal = encode_frame(error_reply("bad_length", str(exc)))
            if batch:
                conn.state = BUSY
                replies = await handler(batch, received_ns)
                if len(replies) != len(batch):
                    raise RuntimeError(f"{len(batch)} frames got {len(replies)} replies")
            if order or fatal is not None:
                out = [
                    item if isinstance(item, bytes) else encode_frame(replies[item])
                    for item in order
                ]
                if fatal is not None:
                    out.append(fatal)
                reply = b"".join(out)
                sent = send_now(sock, reply)
                if sent != len(reply):
                    conn.state = SEND
                    await send_rest(sock, reply, sent)
            if fatal is not None or conn.closing:
                return
            # A frame begun in this read (its time runs from the read: the
            # mark) or still under way; or none.
            conn.state = FRAME if decoder.buffered else SESSION

    return serve
