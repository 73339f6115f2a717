"""A small Redis client for Trio: one multiplexed, pipelined connection.

Strategy: the h11 way. ``hiredis.Reader`` is a sans-IO RESP parser written in
C: bytes go in with ``feed``, whole replies come out of ``gets``. This module
owns the I/O around it on a non-blocking stdlib socket parked on Trio's
``wait_readable``/``wait_writable`` (as the server does, ``sprintd.server.
sockio``), and ``hiredis.pack_command`` encodes commands.

One connection carries every task's commands. Redis answers the commands of
a connection in the order it received them (RESP's pipelining), so a caller
writes its command and joins the back of a queue of waiters; the reader, a
task of ``run()``, hands each reply to the waiter at the front. Concurrent
callers therefore pipeline for free: nobody waits for another's round trip
before writing, and a burst of commands leaves in as few writes as the socket
takes. ``pipeline()`` sends several commands in one write and gets their
replies together.

Usage::

    async with open_redis("redis://127.0.0.1:6379/0") as redis:
        await redis.execute("SET", "k", "v")
        [value, ttl] = await redis.pipeline([("GET", "k"), ("PTTL", "k")])
        count = await redis.script(INCR_BELOW, keys=["k"], args=[10])

or, inside a daemon, make a ``Redis(url)`` in ``sprintd_configure`` and run
``redis.run`` as a background task.

Errors: an error reply (``-ERR ...``) is a ``RedisReplyError`` raised by
``execute`` and ``script`` (``pipeline`` can return them in place). A lost
connection fails every command waiting for a reply with
``RedisConnectionError``; such a command may or may not have run, as with any
network call. ``run()`` then reconnects with back-off; while it is down,
commands wait for it up to ``connect_timeout`` and then fail the same way.

Cancellation: a command cancelled before it was written is not sent. One
cancelled while it waits for its reply has been sent and will run; its reply
is read and dropped, so the connection stays in step. Put a deadline on a
call with ``trio.move_on_after``/``fail_after``: the connection is unaffected.

Values: arguments are ``bytes``, ``str`` (UTF-8), ``int`` or ``float``;
replies come back as hiredis gives them: ``bytes``, ``int``, ``None``, lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, cast

import hiredis
import trio
from trio.lowlevel import (
    Abort,
    Task,
    current_task,
    reschedule,
    wait_readable,
    wait_task_rescheduled,
    wait_writable,
)

from . import sockio
from .redisurl import parse_url

__all__ = [
    "Redis",
    "RedisConnectionError",
    "RedisError",
    "RedisReplyError",
    "Script",
    "open_redis",
]

Arg = bytes | str | int | float
Command = Sequence[Arg]

# Reconnection waits this long after a failure, doubling up to the cap: fast
# enough that a restarted Redis is found within a second, slow enough that a
# dead one costs nothing.
RECONNECT_FIRST = 0.05
RECONNECT_CAP = 1.0
READ_SIZE = 64 * 1024
# hiredis answers "not a whole reply yet" with this object instead of False,
# which a RESP3 boolean could be.
_MISSING = object()


def _pack(command: Command) -> bytes:
    # hiredis's stub types pack_command's argument as a one-element tuple.
    packed: bytes = hiredis.pack_command(cast(Any, tuple(command)))
    return packed


class RedisError(Exception):
    """Base of this module's errors."""


class RedisReplyError(RedisError):
    """Redis answered the command with an error (``-ERR ...``, ``-NOSCRIPT ...``)."""


class RedisConnectionError(RedisError):
    """No connection, or it was lost: a command waiting for its reply may or may not have run."""


