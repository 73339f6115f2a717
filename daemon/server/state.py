"""One connection's state, as the loops (HTTP and framed), the h11 path and the
reaper share it."""

from __future__ import annotations

import socket
from time import perf_counter_ns

import trio

__all__ = [
    "BODY",
    "BUSY",
    "FRAME",
    "HEAD",
    "IDLE",
    "LINGER",
    "NO_BUFFER",
    "RESTING",
    "SEND",
    "SESSION",
    "Conn",
]

# What a connection is doing, which decides the timeout the reaper applies.
IDLE = 0  # HTTP, between requests: keep-alive timeout
HEAD = 1  # a request head has begun: header timeout (slow-loris)
BODY = 2  # reading a body: body timeout
BUSY = 3  # a handler is running: no timeout
SEND = 4  # a response the peer is slow to take: body timeout
SESSION = 5  # a framed port, between frames: framed idle timeout
FRAME = 6  # a framed port, a frame begun: body timeout (and no HTTP 408)
LINGER = 7  # a closing response sent, the peer's input read and dropped (sockio.linger)

# States that drain closes at once: nothing is under way.
RESTING = frozenset({IDLE, SESSION})

# The buffer of a connection that has not sent anything yet: never read into.
NO_BUFFER = bytearray()


class Conn:
    """A connection the server tracks.

    ``closing`` is set when the worker drains: a loop finishes what is under
    way and then returns instead of reading the next request.
    """

    __slots__ = ("buf", "closing", "scope", "since_ns", "sock", "state")

    def __init__(self, sock: socket.socket, buf: bytearray, state: int = IDLE) -> None:
        self.sock = sock
        self.buf = buf
        self.scope = trio.CancelScope()
        self.state = state
        self.since_ns = perf_counter_ns()
        self.closing = False
