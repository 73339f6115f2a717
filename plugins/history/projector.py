"""The projector: a task that tails the journal and commits its records to PostgreSQL as rows.

Strategy
--------
The journal is the truth and PostgreSQL a projection of it. The projector
reads the acknowledged records after the last seq it committed
(``Journal.read_after``), turns them into rows with each stream's decoder
(``decoders``) and writes a batch as one transaction: a ``COPY`` per table,
then ``history_progress.seq`` set to the batch's last seq, guarded by the seq
it had (``WHERE seq = <the previous one>``). So PostgreSQL holds the rows of
exactly the records up to ``seq``: a crash of either side rolls the open
transaction back, and the next batch starts after whatever was committed.
No row is written twice (the tables' keys would refuse it) and none skipped.

Reading, decoding and writing happen in worker threads, the order path never
waits on any of it: a command is acknowledged once the journal has it, and
PostgreSQL sees it a batch later. While PostgreSQL is down the journal keeps
everything (the projector's ``hold``), ``/health`` shows the lag in records
and seconds, and the projector retries every ``retry_interval``; when it
returns, the backlog goes in batches of ``batch_records``.

The decoders' state (the shadow order books) is committed with a batch every
``state_records`` records, at that batch's seq. That seq is where the
projector can resume from (its ``hold``): after a restart, or once a failed
transaction leaves the decoders ahead of what was committed, it loads that
state and replays the records up to the committed seq without writing them.

Cancellation: the worker threads are abandoned at shutdown (the daemon is
stopping); a transaction they leave open is rolled back when the connection
closes with the process.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
import psycopg
import trio

from sprintd import CheckStatus, Journal

from .config import HistorySection
from .decoders import Decoder, Rows, new_rows
from .schema import COLUMNS, create

__all__ = ["HOLD", "Projector"]

log = logging.getLogger("sprintd.history")

HOLD = "history"
"""The projector's hold on the journal (``Journal.hold``)."""
# Connection settings: fail over a dead server in seconds, not in the
# kernel's TCP timeouts (minutes), so that the lag shows and the retries begin.
_CONNECT_OPTIONS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
    "application_name": "sprintd-history",
}
# Lag samples kept at most (one per poll while records wait): past this the
# newest replaces the last, so the oldest, which the lag is measured from, stays.
_MAX_SAMPLES = 10_000
# Batches decoded ahead of the one being written: two keep the decoding and
# the COPY busy at once; more would only hold more rows in memory.
AHEAD = 2
_COPY = {table: f"COPY {table} ({', '.join(cols)}) FROM STDIN" for table, cols in COLUMNS.items()}


class ProgressMoved(Exception):
    """``history_progress`` is not where this projector left it: another writer."""


class ProjectorError(Exception):
    """The projector read what it did not expect (a bug): it starts again from what is committed."""


class HistoryAhead(Exception):
    """PostgreSQL holds records past the journal's end: another journal's history."""


@dataclass
class _Batch:
    # The progress it moves on from (its guard), and the seqs it covers.
    prev: int
    first: int
    last: int
    rows: Rows
    count: int
    # The decoders' state as of ``last``, when it is due.
    state: bytes | None


