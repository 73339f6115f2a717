"""Symbols traded by other instances: commands forwarded to their owners.

Strategy
--------
A symbol configured with ``owner = "host:port"`` has no book here: its
commands go to the owner's order-entry port in the map protocol, and the
owner's reply is the answer (README.md, "Symbols on other instances").
``RemoteOwner`` is one owner's link: one persistent TCP connection, made and
remade by its background task (``run``) with a doubling backoff, on which
requests are pipelined. The port answers frames in the order they were
sent, so replies are matched to requests first in, first out. ``send``
puts a frame on the wire at once (a non-blocking send; a writer task takes
what the socket does not) and ``wait`` parks until its reply.

Failure: while the link is down a command is refused at once with
``OwnerUnavailable`` (503 ``owner_unavailable`` with ``Retry-After``). A
link that breaks fails every request in flight the same way; so does a
reply that takes longer than ``[orders] forward_timeout``, which also drops
the connection, since every reply behind the late one would be late too.
The owner may have applied (and journaled) a command whose reply never came,
just as for a client whose own connection broke: a ``client_order_id`` makes
the retry of a new order safe, and a cancel retried is answered
``order_done``. Nothing is ever resent by the link itself.
"""

from __future__ import annotations

import contextlib
import logging
import socket
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from sprintd import (
    App,
    FrameDecoder,
    FrameError,
    HTTPError,
    PayloadError,
    connect,
    decode_payload,
    encode_frame,
    recv,
    send_all,
    send_now,
)

from .config import parse_owner

__all__ = ["RETRY_AFTER_S", "OwnerUnavailable", "OwnersCollector", "RemoteOwner", "reply_status"]

log = logging.getLogger("sprintd.orders")

RETRY_AFTER_S = 1.0
# Reconnecting: the first retry at once-ish, then doubling to the cap.
BACKOFF_S = 0.05
BACKOFF_MAX_S = 1.0
# The owner's port closes a connection idle for server.framed_idle_timeout
# (300 s by default): an empty frame (answered by an empty one) this often
# keeps a quiet link open.
KEEPALIVE_S = 30.0
READ_SIZE = 1 << 16

# The HTTP status of each error code the order-entry port answers with; 400
# for the others (README.md, "HTTP": the codes and statuses are the same on
# both ports).
_STATUS = {
    "unknown_symbol": 404,
    "unknown_order": 404,
    "order_done": 409,
    "duplicate_client_order_id": 409,
    "internal_error": 500,
    "orders_halted": 503,
    "journal_unavailable": 503,
    "owner_unavailable": 503,
}
# Retry-After of the 503s, as the owner's own HTTP answers them.
_RETRY = {"orders_halted": 30.0, "journal_unavailable": 1.0, "owner_unavailable": RETRY_AFTER_S}


def reply_status(code: str) -> tuple[int, float | None]:
    """The HTTP status and Retry-After of an error reply's ``code``."""
    return _STATUS.get(code, 400), _RETRY.get(code)


class OwnerUnavailable(HTTPError):
    """503 ``owner_unavailable``: the owner did not answer (down, unreachable,
    or too slow); the command may or may not have been applied there."""

    def __init__(self, owner: str, why: str) -> None:
        super().__init__(
            503,
            "owner_unavailable",
            f"the instance that owns this symbol ({owner}) {why}; retry",
            retry_after=RETRY_AFTER_S,
        )


class _Waiting:
    """One frame's reply, to come: the reply, or None if the link failed."""

    __slots__ = ("done", "reply")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.reply: list[Any] | None = None


