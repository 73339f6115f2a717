"""Workers > 1 with plugins that keep their state in one process: the owner and its siblings.

Strategy (LMAX's shape: gateways on every core, one sequencer): worker 0 owns
that state. It alone registers those plugins (their journal, books, price
map, memory payment store and background work) and binds their ports. Every
worker serves HTTP for everything: a request its own routes do not take, a
sibling forwards to the owner over one connection (an abstract Unix socket
named after the supervisor, the core's framing), the requests of one loop
pass in one frame, and sends on the owner's answer. The owner answers a
forwarded request exactly as one of its own (``dispatch``: its guard, its
rate limits, its journal before the answer) and times it in the route's
recorder; the sibling times the whole trip in ``<forwarded>``.

A request to switch protocols (a WebSocket to ``/v1/ws``) is not
forwarded but handed over: the connection is the owner's from its answer on,
so the sibling opens a connection of its own to the owner's HTTP server (a
second abstract socket), sends it the request and carries the bytes both
ways until either side closes (``OwnerLink.relay``).

Reads do not cross: the owner pushes every snapshot it registers or
publishes to each sibling, once per loop pass, and the sibling serves it
from its own fast path. On one connection the order holds: a push goes out
before the answers of the same pass, so a client that was answered through
a sibling reads, on that connection, what its write made. Through another
worker a read may trail the owner by that worker's next push.

Failure: while the owner is down (killed, restarting, replaying its journal)
a sibling answers what it would forward 503 ``owner_unavailable`` with
``Retry-After``, at once; a request under way when the link breaks, or that
the owner leaves unanswered for ``FORWARD_TIMEOUT_S``, gets the same. Its
client cannot know whether the owner applied it, as when its own connection
breaks: a client_order_id makes the retry safe. The sibling reconnects every
``RECONNECT_S`` until the owner is back, and takes every snapshot again;
its /readyz fails meanwhile (and until the first link), so a balancer that
probes it sends its traffic elsewhere.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
from collections.abc import Awaitable
from itertools import count
from time import perf_counter_ns
from typing import Any

import trio

from ..app import App
from ..framing import FrameError, PayloadError, encode_frame
from ..http import Streamed, error_response, retry_after_header
from ..latency import Recorder
from ..peers import connect_local, frames, listen_local
from ..snapshots import Snapshot
from ..sockio import recv, send_all
from .dispatch import dispatch
from .state import Conn

__all__ = ["FORWARD_TIMEOUT_S", "OWNER_INDEX", "OwnerLink", "OwnerService", "relay_listener"]

log = logging.getLogger("sprintd.owner")

OWNER_INDEX = 0
# A forwarded request the owner has not answered by then is answered 503:
# longer than any journal flush, shorter than a client's patience.
FORWARD_TIMEOUT_S = 5.0
RECONNECT_S = 0.1
# A sibling's /readyz reason while it has no link to the owner.
UNLINKED = "owner_unavailable"
# A frame of requests or answers: many of them, each at most a request's size.
MAX_FRAME = 64 << 20
READ_SIZE = 1 << 16


def _address(namespace: str) -> bytes:
    return f"\0sprintd-{namespace}-owner".encode()


def _relay_address(namespace: str) -> bytes:
    return f"\0sprintd-{namespace}-owner-http".encode()


def relay_listener(namespace: str) -> socket.socket:
    """The owner's listening socket for the connections its siblings hand
    over whole (``OwnerLink.relay``): served by the owner's HTTP server.

    Raises:
        OSError: the address is taken.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(_relay_address(namespace))
        sock.listen(64)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _unavailable(keep_alive: bool, why: str) -> bytes:
    return error_response(
        503,
        "owner_unavailable",
        f"the worker that owns this state {why}; retry",
        [(b"retry-after", retry_after_header(1))],
        keep_alive=keep_alive,
    )


def _unrelayable(keep_alive: bool) -> bytes:
    # A Streamed answer goes out as it is produced, on the connection that
    # asked: the sibling's is in another process.
    return error_response(
        500,
        "internal_error",
        "the route answers as a stream, which a forwarding worker cannot relay",
        keep_alive=keep_alive,
    )


# --- the owner -----------------------------------------------------------------------


class _Sibling:
    """The owner's end of one sibling's connection: what is to be sent to it."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.answers: list[list[Any]] = []
        self.snapshots: dict[str, Snapshot] = {}
        self.wake = trio.Event()

    def send_soon(self) -> None:
        self.wake.set()

    async def write(self) -> None:
        """Send what the loop pass gathered: snapshots first, then answers;
        until the sibling goes away."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._write()

    async def _write(self) -> None:
        while True:
            await self.wake.wait()
            self.wake = trio.Event()
            frames = b""
            if self.snapshots:
                pushed = [
                    [s.path, s.body, s.content_type, s.status, s.scope, s.recorder.name]
                    for s in self.snapshots.values()
                ]
                self.snapshots = {}
                frames += encode_frame(["s", pushed])
            if self.answers:
                answers, self.answers = self.answers, []
                frames += encode_frame(["a", answers])
            if frames:
                await self.stream.send_all(frames)


