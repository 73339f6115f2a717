"""A connection's states, what moves it between them, and the timeout of each.

Everything that decides when the server closes a connection on its own is in
this file, as h11 keeps its state machine in ``_state.py``. The loops
(``connection``, ``framed``, ``h11path``) only store a state and a mark;
the reaper (``HTTPServer.reap``) reads them.

States and their transitions (HTTP on the left, a framed port on the right)::

    IDLE --bytes--> HEAD --head whole--> BODY --body whole--> BUSY --answer--> IDLE
      |               |                    |                   \\--slow peer--> SEND --> IDLE
      \\--fast path answers from the read, IDLE again (SEND if the peer is slow)
    HEAD, BODY, BUSY --closing answer (error, Connection: close)--> LINGER --> closed

    SESSION --a frame begins--> FRAME --frames whole--> BUSY --replies--> SESSION
                                                          \\--slow peer--> SEND --> SESSION

    BUSY --a route answered Upgrade, 101 sent--> UPGRADED --its session returns--> closed

Timing: a loop stores ``mark`` at each step of progress (any value that
changes: the ``perf_counter_ns`` it already took for latency), so the hot
path pays one attribute store and reads no second clock. The reaper, every
``REAPER_TICK`` of trio's clock, times each connection from the tick at which
it first saw its present state and mark, and closes it once that exceeds the
state's timeout (``TIMEOUTS``). A timeout therefore fires between its limit
and its limit plus two ticks, and runs on whatever clock trio runs on: tests
drive it with ``autojump_clock`` in no real time.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

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
    "TIMEOUTS",
    "UPGRADED",
    "Conn",
    "Session",
]

IDLE = 0  # HTTP, between requests
HEAD = 1  # a request head has begun
BODY = 2  # reading a body
BUSY = 3  # a handler is running
SEND = 4  # an answer the peer is slow to take
SESSION = 5  # a framed port, between frames
FRAME = 6  # a framed port, a frame begun
LINGER = 7  # a closing answer sent, the peer's input read and dropped (sockio.linger)
UPGRADED = 8  # taken over by a route's session after a 101 (server.upgrade)

# Each state's timeout, by the ``[server]`` setting that sets it; a state not
# here has none (a handler's own time; a linger, bounded by its own limits;
# an upgraded connection, whose protocol has its own liveness: a WebSocket's ping).
# FRAME is the body timeout without the HTTP 408 a HEAD or BODY gets.
TIMEOUTS = {
    IDLE: "keepalive_timeout",  # keep-alive
    HEAD: "header_timeout",  # slow-loris
    BODY: "body_timeout",
    SEND: "body_timeout",  # a peer that never reads
    SESSION: "framed_idle_timeout",
    FRAME: "body_timeout",
}

# States that drain closes at once: nothing is under way.
RESTING = frozenset({IDLE, SESSION})

# The buffer of a connection that has not sent anything yet: never read into.
NO_BUFFER = bytearray()


class Conn:
    """A connection the server tracks.

    ``state`` and ``mark`` are the loops' (module doc); ``seen_state``,
    ``seen_mark`` and ``since`` the reaper's. ``closing`` is set when the
    worker drains: a loop finishes what is under way and then returns instead
    of reading the next request.

    ``session`` is the session a route's ``Upgrade`` answer left to run once
    its 101 is sent; ``takeover`` the cancel scope that session runs its
    protocol in, which a drain cancels so the session can say goodbye after
    (``server.upgrade``).
    """

    __slots__ = (
        "buf",
        "closing",
        "mark",
        "scope",
        "seen_mark",
        "seen_state",
        "session",
        "since",
        "sock",
        "state",
        "takeover",
    )

    def __init__(self, sock: socket.socket, buf: bytearray, state: int = IDLE) -> None:
        self.sock = sock
        self.buf = buf
        self.scope = trio.CancelScope()
        self.state = state
        self.mark = 0
        # Never a state: the reaper starts the clock at its first look.
        self.seen_state = -1
        self.seen_mark = 0
        self.since = 0.0
        self.closing = False
        self.session: Session | None = None
        self.takeover: trio.CancelScope | None = None


# What an upgraded connection is served by: the connection, and the bytes the
# peer sent past the request that asked for the upgrade.
Session = Callable[[Conn, bytes], Awaitable[None]]