class Projector:
    """Tails ``journal`` into PostgreSQL (module doc); ``run`` is its task, ``check`` its health.

    Args:
        journal: the daemon's journal.
        section: the ``[history]`` settings (``postgres_url`` set).
        make_decoders: fresh decoders, one per stream projected (called again
            whenever their state must be rebuilt).
    """

    def __init__(
        self,
        journal: Journal,
        section: HistorySection,
        make_decoders: Callable[[], Sequence[Decoder]],
    ) -> None:
        assert section.postgres_url is not None
        self.journal = journal
        self.section = section
        self.url = section.postgres_url
        self.make_decoders = make_decoders
        self.decoders: dict[str, Decoder] = {}
        #: The last seq committed to PostgreSQL (as far as this process knows).
        self.committed = 0
        #: The seq of the decoders' state committed with it.
        self.state_seq = 0
        # The seq the decoders have applied; None: they must be rebuilt.
        self._applied: int | None = None
        self._position: tuple[int, int] | None = None
        # Batches decoded and not yet committed, oldest first: one being
        # written while the next is decoded (AHEAD at most).
        self._pending: deque[_Batch] = deque()
        # The seq PostgreSQL will be at once every pending batch is committed.
        self._tail = 0
        self._ready = trio.Event()
        self._room = trio.Event()
        self._since_state = 0
        self._samples: deque[tuple[int, float]] = deque()
        self.connected = False
        self.rows = 0
        self.batches = 0
        self.last_error: str | None = None
        #: A fault that retrying cannot mend (a decoder's, history ahead of the journal).
        self.fault: str | None = None
        #: Seqs lost to history: records compacted before the projector had them.
        self.skipped: tuple[int, int] | None = None

    # --- the task -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, resume, follow the journal; on any failure, reconnect after a while."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sample)
            while True:
                conn: psycopg.Connection[Any] | None = None
                try:
                    opened, progress = await trio.to_thread.run_sync(
                        self._connect, abandon_on_cancel=True
                    )
                    conn = opened
                    self.connected = True
                    await self._resume(*progress)
                    self.last_error = None
                    await self._follow(opened)
                # except*: _follow's nursery groups what its tasks raise.
                except* (psycopg.Error, OSError, ProgressMoved, ProjectorError) as group:
                    self._failed(group.exceptions[0], fault=False)
                except* Exception as group:
                    # A record a decoder cannot read, a database that is not
                    # this journal's, a bug: logged and shown, never fatal to
                    # the daemon; retried, in case an operator mends it.
                    self._failed(group.exceptions[0], fault=True)
                finally:
                    self.connected = False
                    if conn is not None:
                        # In a thread: a write that the failure abandoned may
                        # still hold the connection's lock.
                        await trio.to_thread.run_sync(conn.close, abandon_on_cancel=True)
                await trio.sleep(self.section.retry_interval)

    def _failed(self, exc: BaseException, *, fault: bool) -> None:
        text = f"{type(exc).__name__}: {exc}".splitlines()[0]
        if text != self.last_error:
            log.warning("history: %s; retrying every %gs", text, self.section.retry_interval)
        self.last_error = text
        if fault:
            self.fault = text

    def _connect(self) -> tuple[psycopg.Connection[Any], tuple[int, int, bytes | None]]:
        """Connect and make the schema; the progress it holds. Blocking (a thread)."""
        conn = psycopg.connect(self.url, autocommit=True, **_CONNECT_OPTIONS)
        try:
            return conn, create(conn)
        except BaseException:
            conn.close()
            raise

    async def _resume(self, seq: int, state_seq: int, state: bytes | None) -> None:
        """Make the decoders' state that of ``seq``, what PostgreSQL has committed."""
        pending = self._pending
        while pending and seq >= pending[0].last:
            # Its commit went through; only the answer was lost.
            self._committed(pending[0])
        if pending:
            if seq == pending[0].prev:
                self.committed, self.state_seq = seq, state_seq
                return  # written again by _follow, in order
            pending.clear()
            self._applied = None
        if self._applied == seq and self.committed == seq:
            return
        if self.journal.last_seq < seq:
            raise HistoryAhead(
                f"PostgreSQL has history up to seq {seq}, the journal ends at "
                f"{self.journal.last_seq}: another data directory's history"
            )
        self._applied = None
        self.decoders = {decoder.stream: decoder for decoder in self.make_decoders()}
        segments = self.journal.segments()
        first = segments[0].base_seq if segments else self.journal.last_seq + 1
        applied = state_seq
        if state is not None:
            for stream, data in msgpack.unpackb(state, raw=False).items():
                decoder = self.decoders.get(stream)
                if decoder is not None:
                    decoder.load(data)
        if applied + 1 < first:
            # The records after the saved state are gone (history was off
            # while the journal compacted): start from the streams' own
            # snapshots, and say which seqs history lacks.
            applied = self._from_snapshots(first)
            if applied > seq:
                self.skipped = (seq + 1, applied)
                log.warning(
                    "history: seqs %d..%d were compacted before projection", seq + 1, applied
                )
        position = None
        # Replayed into the decoders, not written: PostgreSQL has these rows.
        while applied < seq:
            records, position = await self._read(applied, position, until=seq)
            if not records:
                break
            await trio.to_thread.run_sync(self._decode, records, new_rows())
            applied = records[-1][0]
        self._applied, self._position = applied, position
        self.committed = self._tail = seq
        self.state_seq = state_seq
        self._since_state = applied - state_seq
        self.journal.hold(HOLD, min(state_seq, applied))
        log.info("history: projecting after seq %d (state at %d)", applied, state_seq)

    def _from_snapshots(self, first: int) -> int:
        """Load the stateful decoders from their streams' snapshots; the seq they are at."""
        at = first - 1
        for stream, decoder in self.decoders.items():
            if not decoder.stateful:
                continue
            latest = self.journal.latest_snapshot(stream)
            if latest is not None:
                decoder.load(latest[1])
                at = max(at, latest[0])
        return at

    async def _follow(self, conn: psycopg.Connection[Any]) -> None:
        """Write the pending batches in order, for as long as PostgreSQL answers,
        while ``_produce`` decodes the next: the decoding (this process) and the
        COPY (PostgreSQL's) overlap."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._produce)
            while True:
                if not self._pending:
                    self._ready = trio.Event()
                    await self._ready.wait()
                    continue
                batch = self._pending[0]
                await trio.to_thread.run_sync(self._write, conn, batch, abandon_on_cancel=True)
                self._committed(batch)

    async def _produce(self) -> None:
        poll = self.section.poll_interval_ms / 1000.0
        while True:
            if len(self._pending) >= AHEAD:
                self._room = trio.Event()
                await self._room.wait()
                continue
            batch = await self._next_batch()
            if batch is None:
                await trio.sleep(poll)
                continue
            self._pending.append(batch)
            self._ready.set()

    def _committed(self, batch: _Batch) -> None:
        self.committed = batch.last
        self.rows += batch.count
        self.batches += 1
        self._pending.popleft()
        self._room.set()
        self.fault = None
        if batch.state is not None:
            self.state_seq = batch.last
            self.journal.hold(HOLD, batch.last)

    async def _next_batch(self) -> _Batch | None:
        """Read and decode up to ``batch_records`` records; None when there are none yet."""
        assert self._applied is not None
        first = self._applied + 1
        records: list[tuple[int, str, bytes]] = []
        # Moved on with _applied only: records read by a task cancelled before
        # it decoded them are read again, from the position they were read at.
        position = self._position
        while (room := self.section.batch_records - len(records)) > 0:
            after = records[-1][0] if records else self._applied
            found, position = await self._read(after, position, room=room)
            if not found:
                break
            records += found
        if not records:
            return None
        last = records[-1][0]
        if records[0][0] != first or last - first + 1 != len(records):
            # The journal is gapless: a gap here is a misplaced position.
            self._position = None
            raise ProjectorError(f"read seqs {records[0][0]}..{last} after {first - 1}")
        rows = new_rows()
        due = self._since_state + len(records) >= self.section.state_records
        try:
            # Shielded: a batch decoded is kept (pending), whatever cancels
            # this task meanwhile, or the decoders would be ahead of it.
            with trio.CancelScope(shield=True):
                count, state = await trio.to_thread.run_sync(self._decode, records, rows, due)
        except Exception:
            self._applied = None  # part of the records may be applied
            raise
        self._applied, self._position = last, position
        self._since_state = 0 if due else self._since_state + len(records)
        batch = _Batch(self._tail, first, last, rows, count, state)
        self._tail = last
        return batch

    async def _read(
        self,
        after: int,
        position: tuple[int, int] | None,
        until: int | None = None,
        room: int | None = None,
    ) -> tuple[list[tuple[int, str, bytes]], tuple[int, int] | None]:
        """The next records after ``after``, at most ``room`` (none: there are none
        yet), read from ``position``; and the position past them."""
        while True:
            found, moved = await self.journal.read_after(
                after, position, until_seq=until, max_records=room
            )
            if found or moved == position:
                return found, moved
            position = moved

    def _decode(
        self, records: list[tuple[int, str, bytes]], rows: Rows, state: bool = False
    ) -> tuple[int, bytes | None]:
        """Apply the records to their decoders (a thread: only this task touches
        them); the rows made, and the decoders' state after them if asked."""
        decoders = self.decoders
        for seq, stream, payload in records:
            decoder = decoders.get(stream)
            if decoder is not None:
                decoder.apply(seq, payload, rows)
        count = sum(len(table) for table in rows.values())
        if not state:
            return count, None
        states = {stream: d.state() for stream, d in decoders.items() if d.stateful}
        data: bytes = msgpack.packb(states, use_bin_type=True)
        return count, data

    def _write(self, conn: psycopg.Connection[Any], batch: _Batch) -> None:
        """One transaction: the rows, then the progress (module doc). Blocking (a thread).

        Raises:
            ProgressMoved: the progress was not at ``batch.prev`` (rolled back).
            psycopg.Error: the server is gone or refused (rolled back).
        """
        with conn.transaction(), conn.cursor() as cur:
            for table, rows in batch.rows.items():
                if rows:
                    with cur.copy(_COPY[table]) as copy:
                        for row in rows:
                            copy.write_row(row)
            if batch.state is None:
                cur.execute(
                    "UPDATE history_progress SET seq = %s, updated_at = now() WHERE seq = %s",
                    (batch.last, batch.prev),
                )
            else:
                cur.execute(
                    "UPDATE history_progress SET seq = %s, state_seq = %s, state = %s,"
                    " updated_at = now() WHERE seq = %s",
                    (batch.last, batch.last, batch.state, batch.prev),
                )
            if cur.rowcount != 1:
                raise ProgressMoved(
                    f"history_progress is not at seq {batch.prev}: "
                    "another projector writes this database"
                )

    # --- lag and health -------------------------------------------------------------

    async def _sample(self) -> None:
        """Note when each new acknowledged seq was first seen: the lag's clock."""
        poll = self.section.poll_interval_ms / 1000.0
        samples = self._samples
        while True:
            seen = self.journal.acknowledged_seq
            if not samples or seen > samples[-1][0]:
                if len(samples) < _MAX_SAMPLES:
                    samples.append((seen, time.monotonic()))
                else:
                    samples[-1] = (seen, samples[-1][1])
            await trio.sleep(poll)

    def lag(self) -> tuple[int, float]:
        """(acknowledged records not yet committed, seconds the oldest of them has waited)."""
        records = max(self.journal.acknowledged_seq - self.committed, 0)
        samples = self._samples
        while samples and samples[0][0] <= self.committed:
            samples.popleft()
        if not records or not samples:
            return records, 0.0
        return records, time.monotonic() - samples[0][1]

    def check(self) -> tuple[CheckStatus, dict[str, Any]]:
        """``/health``: fail on a fault, warn while PostgreSQL is away or the lag is long."""
        records, seconds = self.lag()
        details: dict[str, Any] = {
            "connected": self.connected,
            "committed_seq": self.committed,
            "journal_seq": self.journal.acknowledged_seq,
            "state_seq": self.state_seq,
            "lag_records": records,
            "lag_seconds": round(seconds, 3),
            "rows": self.rows,
            "batches": self.batches,
        }
        if self.last_error is not None:
            details["output"] = self.last_error
        if self.skipped is not None:
            details["skipped"] = list(self.skipped)
        if self.fault is not None:
            return "fail", details
        if not self.connected or seconds > self.section.lag_warn_s:
            return "warn", details
        return "pass", details
