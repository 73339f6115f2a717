"""The server: accept loops, one task per connection, one reaper.

A connection is one loop in one task, as in trio's own servers: read, answer
every complete request in what was read, read again. No task, channel or
cancel scope is made per request.

The loop tries the fast path first on each complete head (``fastpath.match``);
the answers to pipelined snapshot requests that one read brought are sent
together, in one call. It hands everything else, from the first byte it declined, to the h11 path
(``H11Path.handle``), which reads until its request is whole and gives back
what followed it (a pipelined request, perhaps a fast one).

A plugin's port (``Listener``) is served the same way: its connections are
tracked, reaped and drained like HTTP ones (``listener_connection``), its
loop (``framed``) keeps the state, and a fault in it closes that connection.

Timeouts: each connection stores its state and a progress mark; the reaper
task wakes every ``REAPER_TICK`` of trio's clock and cancels connections that
stayed in one state without progress past its timeout (``state`` has the
states, their timeouts and the rule). The hot path pays one store per read
for this. A response is SEND while the peer is slow
to take it, from whichever path it comes.

Shutdown (``drain``): the listeners close, resting connections (nothing
under way, nothing unread) are closed, busy ones finish the request or batch
they are on and then close, upgraded ones are told to end their session
(``server.upgrade``); whatever is left after ``drain_timeout`` is
cancelled. A connection closed by the drain is closed cleanly: FIN first,
then what the peer still sends is read and dropped until it closes too, so
no unread byte turns the close into a reset.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable, Callable
from time import perf_counter_ns

import trio
from trio.lowlevel import wait_readable

from ..app import App, Listener
from ..http import error_response
from ..settings import ServerSettings
from ..snapshots import FastEntry
from ..sockio import linger, send_now, send_rest
from .buffers import BufferPool
from .fastpath import Matcher, guarded, match
from .h11path import H11Path
from .limits import ACCEPT_CAPACITY_ERRNOS, ACCEPT_SLEEP, DRAIN_LINGER, LINGER_BYTES, REAPER_TICK
from .parser import parse
from .respond import close_lingering, respond
from .state import (
    BODY,
    BUSY,
    HEAD,
    IDLE,
    LINGER,
    NO_BUFFER,
    RESTING,
    SEND,
    SESSION,
    TIMEOUTS,
    UPGRADED,
    Conn,
)

__all__ = ["HTTPServer"]

log = logging.getLogger("sprintd.server")


class HTTPServer:
    """One worker's connections: the accept loops, one task per connection
    (HTTP, or a plugin's port), the reaper, and drain (module doc)."""

    def __init__(self, app: App, pool: BufferPool) -> None:
        self.app = app
        self.pool = pool
        self.connections: set[Conn] = set()
        self.draining = False
        self._accepting: list[trio.CancelScope] = []
        self.malformed = app.recorder("<malformed>")
        self.unmatched = app.recorder("<unmatched>")
        self.configure(app.settings.server)
        # With auth off, the plain matcher: not a call more on the hot path.
        self.matcher: Matcher = match if app.guard is None else guarded(app.guard)

    def configure(self, server: ServerSettings) -> None:
        """Take the limits and timeouts; a reload calls this on a live server.

        Connections read ``fast_path`` when they start, the rest per request.
        """
        # The access log has a line for every request: snapshots go through
        # dispatch then (``sprintd.logs``).
        self.fast_path = server.fast_path and self.app.access_log is None
        self.strict = server.strict_parser
        self.max_head = server.max_header_bytes
        self.max_body = server.max_body_bytes
        self.h11 = H11Path(self.app, self.max_head, self.max_body, self.malformed, self.unmatched)
        self._timeouts: dict[int, float] = {
            state: getattr(server, setting) for state, setting in TIMEOUTS.items()
        }

    # --- accepting ---------------------------------------------------------

    async def accept(
        self,
        listener: socket.socket,
        handler: Callable[[socket.socket], Awaitable[None]],
        nursery: trio.Nursery,
    ) -> None:
        """Accept until ``drain``; each connection runs ``handler`` in ``nursery``."""
        scope = trio.CancelScope()
        self._accepting.append(scope)
        try:
            with scope:
                while True:
                    await wait_readable(listener)
                    if not _take(listener, handler, nursery):
                        await trio.sleep(ACCEPT_SLEEP)
        finally:
            if self.draining:
                # What the kernel has queued would be reset by the close:
                # taken, each client gets its answer or a clean close.
                with contextlib.suppress(OSError):
                    _take(listener, handler, nursery)
            trio.lowlevel.notify_closing(listener)
            listener.close()

    # --- one connection ----------------------------------------------------

    def listener_connection(self, listener: Listener) -> Callable[[socket.socket], Awaitable[None]]:
        """The accept loop's handler for a plugin's port: ``listener.serve`` per
        connection, tracked like an HTTP one."""
        return functools.partial(self.connection, listener=listener)

    async def connection(self, sock: socket.socket, listener: Listener | None = None) -> None:
        """Serve one connection: HTTP, or ``listener``'s protocol; close it after.

        Error handling: an exception from a listener's ``serve`` (a handler
        that raised or broke the port's protocol) is logged with the
        listener's name and closes that connection only; the worker and the
        other connections go on.
        """
        # One coroutine frame for both kinds: every wake-up of the loop
        # resumes each frame of its chain, so a wrapper would cost a call a
        # request on the hot path.
        conn = Conn(sock, NO_BUFFER, IDLE if listener is None else SESSION)
        conn.closing = self.draining
        self.connections.add(conn)
        try:
            with conn.scope:
                # The read buffer is taken once the peer has sent something:
                # thousands of connections that open and wait cost a task
                # and a socket each, not a 64 KiB buffer each.
                await wait_readable(sock)
                conn.buf = self.pool.acquire()
                if listener is None:
                    await self._serve(conn)
                else:
                    await listener.serve(conn)
        except Exception as exc:
            if listener is None:
                if not isinstance(exc, OSError):
                    raise
                # The peer went away mid-send; nothing to tell it.
            elif not isinstance(exc, ConnectionError):
                # A plugin's OSError (its journal, say) is its fault: logged.
                log.exception("%s: connection failed; closed it", listener.name)
        finally:
            self.connections.discard(conn)
            if conn.buf is not NO_BUFFER:
                self.pool.release(conn.buf)
            try:
                # A drain closes with a FIN; a connection lingering after a
                # closing response has sent its FIN and read enough already.
                if self.draining and conn.state != LINGER:
                    await linger(sock, seconds=DRAIN_LINGER, quiet=DRAIN_LINGER, most=LINGER_BYTES)
            finally:
                sock.close()

    async def _serve(self, conn: Conn) -> None:
        sock = conn.sock
        view = memoryview(conn.buf)
        lines = self.app.snapshots.lines if self.fast_path else {}
        matcher = self.matcher
        pending = b""
        while True:
            if pending:
                data, pending = pending, b""
            else:
                await wait_readable(sock)
                try:
                    n = sock.recv_into(view)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    return
                if not n:
                    return
                data = bytes(view[:n])
            conn.mark = t0 = perf_counter_ns()
            pos = 0
            end = len(data)
            # Snapshot answers to pipelined requests, sent together. Sent
            # before anything else answers, and before the loop can end: no
            # await lies between queuing one and reading ``closing`` again.
            queued: list[FastEntry] | None = None
            # Draining, the h11 path answers: the last response says
            # "connection: close", which the pre-encoded ones cannot.
            while pos < end and not conn.closing:
                found = matcher(lines, data, pos, self.max_head)
                if found is None:
                    if queued:
                        await _answer_queued(conn, queued, t0)
                    # Not a snapshot: the strict parser, if it is sure of the
                    # head and the whole body is here; else h11.
                    head = parse(data, pos, self.max_head) if self.strict else None
                    if head is None:
                        break
                    method, target, headers, length, keep_alive, head_end = head
                    if length > self.max_body or head_end + length > end:
                        # From the head on: h11 reads the rest of the body (or
                        # refuses it, 413), as it would have without this.
                        break
                    pos = head_end + length
                    body = data[head_end:pos]
                    conn.state = BUSY
                    keep_alive = await respond(
                        self.app,
                        self.unmatched,
                        conn,
                        method,
                        target,
                        headers,
                        body,
                        keep_alive,
                        t0,
                    )
                    conn.state = IDLE
                    if not keep_alive:
                        if pos < end:
                            await close_lingering(conn)
                        return
                    continue
                entry, pos = found
                if queued is not None or pos < end:
                    # Pipelined: one send for the answers to every request
                    # in this read that the fast path takes, not one each.
                    if queued is None:
                        queued = []
                    queued.append(entry)
                    if pos < end:
                        continue
                    await _answer_queued(conn, queued, t0)
                    continue
                response = entry.response
                sent = send_now(sock, response)
                if sent != len(response):
                    # Under way, whichever path it came from: drain lets it
                    # finish and the reaper gives it the send timeout.
                    conn.state = SEND
                    await send_rest(sock, response, sent)
                    conn.state = IDLE
                entry.recorder.record(perf_counter_ns() - t0)
                if entry.status >= 400:
                    entry.recorder.count_status(entry.status)
            else:
                if pos == end:
                    if conn.closing:
                        return
                    continue
            rest = await self.h11.handle(conn, data[pos:], t0)
            if rest is None or conn.closing:
                return
            pending = rest
            conn.state = IDLE

    # --- timeouts and shutdown ---------------------------------------------

    async def reap(self) -> None:
        while True:
            await trio.sleep(REAPER_TICK)
            now = trio.current_time()
            timeouts = self._timeouts
            for conn in list(self.connections):
                state = conn.state
                if state != conn.seen_state or conn.mark != conn.seen_mark:
                    # Progress since the last look (``state`` module doc).
                    conn.seen_state = state
                    conn.seen_mark = conn.mark
                    conn.since = now
                    continue
                limit = timeouts.get(state)
                if limit is None or now - conn.since <= limit:
                    continue
                if conn.state in (HEAD, BODY):
                    # Best effort: a slow client may read this before we close.
                    with contextlib.suppress(OSError):
                        conn.sock.send(
                            error_response(
                                408,
                                "request_timeout",
                                "request not received in time",
                                keep_alive=False,
                            )
                        )
                conn.scope.cancel()

    def drain(self) -> None:
        """Stop accepting; close resting connections; busy ones close when done."""
        self.draining = True
        for scope in self._accepting:
            scope.cancel()
        for conn in list(self.connections):
            conn.closing = True
            if conn.state == LINGER or (conn.state in RESTING and not _readable(conn.sock)):
                conn.scope.cancel()
            elif conn.state == UPGRADED and conn.takeover is not None:
                # Its session says goodbye in its protocol (server.upgrade).
                conn.takeover.cancel()

    def cancel_all(self) -> None:
        for conn in list(self.connections):
            conn.scope.cancel()


def _take(
    listener: socket.socket,
    handler: Callable[[socket.socket], Awaitable[None]],
    nursery: trio.Nursery,
) -> bool:
    """Start ``handler`` for every connection queued: one wake-up, many
    connections. False when the process is out of descriptors or memory."""
    tcp = listener.family != socket.AF_UNIX
    while True:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                raise
            return False
        sock.setblocking(False)
        if tcp:  # [server] uds: a Unix socket has no Nagle to turn off
            # A response is one send: never hold it back for an ACK.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        nursery.start_soon(handler, sock)


async def _answer_queued(conn: Conn, queued: list[FastEntry], t0: int) -> None:
    """Send the snapshot answers ``queued`` for pipelined requests in one
    call, record each, and empty the queue."""
    response = b"".join([entry.response for entry in queued])
    sent = send_now(conn.sock, response)
    if sent != len(response):
        conn.state = SEND
        await send_rest(conn.sock, response, sent)
        conn.state = IDLE
    elapsed = perf_counter_ns() - t0
    for entry in queued:
        entry.recorder.record(elapsed)
        if entry.status >= 400:
            entry.recorder.count_status(entry.status)
    queued.clear()


def _readable(sock: socket.socket) -> bool:
    """Whether a request is waiting: then it is answered before the close."""
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return False