class OwnerService:
    """The owner's side: answers its siblings' forwarded requests, pushes its snapshots."""

    def __init__(self, app: App, namespace: str, unmatched: Recorder) -> None:
        self.app = app
        self.namespace = namespace
        self.unmatched = unmatched
        self.siblings: set[_Sibling] = set()
        app.snapshots.watch(self._changed)

    def _changed(self, snap: Snapshot) -> None:
        for sibling in self.siblings:
            sibling.snapshots[snap.path] = snap
            sibling.send_soon()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = await listen_local(_address(self.namespace), 64)
        task_status.started()
        await trio.serve_listeners(self._sibling, [listener])

    async def _sibling(self, stream: trio.SocketStream) -> None:
        sibling = _Sibling(stream)
        # Everything published so far, then every change.
        sibling.snapshots = {snap.path: snap for snap in self.app.snapshots}
        sibling.send_soon()
        self.siblings.add(sibling)
        try:
            # A request under way finishes even if its sibling goes (the
            # writer alone stops): it may have been applied, and a handler is
            # never cut short by its client leaving, as on the owner's own
            # connections.
            async with (
                stream,
                trio.open_nursery() as answering,
                trio.open_nursery() as writing,
            ):
                writing.start_soon(sibling.write)
                try:
                    async for frame in frames(stream, MAX_FRAME):
                        for request in frame:
                            later = self._answer(sibling, request)
                            if later is not None:
                                answering.start_soon(self._answer_later, sibling, *later)
                except (trio.BrokenResourceError, FrameError, PayloadError) as exc:
                    log.warning("owner: a sibling's link failed: %r", exc)
                writing.cancel_scope.cancel()
        finally:
            self.siblings.discard(sibling)

    def _answer(
        self, sibling: _Sibling, request: list[Any]
    ) -> tuple[int, Awaitable[bytes | Streamed], Recorder, int, bool] | None:
        """Answer a forwarded request as one of the owner's own; what is left
        to await for one whose handler is async (a task each: one order's
        journal flush must not hold up the next)."""
        t0 = perf_counter_ns()
        ident, method, target, headers, body, keep_alive = request
        response, recorder, _, _ = dispatch(
            self.app,
            self.unmatched,
            method,
            target,
            [tuple(header) for header in headers],
            body,
            keep_alive=keep_alive,
            received_ns=t0,
        )
        if isinstance(response, Streamed):
            response = _unrelayable(keep_alive)
        elif not isinstance(response, bytes):
            return ident, response, recorder, t0, keep_alive
        self._answered(sibling, ident, response, recorder, t0)
        return None

    async def _answer_later(
        self,
        sibling: _Sibling,
        ident: int,
        response: Awaitable[bytes | Streamed],
        recorder: Recorder,
        t0: int,
        keep_alive: bool,
    ) -> None:
        answer = await response
        if isinstance(answer, Streamed):
            answer = _unrelayable(keep_alive)
        self._answered(sibling, ident, answer, recorder, t0)

    def _answered(
        self, sibling: _Sibling, ident: int, response: bytes, recorder: Recorder, t0: int
    ) -> None:
        recorder.record(perf_counter_ns() - t0)
        sibling.answers.append([ident, response])
        sibling.send_soon()


# --- a sibling -----------------------------------------------------------------------


class _Waiting:
    """One forwarded request's answer, to come."""

    __slots__ = ("answer", "done")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.answer = b""