class RemoteOwner:
    """One owner's link (module doc).

    Args:
        owner: the owner's order-entry port, ``"host:port"``.
        timeout_s: a reply later than this fails its request and the link.
    """

    def __init__(self, owner: str, timeout_s: float) -> None:
        self.owner = owner
        self.host, self.port = parse_owner(owner)
        self.timeout_s = timeout_s
        self.sock: socket.socket | None = None
        self.waiting: deque[_Waiting] = deque()
        self.out = bytearray()
        self.sending = False
        self._wake = trio.Event()
        self._scope: trio.CancelScope | None = None
        # For /metrics and /health: commands answered by the owner, refused
        # because it did not answer, and links made.
        self.forwarded = 0
        self.unavailable = 0
        self.connects = 0
        self.why = "is not connected yet"

    @property
    def up(self) -> bool:
        return self.sock is not None

    # --- requests ------------------------------------------------------------

    def send(self, commands: list[Any]) -> _Waiting:
        """Put one frame of commands on the wire; ``wait`` takes its reply.

        Raises:
            OwnerUnavailable: the link is down.
        """
        sock = self.sock
        if sock is None:
            self.unavailable += len(commands)
            raise OwnerUnavailable(self.owner, self.why)
        data = encode_frame(commands)
        waiting = _Waiting()
        self.waiting.append(waiting)
        if self.out or self.sending:
            self.out += data
        else:
            try:
                sent = send_now(sock, data)
            except OSError:
                sent = 0
                self._fail("closed the connection")
            self.out += data[sent:]
        if self.out:
            self._wake.set()
        return waiting

    async def wait(self, waiting: _Waiting, count: int) -> list[Any]:
        """The reply to a frame ``send`` sent, of ``count`` commands.

        Raises:
            OwnerUnavailable: the link failed, or the reply took longer than
                the timeout (the link is then remade).
        """
        with trio.move_on_after(self.timeout_s):
            await waiting.done.wait()
        reply = waiting.reply
        if reply is None:
            if not waiting.done.is_set():
                self._fail(f"did not answer within {self.timeout_s:g} s")
            self.unavailable += count
            raise OwnerUnavailable(self.owner, self.why)
        self.forwarded += count
        return reply

    async def request(self, commands: list[Any]) -> list[Any]:
        """``send`` then ``wait``: the owner's replies to ``commands``."""
        return await self.wait(self.send(commands), len(commands))

    def _fail(self, why: str) -> None:
        """Drop the connection: its task fails what is in flight, reconnects."""
        self.why = why
        if self._scope is not None:
            self._scope.cancel()

    # --- the connection --------------------------------------------------------

    async def run(self, app: App) -> None:
        """Keep a connection to the owner, for as long as the daemon runs (a
        ``BackgroundTask``)."""
        backoff = BACKOFF_S
        while True:
            try:
                with trio.fail_after(self.timeout_s):
                    sock = await connect(self.host, self.port)
            except (OSError, trio.TooSlowError) as exc:
                self.why = f"cannot be reached ({exc})"
                await trio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_S
            self.connects += 1
            log.info("orders: linked to the owner %s", self.owner)
            await self._serve(sock)
            log.warning("orders: the link to the owner %s failed: it %s", self.owner, self.why)

    async def _serve(self, sock: socket.socket) -> None:
        self.why = "closed the connection"
        try:
            with trio.CancelScope() as self._scope:
                self.sock = sock
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write, sock)
                    nursery.start_soon(self._keepalive)
                    await self._read(sock)
                    nursery.cancel_scope.cancel()
        finally:
            self.sock = None
            self._scope = None
            self.out.clear()
            self.sending = False
            failed, self.waiting = self.waiting, deque()
            for waiting in failed:
                waiting.done.set()
            trio.lowlevel.notify_closing(sock)
            sock.close()

    async def _read(self, sock: socket.socket) -> None:
        decoder = FrameDecoder()
        view = memoryview(bytearray(READ_SIZE))
        while data := await recv(sock, view):
            decoder.feed(data)
            try:
                for payload in decoder.frames():
                    reply = decode_payload(payload)
                    if not self.waiting:
                        self.why = "sent a reply nothing asked for"
                        return
                    waiting = self.waiting.popleft()
                    waiting.reply = reply
                    waiting.done.set()
            except (FrameError, PayloadError) as exc:
                self.why = f"sent an unreadable reply ({exc})"
                return

    async def _write(self, sock: socket.socket) -> None:
        while True:
            if not self.out:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            data = bytes(self.out)
            self.out.clear()
            self.sending = True
            try:
                await send_all(sock, data)
            except OSError:
                self._fail("closed the connection")
                return
            self.sending = False

    async def _keepalive(self) -> None:
        while True:
            await trio.sleep(KEEPALIVE_S)
            if not self.waiting:
                # A failure has dropped the link already (``_fail``).
                with contextlib.suppress(OwnerUnavailable):
                    await self.request([])


class OwnersCollector:
    """The links' families on GET /metrics, read at scrape time."""

    def __init__(self, links: Mapping[str, RemoteOwner], worker: int) -> None:
        self.links = links
        self.worker = str(worker)

    def collect(self) -> Iterator[Metric]:
        forwarded = CounterMetricFamily(
            "sprintd_orders_forwarded_commands",
            "Commands for symbols other instances own, by owner and outcome: answered "
            "by the owner (whatever the answer), or refused 503 owner_unavailable here.",
            labels=["owner", "outcome", "worker"],
        )
        up = GaugeMetricFamily(
            "sprintd_orders_owner_up",
            "1 while the link to the owner's order-entry port is up.",
            labels=["owner", "worker"],
        )
        for owner, link in self.links.items():
            forwarded.add_metric([owner, "answered", self.worker], link.forwarded)
            forwarded.add_metric([owner, "unavailable", self.worker], link.unavailable)
            up.add_metric([owner, self.worker], 1.0 if link.up else 0.0)
        yield forwarded
        yield up
