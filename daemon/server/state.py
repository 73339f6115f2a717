"""One connection's state, as the loop, the h11 path and the reaper share it."""

from __future__ import annotations

import socket
from time import perf_counter_ns

import trio

__all__ = ["BODY", "BUSY", "HEAD", "IDLE", "NO_BUFFER", "SEND", "Conn"]

# What a connection is doing, which decides the timeout the reaper applies.
IDLE = 0  # between requests: keep-alive timeout
HEAD = 1  # a request head has begun: header timeout (slow-loris)
BODY = 2  # reading a body: body timeout
BUSY = 3  # a handler is running: no timeout
SEND = 4  # a response the peer is slow to take: body timeout

# The buffer of a connection that has not sent anything yet: never read into.
NO_BUFFER = bytearray()


class Conn:
    __slots__ = ("buf", "scope", "since_ns", "sock", "state")

    def __init__(self, sock: socket.socket, buf: bytearray) -> None:
        self.sock = sock
        self.buf = buf
        self.scope = trio.CancelScope()
        self.state = IDLE
        self.since_ns = perf_counter_ns()
