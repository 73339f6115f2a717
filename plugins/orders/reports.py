"""The order-entry port's sessions and the execution reports pushed to them.

Strategy
--------
``EntryPort.serve`` serves one connection of the order-entry port. Each
read's whole frames are answered in order, one reply frame per request frame:
runs of first-protocol frames go to ``OrdersAPI.entry`` as they always did,
runs of compact frames to ``compact.CompactHandler``; either way the run's
records are journaled with one group commit before any reply is sent.

Execution reports. The service hands every live command's events to
``ReportHub.collect`` (``OrderService.on_events``), which keeps a report for
each fill of a resting order whose account is named (the anonymous account
``""`` has no session to report to). ``flush``, called once the journal has
the command's record (``OrdersAPI.journaled``: with a ``mark`` taken as the
records were appended, so another batch's fills, applied since and not yet
durable, wait for their own), numbers each account's
reports (``seq``, gapless, from 1 in each daemon run, which the hello's
``epoch`` tells apart), keeps the latest ``[orders] report_ring`` for replay
and pushes them, one frame per account per flush, to the account's live
compact sessions. A fill is never reported before it is durable.

Never blocking the engine: a push is a non-blocking send; what the socket
does not take waits in the session's buffer for its writer task, and a
session whose backlog (that buffer and what its socket has not delivered)
would pass ``[orders] report_queue`` bytes is sent
``[SESSION_ERROR, "slow_consumer", message]`` (if its socket takes it) and
closed. Replies go through the same buffer, so frames never interleave; a
reader whose replies are not taken stops reading until they are.

Resource handling: one writer task per connection, beside its reader, both in
the connection's nursery; the session leaves its account when the connection
ends, whichever way. Timeouts and drain are the core framed loop's
(``framed_listener``), from the same ``conn.state``: a compact session that
only waits for reports sends an empty frame (``[2]``) within
``server.framed_idle_timeout`` to stay open.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import sys
import termios
import time
from collections import deque
from typing import TYPE_CHECKING, Any

import trio
from trio.lowlevel import ParkingLot

from sprintd import (
    BUSY,
    FRAME,
    SEND,
    SESSION,
    Conn,
    FrameDecoder,
    FrameError,
    PayloadError,
    decode_payload,
    encode_frame,
    error_reply,
    recv,
    send_all,
    send_now,
)

from .commands import InvalidOrder
from .compact import (
    ERR,
    OK,
    REPLIES,
    REPORTS,
    SESSION_ERROR,
    CompactHandler,
    is_compact,
    symbol_table,
)
from .events import EV_TRADE, Event
from .service import OrderService

if TYPE_CHECKING:
    from .api import OrdersAPI

__all__ = ["EntryPort", "ReportHub", "Session"]

_MAX_ACCOUNT = 64  # as commands.Parser's account
_INT = bytes(4)


def _unsent(sock: socket.socket) -> int:
    """Bytes in the socket's send queue the peer has not acknowledged: the
    kernel's part of a session's backlog (it grows its buffer to megabytes
    for a peer that does not read)."""
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, _INT), sys.byteorder)
    except OSError:
        return 0


class _Account:
    """One account's reports: the last ``seq``, the latest ones, its sessions."""

    __slots__ = ("ring", "seq", "sessions")

    def __init__(self, ring: int) -> None:
        self.seq = 0
        self.ring: deque[list[Any]] = deque(maxlen=ring)
        self.sessions: set[Session] = set()


