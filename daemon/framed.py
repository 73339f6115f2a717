"""The connection loop of a binary, framed port (``framing``'s wire format).

A plugin's ``Listener`` can serve its port with ``framed_listener(handler)``:
each read's whole frames are decoded and handed to the handler as one batch,
so a plugin can journal a batch of commands with one group commit before it
acknowledges any of them; the replies go back in order, one frame per
request frame, in one send.

Errors: a frame that does not decode gets an error reply in its place and
the connection goes on (the length prefix keeps the stream in step); a
length that cannot be a frame gets an error reply and the connection closes.
A handler that raises closes the connection after the error is logged: its
batch may be half applied, and only the client can tell what to resend.

A handler that times its work from the wire (the price feed) is served by
``timed_framed_listener``: it is also given the ``perf_counter_ns`` taken
right after the read that brought the batch, before any frame was decoded.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable
from time import perf_counter_ns
from typing import Any

from .framing import (
    DEFAULT_MAX_FRAME,
    FrameDecoder,
    FrameError,
    PayloadError,
    decode_payload,
    encode_frame,
)
from .sockio import recv, send_all

__all__ = [
    "FrameHandler",
    "TimedFrameHandler",
    "error_reply",
    "framed_listener",
    "timed_framed_listener",
]

log = logging.getLogger("sprintd.framed")

# One batch of decoded frames in, one reply per frame out, in the same order.
FrameHandler = Callable[[list[list[Any]]], Awaitable[list[Any]]]
# The same, also given when the batch's bytes were read (perf_counter_ns).
TimedFrameHandler = Callable[[list[list[Any]], int], Awaitable[list[Any]]]
READ_SIZE = 64 * 1024


def error_reply(code: str, message: str) -> list[Any]:
    """The reply frame for an error: ``["error", code, message]``."""
    return ["error", code, message]


def framed_listener(
    handler: FrameHandler, *, max_frame: int = DEFAULT_MAX_FRAME
) -> Callable[[socket.socket], Awaitable[None]]:
    """A ``Listener.serve`` for a framed port answering through ``handler``."""
    # The untimed handler's coroutine is passed straight through: no second
    # coroutine per batch.
    return timed_framed_listener(lambda batch, _received_ns: handler(batch), max_frame=max_frame)


def timed_framed_listener(
    handler: TimedFrameHandler, *, max_frame: int = DEFAULT_MAX_FRAME
) -> Callable[[socket.socket], Awaitable[None]]:
    """``framed_listener`` for a handler that also takes the batch's read time."""

    async def serve(sock: socket.socket) -> None:
        decoder = FrameDecoder(max_frame)
        view = memoryview(bytearray(READ_SIZE))
        while data := await recv(sock, view):
            received_ns = perf_counter_ns()
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
                try:
                    replies = await handler(batch, received_ns)
                except Exception:
                    log.exception("framed handler failed; closing the connection")
                    return
                if len(replies) != len(batch):
                    raise RuntimeError(f"{len(batch)} frames got {len(replies)} replies")
            out = [
                item if isinstance(item, bytes) else encode_frame(replies[item]) for item in order
            ]
            if fatal is not None:
                out.append(fatal)
            if out:
                await send_all(sock, b"".join(out))
            if fatal is not None:
                return

    return serve
