"""Snapshots and checkpoints: what keeps a journal about the size of the state it holds.

A *snapshot* is a stream's state as of a seq, stored atomically under
``snapshots/<stream>/`` (the newest ``KEEP_SNAPSHOTS`` kept). A *checkpoint*
is a snapshot then compaction: the segments that no stream's kept snapshots
need any more are deleted (``SegmentFiles.compactable``).

Strategy: a stateful plugin does two things. At start-up
``restore(stream, load, apply)`` rebuilds its state (its newest snapshot that
verifies, then the records after it); it only reads, so it works on a full
disk. Then ``register(stream, state)`` hands the journal a getter, and the
journal checkpoints every registered stream together: in the background
after ``checkpoint_records`` records or ``checkpoint_bytes`` bytes written
(the writer reports each batch to ``written``; no request waits), and once
more at ``close()``. The data directory thus stays about the state (two
snapshots) plus two checkpoint intervals of records plus the active and
spare segments, whatever the uptime.

Why a snapshot is never ahead of the journal: the getter is called with no
await between it and reading ``last_seq``, and the journal is synced up to
that seq before the snapshot is written. At close no snapshot is taken after
a failure, nor while a record appended (and so applied by its plugin) is
unwritten: it would claim it. A snapshot the disk refuses keeps the previous
one, and is retried after ``probe_interval``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import trio

from .journal_format import (
    KEEP_SNAPSHOTS,
    SNAPSHOT_DIR,
    JournalError,
    JournalReport,
    check_stream,
    decode_snapshot,
    encode_snapshot,
    read_records,
    snapshot_files,
    snapshot_name,
)
from .journal_segments import fsync_dir, mkdir_durable
from .journal_writer import Writer

__all__ = ["Checkpoints"]

log = logging.getLogger("sprintd.journal")

# What a snapshot is written to before it is renamed into place; one left by
# a crash is removed by ``open()``.
TMP_SUFFIX = ".tmp"


class Checkpoints:
    """The snapshot store of one journal, and the checkpoints of its registered streams."""

    def __init__(
        self,
        writer: Writer,
        *,
        checkpoint_records: int,
        checkpoint_bytes: int,
        retry_interval: float,
    ) -> None:
        self.writer = writer
        self.files = writer.files
        self.directory: Path = writer.files.directory
        self.checkpoint_records = checkpoint_records
        self.checkpoint_bytes = checkpoint_bytes
        self.retry_interval = retry_interval
        # Registered streams' state getters, checkpointed together.
        self._states: dict[str, Callable[[], bytes]] = {}
        self._due = trio.Event()
        self._lock = trio.Lock()
        self._next_seq = 0
        self._next_bytes = 0
        #: Checkpoints done and failed (a snapshot the disk refused), the seq
        #: and wall time of the last one that was written.
        self.checkpoints = 0
        self.failures = 0
        self.last_seq = 0
        self.last_time: float | None = None

    def remove_tmp(self) -> None:
        """Remove the half-written snapshots a crash left (the older ones stand)."""
        for tmp in (self.directory / SNAPSHOT_DIR).glob(f"*/*{TMP_SUFFIX}"):
            tmp.unlink(missing_ok=True)

    def opened(self, report: JournalReport) -> None:
        """Start counting towards the first checkpoint from what the directory holds."""
        floor = min((infos[0].seq for infos in report.snapshots.values()), default=0)
        self._next_seq = max(floor, 0) + self.checkpoint_records
        self._next_bytes = self.checkpoint_bytes
        self.last_seq = floor

    @property
    def disk_bytes(self) -> int:
        """Bytes of the snapshot files."""
        total = 0
        for path in (self.directory / SNAPSHOT_DIR).glob("*/*"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    # --- the snapshot store -------------------------------------------------------

    def write_snapshot(self, stream: str, seq: int, data: bytes) -> Path:
        """Store a stream's state as of ``seq``, atomically; keep the newest two.

        Written to a ``.tmp`` file, fsynced, renamed into place, and the
        directory fsynced: a crash leaves the old snapshot or the new one,
        never half of one (a leftover ``.tmp`` is ignored, and removed by
        ``open()``). The journal is fsynced up to ``seq`` first, so a snapshot
        is never newer than the records on disk.

        Blocking: two or three fsyncs. In a running daemon use ``snapshot()``.

        Args:
            stream: the stream the state belongs to.
            seq: the last seq the state includes; at most ``written_seq``.
            data: the state, in the plugin's own encoding.

        Returns:
            The snapshot file's path.

        Raises:
            ValueError: a bad stream name, or ``seq`` not written yet.
            JournalError: the journal failed or is not open.
            OSError: the file cannot be written.
        """
        self.writer.check_open()
        check_stream(stream)
        if seq > self.writer.written_seq:
            raise ValueError(
                f"snapshot of {stream} at seq {seq}: the journal has written up to "
                f"{self.writer.written_seq}; await journal.snapshot() or journal.sync() first"
            )
        if seq > self.writer.synced_seq:
            self.writer.fsync_now()
        return self._store(stream, seq, data)

    async def snapshot(self, stream: str, seq: int, data: bytes) -> Path:
        """``write_snapshot`` without blocking the loop: sync, then write in a thread.

        Args, returns and raises as ``write_snapshot``, but for ``seq``: at
        most ``last_seq`` (what is not written yet is synced first).
        """
        check_stream(stream)
        if seq > self.writer.last_seq:
            raise ValueError(
                f"snapshot of {stream} at seq {seq}: last seq is {self.writer.last_seq}"
            )
        await self.writer.sync()
        return await trio.to_thread.run_sync(self._store, stream, seq, data)

    def _store(self, stream: str, seq: int, data: bytes) -> Path:
        """Write a snapshot atomically and drop the ones past ``KEEP_SNAPSHOTS``; blocking."""
        folder = self.directory / SNAPSHOT_DIR / stream
        mkdir_durable(folder)
        final = folder / snapshot_name(seq)
        tmp = final.with_name(final.name + TMP_SUFFIX)
        try:
            with open(tmp, "wb") as file:
                file.write(encode_snapshot(seq, bytes(data)))
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            # A full disk: the half-written file goes, the older snapshots stay.
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, final)
        fsync_dir(folder)
        for _, old in snapshot_files(self.directory, stream)[KEEP_SNAPSHOTS:]:
            old.unlink(missing_ok=True)
        return final

    def latest_snapshot(self, stream: str) -> tuple[int, bytes] | None:
        """The newest snapshot of ``stream`` that verifies.

        A newer one that does not verify is logged and passed over; the
        journal still holds the records after the older one (see ``compact``).

        Args:
            stream: the stream.

        Returns:
            ``(seq, data)``, or None if the stream has no readable snapshot.

        Raises:
            ValueError: a bad stream name.
        """
        check_stream(stream)
        for seq, path in snapshot_files(self.directory, stream):
            data, problem = decode_snapshot(path.read_bytes(), seq)
            if data is not None:
                return seq, data
            log.warning(
                "journal: snapshot %s is unreadable (%s); trying an older one", path, problem
            )
        return None

    def compact(self) -> list[Path]:
        """Delete the oldest segments that no stream needs any more.

        A segment may go when, for every stream with a record in it, the
        *oldest* of that stream's kept snapshots is at or past the segment's
        last seq: replay from either kept snapshot then never needs it. Only
        a run of whole segments from the oldest is deleted (the journal stays
        gapless), and never the active one. A stream without a snapshot keeps
        every segment it has a record in.

        Blocking (unlinks, a directory fsync); ``checkpoint`` does it in a thread.

        Returns:
            The deleted segment files, oldest first.

        Raises:
            JournalError: the journal failed or is not open.
            OSError: a file cannot be deleted.
        """
        self.writer.check_open()
        return self.files.compact_now()

    async def _compact(self) -> None:
        error = await self.files.compact()
        if error is not None:
            log.warning("journal %s: compaction stopped: %s", self.directory, error)

    # --- checkpoints ----------------------------------------------------------------

    def restore(
        self, stream: str, load: Callable[[bytes], None], apply: Callable[[bytes], object]
    ) -> tuple[int, int]:
        """Rebuild a stream's state at start-up: its newest snapshot, then the records after it.

        Read-only: it works on a full disk.

        Args:
            stream: the stream.
            load: takes the snapshot's data (not called when there is none).
            apply: takes each later record's payload, in seq order.

        Returns:
            (the snapshot's seq or 0, the number of records applied).

        Raises:
            JournalCorrupt: a segment changed on disk since ``open()``.
            Whatever ``load`` and ``apply`` raise.
        """
        after = 0
        latest = self.latest_snapshot(stream)
        if latest is not None:
            after, data = latest
            load(data)
        applied = 0
        for _, _, payload in self.replay(after, {stream}):
            apply(payload)
            applied += 1
        return after, applied

    def replay(
        self, after_seq: int = 0, streams: Collection[str] | None = None
    ) -> Iterator[tuple[int, str, bytes]]:
        """The records after ``after_seq``, in seq order.

        Args:
            after_seq: skip records up to and including this seq (a snapshot's).
            streams: only these streams (all when None).

        Returns:
            An iterator of ``(seq, stream, payload)``; it reads one segment at
            a time and checks every record's crc again.

        Raises:
            JournalClosed: the journal is not open.
            JournalCorrupt: a segment changed on disk since ``open()``.
        """
        self.writer.check_open()
        wanted = None if streams is None else frozenset(streams)
        return read_records(self.files.infos(), after_seq, wanted)

    def register(self, stream: str, state: Callable[[], bytes]) -> None:
        """Checkpoint ``stream`` with ``state()`` periodically and when the journal closes.

        ``state`` is called in the Trio thread, with no await between the
        call and reading ``last_seq``: the state it returns must include
        every record of the stream appended so far, which holds for a
        plugin that appends a command before it next awaits (or whose
        records are idempotent). Periodic: after ``checkpoint_records``
        records or ``checkpoint_bytes`` bytes. At close: if the journal has
        not failed and every record appended was written.

        Raises:
            ValueError: a bad stream name.
        """
        check_stream(stream)
        self._states[stream] = state

    def written(self, last: int, total_bytes: int) -> None:
        """A batch up to ``last`` was written, ``total_bytes`` since open: checkpoint if due."""
        if self._states and (last >= self._next_seq or total_bytes >= self._next_bytes):
            self._due.set()

    async def checkpoint(self, stream: str, state: Callable[[], bytes]) -> Path | None:
        """Snapshot one stream's state as of ``last_seq``, then compact.

        A snapshot the disk refuses (ENOSPC) is not an error: the previous
        one stands, and so do the segments it needs.

        Returns:
            The snapshot's path, or None if it could not be written (logged).
        """
        async with self._lock:
            seq = self.writer.last_seq
            path = await self._snapshot_state(stream, state)
            await self._compact()
        if path is not None:
            self._checkpointed(seq)
        return path

    def _checkpointed(self, seq: int) -> None:
        self.checkpoints += 1
        self.last_seq = seq
        self.last_time = time.time()

    async def _snapshot_state(self, stream: str, state: Callable[[], bytes]) -> Path | None:
        # Taken together, with no await between (see ``register``).
        seq, data = self.writer.last_seq, state()
        try:
            await self.writer.sync()
            path = await trio.to_thread.run_sync(self._store, stream, seq, data)
        except (JournalError, OSError) as exc:
            self.failures += 1
            log.warning(
                "journal %s: snapshot of %s at seq %d not written (%s); the previous one stands",
                self.directory,
                stream,
                seq,
                exc,
            )
            return None
        return path

    async def _checkpoint_all(self) -> bool:
        """Snapshot every registered stream, then compact; False if a snapshot failed."""
        async with self._lock:
            seq, written = self.writer.last_seq, self.writer.bytes_written
            ok = True
            for stream, state in list(self._states.items()):
                if await self._snapshot_state(stream, state) is None:
                    ok = False
            await self._compact()
        if ok:
            # Counted once every stream's snapshot is on disk, at the seq all
            # of them cover.
            self._checkpointed(seq)
            self._next_seq = seq + self.checkpoint_records
            self._next_bytes = written + self.checkpoint_bytes
        return ok

    async def run(self) -> None:
        """Checkpoint every registered stream whenever ``written`` finds one due."""
        while True:
            await self._due.wait()
            self._due = trio.Event()
            if not await self._checkpoint_all():
                # Most likely a full disk: try again once the probe had a go.
                await trio.sleep(self.retry_interval)
                self._due.set()

    def final(self) -> None:
        """At close: snapshot every registered stream and compact, if that is safe.

        Not after a failure, and not while a record appended (and applied
        by its plugin) is unwritten: a snapshot would claim it.
        """
        if not self._states:
            return
        writer = self.writer
        if writer.failed is not None or not writer.all_written:
            log.warning(
                "journal %s: no snapshot at close (%s)",
                self.directory,
                writer.failed or "records appended but not written",
            )
            return
        seq = writer.last_seq
        for stream, state in self._states.items():
            try:
                self._store(stream, seq, state())
            except Exception as exc:
                log.warning(
                    "journal %s: no snapshot of %s at close: %s", self.directory, stream, exc
                )
        try:
            self.files.compact_now()
        except OSError as exc:
            log.warning("journal %s: compaction at close stopped: %s", self.directory, exc)