class ReportHub:
    """Execution reports by account (module doc).

    Args:
        service: the books; the hub becomes its ``on_events``.
        ring: reports kept per account for replay.
    """

    def __init__(self, service: OrderService, ring: int) -> None:
        self.service = service
        self.ring = ring
        self.index = {symbol: i for i, symbol in enumerate(service.specs)}
        self.symbols = symbol_table(service.specs)
        #: Tells this daemon run's sequence numbers from another's.
        self.epoch = time.time_ns()
        self.accounts: dict[str, _Account] = {}
        # (account number, report) of commands applied, not yet journaled,
        # after the _flushed reports numbered, kept and pushed (or dropped).
        self.pending: list[tuple[int, list[Any]]] = []
        self._flushed = 0
        self._names: dict[int, str] = {}
        service.on_events = self.collect

    def collect(self, symbol: str, events: list[Event]) -> None:
        """Keep a report per fill of a named account's resting order."""
        if len(events) < 2:
            return  # a trade comes after the taker's own first event
        engine = self.service.engines[symbol]
        for event in events:
            if event[0] == EV_TRADE:
                # After the command: a taker fills each maker at most once.
                state = engine.order(event[3])
                if state is not None and state.account:
                    report = [self.index[symbol], event[3], event[2], event[5], event[6]]
                    report.append(state.remaining_qty)
                    self.pending.append((state.account, report))

    def _account(self, name: str) -> _Account:
        account = self.accounts.get(name)
        if account is None:
            account = self.accounts[name] = _Account(self.ring)
        return account

    def _name(self, number: int) -> str:
        name = self._names.get(number)
        if name is None:
            self._names = {n: a for a, n in self.service.accounts.items()}
            name = self._names[number]
        return name

    def mark(self) -> int:
        """How many reports were ever collected: ``flush`` and ``drop`` take
        such a mark, taken as the commands before it are appended."""
        return self._flushed + len(self.pending)

    def drop(self, upto: int) -> None:
        """Forget the reports before ``upto`` (their records failed)."""
        self._take(upto)

    def flush(self, upto: int) -> None:
        """Number, keep and push the reports before ``upto``: their commands'
        records are durable (the journal's records are in order, so a record
        is durable once a later one is)."""
        taken = self._take(upto)
        if not taken:
            return
        frames: dict[_Account, list[Any]] = {}
        for number, report in taken:
            account = self._account(self._name(number))
            account.seq += 1
            account.ring.append(report)
            if account.sessions:
                frame = frames.get(account)
                if frame is None:
                    frames[account] = [REPORTS, account.seq, report]
                else:
                    frame.append(report)
        for account, frame in frames.items():
            data = encode_frame(frame)
            for session in list(account.sessions):
                session.push(data)

    def _take(self, upto: int) -> list[tuple[int, list[Any]]]:
        count = upto - self._flushed
        if count <= 0:
            return []
        taken = self.pending[:count]
        del self.pending[:count]
        self._flushed += count
        return taken

    def hello(self, session: Session, command: list[Any]) -> list[Any]:
        """Bind ``session`` to its account: ``[HELLO, account, after_seq?]``;
        the reports after ``after_seq`` still in the ring go first.

        Raises:
            InvalidOrder: ``bad_command``, ``invalid_account``, ``bad_sequence``
                (after the account's last report), ``replay_unavailable`` (no
                longer in the ring: the message names the oldest kept).
        """
        if not 2 <= len(command) <= 3:
            raise InvalidOrder("bad_command", "hello is [0, account, after_seq?]")
        name = command[1]
        if type(name) is not str or not 0 < len(name) <= _MAX_ACCOUNT:
            raise InvalidOrder("invalid_account", f"account must be 1 to {_MAX_ACCOUNT} characters")
        after = command[2] if len(command) == 3 else None
        account = self._account(name)
        if after is not None:
            if type(after) is not int or not 0 <= after <= account.seq:
                raise InvalidOrder(
                    "bad_sequence", f"after_seq must be an integer from 0 to {account.seq}"
                )
            kept = len(account.ring)
            oldest = account.seq - kept + 1
            if after + 1 < oldest:
                raise InvalidOrder(
                    "replay_unavailable",
                    f"reports from {oldest} to {account.seq} are kept; {after + 1} is gone",
                )
            missed = list(account.ring)[kept - (account.seq - after) :]
            if missed:
                session.write(encode_frame([REPORTS, after + 1, *missed]))
        session.account = name
        session.reports = account
        account.sessions.add(session)
        return [OK, self.epoch, account.seq, self.symbols]


class Session:
    """One connection's output, and its compact session's account.

    ``write`` and ``push`` never wait: a send that falls short leaves the rest
    to the writer task (``writer``), behind which everything else queues.
    """

    __slots__ = (
        "_drained",
        "_work",
        "account",
        "conn",
        "hub",
        "limit",
        "out",
        "reports",
        "sending",
    )

    def __init__(self, conn: Conn, hub: ReportHub, limit: int) -> None:
        self.conn = conn
        self.hub = hub
        self.limit = limit
        #: The account of a compact session, once it said hello.
        self.account: str | None = None
        self.reports: _Account | None = None
        self.out = bytearray()
        self.sending = 0
        self._work = ParkingLot()
        self._drained = ParkingLot()

    def hello(self, command: list[Any]) -> list[Any]:
        """Answer a hello (``ReportHub.hello``)."""
        return self.hub.hello(self, command)

    @property
    def busy(self) -> bool:
        """Output is waiting for the peer."""
        return bool(self.out) or self.sending > 0

    def write(self, data: bytes) -> None:
        """Send ``data`` after whatever is queued, without waiting."""
        if self.out or self.sending:
            self.out += data
            self._work.unpark_all()
            return
        try:
            sent = send_now(self.conn.sock, data)
        except OSError:
            self.close()  # the peer is gone: its reader sees the end next
            return
        if sent < len(data):
            self.out += data[sent:]
            self._work.unpark_all()

    def push(self, data: bytes) -> None:
        """``write`` a report frame, or close a session too far behind."""
        if len(self.out) + self.sending + _unsent(self.conn.sock) + len(data) > self.limit:
            self.fail("slow_consumer", f"more than {self.limit} bytes of reports not taken")
        else:
            self.write(data)

    def fail(self, code: str, message: str) -> None:
        """Tell the peer why (if its socket takes it now) and close."""
        if not self.busy:
            with contextlib.suppress(OSError):
                send_now(self.conn.sock, encode_frame([SESSION_ERROR, code, message]))
        self.close()

    def close(self) -> None:
        self.leave()
        self.conn.scope.cancel()

    def leave(self) -> None:
        if self.reports is not None:
            self.reports.sessions.discard(self)
            self.reports = None

    async def writer(self) -> None:
        """Send what ``write`` queued, for as long as the connection lives."""
        while True:
            if not self.out:
                await self._work.park()
                continue
            data = bytes(self.out)
            self.out.clear()
            self.sending = len(data)
            try:
                await send_all(self.conn.sock, data)
            except OSError:
                self.close()
                return
            self.sending = 0
            if not self.out:
                self._drained.unpark_all()

    async def drained(self) -> None:
        """Wait until the peer took everything written."""
        while self.busy:
            await self._drained.park()