class OwnerLink:
    """A sibling's side: forwards requests to the owner and mirrors its snapshots."""

    def __init__(self, app: App, namespace: str) -> None:
        self.app = app
        self.namespace = namespace
        self._ids = count()
        self._waiting: dict[int, _Waiting] = {}
        self._outgoing: list[list[Any]] = []
        self._wake = trio.Event()
        self._stream: trio.SocketStream | None = None
        # Paths this worker serves from the owner's pushes, not its own plugins.
        self.mirrored: set[str] = set()
        # Not ready until linked: a balancer sends nothing this worker would refuse.
        app.set_unready(UNLINKED, "not linked to the worker that owns the plugins' state yet")

    def forward(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
    ) -> bytes | Awaitable[bytes]:
        """The owner's answer to a request (``App.forward``): 503 at once
        while the owner is down."""
        if self._stream is None:
            return _unavailable(keep_alive, "is restarting")
        ident = next(self._ids)
        waiting = self._waiting[ident] = _Waiting()
        self._outgoing.append([ident, method, target, headers, body, keep_alive])
        self._wake.set()
        return self._answer(ident, waiting, keep_alive)

    def relay(
        self,
        conn: Conn,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
    ) -> bytes:
        """Hand a request that switches protocols (a WebSocket's) to the owner
        with its connection (``App.relay``): nothing is sent from here; the
        connection's session carries its bytes both ways until either side
        closes. 503 at once while the owner is down."""
        if self._stream is None:
            return _unavailable(True, "is restarting")
        fields = b"".join(b"%s: %s\r\n" % (name, value) for name, value in headers)
        request = b"%s %s HTTP/1.1\r\n%s\r\n%s" % (method, target, fields, body)
        conn.session = functools.partial(self._splice, request)
        return b""

    async def _splice(self, request: bytes, conn: Conn, rest: bytes) -> None:
        try:
            stream = await connect_local(_relay_address(self.namespace))
        except OSError:
            await send_all(conn.sock, _unavailable(False, "is restarting"))
            return
        async with stream:
            await stream.send_all(request + rest)
            # A drain of this worker cuts the relay (conn.takeover).
            assert conn.takeover is not None  # the h11 path's, before the session
            with conn.takeover, contextlib.suppress(trio.BrokenResourceError):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_upstream, conn, stream)
                    while data := await stream.receive_some(READ_SIZE):
                        await send_all(conn.sock, data)
                    nursery.cancel_scope.cancel()

    async def _answer(self, ident: int, waiting: _Waiting, keep_alive: bool) -> bytes:
        try:
            with trio.move_on_after(FORWARD_TIMEOUT_S):
                await waiting.done.wait()
        finally:
            self._waiting.pop(ident, None)
        if not waiting.done.is_set():
            return _unavailable(keep_alive, f"did not answer in {FORWARD_TIMEOUT_S:g} s")
        return waiting.answer or _unavailable(keep_alive, "went away mid-request")

    async def run(self) -> None:
        """Keep the link to the owner up, until cancelled."""
        while True:
            try:
                stream = await connect_local(_address(self.namespace))
            except OSError:
                await trio.sleep(RECONNECT_S)
                continue
            try:
                async with stream, trio.open_nursery() as nursery:
                    self._stream = stream
                    self.app.set_unready(UNLINKED, None)
                    nursery.start_soon(self._write, stream, nursery.cancel_scope)
                    await self._read(stream)
                    nursery.cancel_scope.cancel()
            finally:
                self._stream = None
                self.app.set_unready(UNLINKED, "the worker that owns the plugins' state is down")
                self._outgoing.clear()
                # Under way when the link broke: the owner may or may not have
                # applied them; their clients hear so (``_answer``).
                for waiting in self._waiting.values():
                    waiting.done.set()
            await trio.sleep(RECONNECT_S)

    async def _write(self, stream: trio.SocketStream, link: trio.CancelScope) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                if self._outgoing:
                    batch, self._outgoing = self._outgoing, []
                    await stream.send_all(encode_frame(batch))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._broke(exc)
            link.cancel()

    async def _read(self, stream: trio.SocketStream) -> None:
        """Take the owner's answers and pushes until the link ends."""
        try:
            async for kind, items in frames(stream, MAX_FRAME):
                if kind == "a":
                    for ident, answer in items:
                        waiting = self._waiting.get(ident)
                        if waiting is not None:
                            waiting.answer = answer
                            waiting.done.set()
                elif kind == "s":
                    for item in items:
                        self._mirror(*item)
        except (trio.BrokenResourceError, FrameError, PayloadError) as exc:
            self._broke(exc)

    def _broke(self, exc: Exception) -> None:
        log.warning("worker %d: the link to the owner broke: %r", self.app.worker_index, exc)

    def _mirror(
        self, path: str, body: bytes, content_type: bytes, status: int, scope: Any, name: str
    ) -> None:
        table = self.app.snapshots
        snap = table.get(path)
        if snap is None:
            table.register(path, body, self.app.recorder(name), content_type, status, scope)
            self.mirrored.add(path)
        elif path in self.mirrored:
            snap.publish(body, status)
        # Else the path is this worker's own (/livez, /readyz): never the owner's.


async def _upstream(conn: Conn, stream: trio.SocketStream) -> None:
    """The client's bytes to the owner, then the end of them."""
    view = memoryview(conn.buf)
    while data := await recv(conn.sock, view):
        await stream.send_all(data)
    await stream.send_eof()