class Script:
    """A Lua script, run by its SHA1 (``EVALSHA``) and loaded on first use."""

    __slots__ = ("sha", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


class _Waiter:
    """A task waiting for ``count`` replies (one command, or a pipeline's)."""

    __slots__ = ("count", "error", "replies", "task")

    def __init__(self, count: int, task: Task | None) -> None:
        self.count = count
        self.replies: list[Any] = []
        self.error: RedisConnectionError | None = None
        # None once the caller was cancelled: its replies are read and dropped.
        self.task = task


class Redis:
    """One connection to one Redis, shared by every task of a Trio run.

    ``run()`` must be running (a background task, or ``open_redis``) for
    commands to be answered; everything else may be called from any task of
    that run. Not thread-safe.
    """

    def __init__(self, url: str, *, connect_timeout: float = 2.0) -> None:
        """
        Args:
            url: ``redis://host:port/db`` (see ``parse_url``).
            connect_timeout: how long a command waits for a connection (and
                one connection attempt may take) before it fails.

        Raises:
            ValueError: a bad URL.
        """
        self.address = parse_url(url)
        self.url = url
        self.connect_timeout = connect_timeout
        self._sock: socket.socket | None = None
        self._reader = hiredis.Reader(replyError=RedisReplyError, notEnoughData=_MISSING)
        self._waiters: deque[_Waiter] = deque()
        # Bytes the socket did not take yet; the writer task sends them.
        self._out = bytearray()
        self._writable = trio.Event()
        self._up = trio.Event()
        self._lost = trio.Event()
        self.connects = 0

    @property
    def connected(self) -> bool:
        return self._sock is not None

    # --- commands ----------------------------------------------------------------

    async def execute(self, *args: Arg) -> Any:
        """Run one command and return its reply.

        Raises:
            RedisReplyError: Redis answered with an error.
            RedisConnectionError: no connection within ``connect_timeout``, or
                it was lost before the reply came.
        """
        [reply] = await self._call(_pack(args), 1)
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    async def pipeline(
        self, commands: Sequence[Command], *, raise_on_error: bool = True
    ) -> list[Any]:
        """Send ``commands`` in one write; return their replies, in order.

        Args:
            commands: each a sequence of arguments.
            raise_on_error: raise the first error reply; else return it in place.

        Raises:
            RedisReplyError: a command failed and ``raise_on_error`` is set
                (the others have run).
            RedisConnectionError: as ``execute``.
        """
        if not commands:
            return []
        data = b"".join(_pack(command) for command in commands)
        replies = await self._call(data, len(commands))
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, RedisReplyError):
                    raise reply
        return replies

    async def script(
        self, script: Script, keys: Sequence[Arg] = (), args: Sequence[Arg] = ()
    ) -> Any:
        """Run a Lua script by its SHA1, loading it first if this Redis lacks it.

        Raises:
            RedisReplyError: the script failed.
            RedisConnectionError: as ``execute``.
        """
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        # EVAL runs it and caches it: the next EVALSHA finds it.
        return await self.execute("EVAL", script.source, len(keys), *keys, *args)

    async def _call(self, data: bytes, count: int) -> list[Any]:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._sock is None:
            await self._wait_up()
        sock = self._sock
        assert sock is not None
        task = current_task()
        waiter = _Waiter(count, task)
        self._waiters.append(waiter)
        self._send(sock, data)

        def abort(_: Any) -> Abort:
            waiter.task = None
            return Abort.SUCCEEDED

        await wait_task_rescheduled(abort)
        if waiter.error is not None:
            raise waiter.error
        return waiter.replies

    async def _wait_up(self) -> None:
        with trio.move_on_after(self.connect_timeout):
            while self._sock is None:
                await self._up.wait()
            return
        raise RedisConnectionError(
            f"redis {self.address.host}:{self.address.port}: not connected "
            f"within {self.connect_timeout} s"
        )

    def _send(self, sock: socket.socket, data: bytes) -> None:
        """Write now what the socket takes; the writer task sends the rest, in order."""
        if not self._out:
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                # The reader sees the same failure and fails the waiters.
                self._lost.set()
                return
            if sent == len(data):
                return
            data = data[sent:]
        self._out += data
        self._writable.set()

    # --- the connection ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, read replies, reconnect after a loss; until cancelled.

        Reports started once the first connection is up (``nursery.start``).

        Raises:
            RedisConnectionError: the first connection failed (only when
                started with ``nursery.start``, so a caller learns at once
                that the URL is wrong); later losses are retried forever.
        """
        delay = RECONNECT_FIRST
        started = False
        try:
            while True:
                try:
                    sock = await self._connect(sockio.connect)
                except (OSError, RedisError, trio.TooSlowError) as exc:
                    if not started and task_status is not trio.TASK_STATUS_IGNORED:
                        raise RedisConnectionError(
                            f"redis {self.address.host}:{self.address.port}: {exc}"
                        ) from None
                    await trio.sleep(delay)
                    delay = min(delay * 2, RECONNECT_CAP)
                    continue
                delay = RECONNECT_FIRST
                self._up_with(sock)
                if not started:
                    started = True
                    task_status.started()
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._write_loop, sock)
                        nursery.start_soon(self._watch_lost, nursery)
                        await self._read_loop(sock, sockio.recv)
                        nursery.cancel_scope.cancel()
                finally:
                    self._down("connection lost")
        finally:
            self._down("client stopped")

    async def _connect(
        self, connect: Callable[[str, int], Awaitable[socket.socket]]
    ) -> socket.socket:
        address = self.address
        with trio.fail_after(self.connect_timeout):
            sock = await connect(address.host, address.port)
            try:
                await self._handshake(sock)
            except BaseException:
                sock.close()
                raise
        self.connects += 1
        return sock

    async def _handshake(self, sock: socket.socket) -> None:
        """AUTH and SELECT, answered before the connection is shared."""
        address = self.address
        commands: list[tuple[Arg, ...]] = []
        if address.password is not None:
            user = (address.username,) if address.username else ()
            commands.append(("AUTH", *user, address.password))
        if address.db:
            commands.append(("SELECT", address.db))
        if not commands:
            return
        data = b"".join(_pack(c) for c in commands)
        view = memoryview(data)
        while view:
            await wait_writable(sock)
            view = view[sock.send(view) :]
        reader = hiredis.Reader(replyError=RedisReplyError, notEnoughData=_MISSING)
        replies: list[Any] = []
        while len(replies) < len(commands):
            await wait_readable(sock)
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                raise RedisConnectionError("closed during AUTH/SELECT")
            reader.feed(chunk)
            while (reply := reader.gets()) is not _MISSING:
                replies.append(reply)
        for reply in replies:
            if isinstance(reply, RedisReplyError):
                raise reply

    def _up_with(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = hiredis.Reader(replyError=RedisReplyError, notEnoughData=_MISSING)
        self._lost = trio.Event()
        self._up.set()

    def _down(self, why: str) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        self._up = trio.Event()
        self._out.clear()
        error = RedisConnectionError(
            f"redis {self.address.host}:{self.address.port}: {why}; "
            "a command sent may or may not have run"
        )
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if waiter.task is not None:
                waiter.error = error
                reschedule(waiter.task)
        trio.lowlevel.notify_closing(sock)
        sock.close()

    async def _watch_lost(self, nursery: trio.Nursery) -> None:
        await self._lost.wait()
        nursery.cancel_scope.cancel()

    async def _write_loop(self, sock: socket.socket) -> None:
        out = self._out
        while True:
            if not out:
                self._writable = trio.Event()
                await self._writable.wait()
                continue
            await wait_writable(sock)
            try:
                sent = sock.send(out)
            except BlockingIOError:
                continue
            except OSError:
                self._lost.set()
                return
            del out[:sent]

    async def _read_loop(
        self, sock: socket.socket, recv: Callable[[socket.socket, memoryview], Awaitable[bytes]]
    ) -> None:
        view = memoryview(bytearray(READ_SIZE))
        reader = self._reader
        waiters = self._waiters
        while data := await recv(sock, view):
            reader.feed(data)
            while (reply := reader.gets()) is not _MISSING:
                if not waiters:
                    return  # a reply nobody asked for: the stream is out of step
                waiter = waiters[0]
                waiter.replies.append(reply)
                if len(waiter.replies) == waiter.count:
                    waiters.popleft()
                    if waiter.task is not None:
                        reschedule(waiter.task)


@contextlib.asynccontextmanager
async def open_redis(url: str, *, connect_timeout: float = 2.0) -> AsyncIterator[Redis]:
    """A connected ``Redis`` for the block, its ``run()`` in a nursery of its own.

    Raises:
        RedisConnectionError: the first connection failed.
        ValueError: a bad URL.
    """
    redis = Redis(url, connect_timeout=connect_timeout)
    started = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(redis.run)
            started = True
            try:
                yield redis
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The nursery wraps start()'s failure: give the caller the error itself.
        if not started and len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