class EntryPort:
    """The order-entry port's ``Listener.serve``: both protocols, and the reports.

    Args:
        api: the first protocol's handler (``OrdersAPI.entry``) and the journal.
        queue: a session's report bytes waiting at most (``[orders] report_queue``).
    """

    def __init__(self, api: OrdersAPI, queue: int) -> None:
        self.api = api
        self.hub = api.reports
        self.queue = queue
        self.handler = CompactHandler(api.service)

    async def serve(self, conn: Conn) -> None:
        session = Session(conn, self.hub, self.queue)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(session.writer)
                await self._read(session)
                conn.state = SEND
                await session.drained()
                nursery.cancel_scope.cancel()
        finally:
            session.leave()

    def _frame_error(self, session: Session, code: str, message: str, fatal: bool) -> bytes:
        if session.account is None:
            return encode_frame(error_reply(code, message))
        if fatal:
            return encode_frame([SESSION_ERROR, code, message])
        return encode_frame([REPLIES, [ERR, code, message]])

    async def _read(self, session: Session) -> None:
        conn = session.conn
        decoder = FrameDecoder()
        view = memoryview(conn.buf)
        while data := await recv(conn.sock, view):
            conn.mark = time.perf_counter_ns()
            decoder.feed(data)
            # Decoded frames, and the error reply (encoded) of each that was not.
            batch: list[list[Any] | bytes] = []
            fatal = None
            try:
                for payload in decoder.frames():
                    try:
                        batch.append(decode_payload(payload))
                    except PayloadError as exc:
                        batch.append(self._frame_error(session, "bad_frame", str(exc), False))
            except FrameError as exc:
                fatal = self._frame_error(session, "bad_length", str(exc), True)
            out: list[bytes] = []
            if batch:
                conn.state = BUSY
                out = await self._answer(session, batch)
            if fatal is not None:
                out.append(fatal)
            if out:
                session.write(b"".join(out))
                if session.busy:
                    conn.state = SEND
                    await session.drained()
            if fatal is not None or conn.closing:
                return
            # As the core's framed loop (``framed_listener``): a frame begun
            # in this read runs from its mark; or none.
            conn.state = FRAME if decoder.buffered else SESSION

    async def _answer(self, session: Session, batch: list[list[Any] | bytes]) -> list[bytes]:
        """Each frame's reply, encoded, in order: runs of one protocol at a time."""
        out: list[bytes] = []
        i, n = 0, len(batch)
        while i < n:
            item = batch[i]
            if isinstance(item, bytes):
                out.append(item)
                i += 1
                continue
            compact = is_compact(item)
            j = i + 1
            while j < n and not isinstance(batch[j], bytes) and is_compact(batch[j]) == compact:  # type: ignore[arg-type]
                j += 1
            run: list[list[Any]] = batch[i:j]  # type: ignore[assignment]
            if compact:
                out += await self._compact(session, run)
            else:
                out += map(encode_frame, await self.api.entry(run))
            i = j
        return out

    async def _compact(self, session: Session, run: list[list[Any]]) -> list[bytes]:
        api = self.api
        payloads: list[bytes] = []
        writable = api.journal.unavailable is None
        frame = self.handler.frame
        # Encoded before the wait for the journal: bytes, not a list or two
        # per order, are what stays alive through the fsync, where the
        # enterprise tier's young collections would walk them.
        replies = [encode_frame(frame(session, f, payloads, writable)) for f in run]
        await api.journaled(payloads)
        return replies
