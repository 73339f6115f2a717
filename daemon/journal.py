"""The daemon's write-ahead journal: one per data directory, shared by every stateful plugin.

A plugin (orders, payments) appends its commands as records on its own
*stream* (``"orders"``, ``"payments"``): a payload of bytes (its own msgpack)
that gets a global, gapless sequence number. On start-up it rebuilds its
state with ``restore`` (its latest snapshot, then the records after it) and
``register``s a state getter so that the journal checkpoints it.

``Journal`` is a facade over parts, each a module with one job, lower ones
never importing higher ones:

- ``journal_format``: the bytes on disk, and reading them back (``inspect``,
  ``read_records``): what is a torn tail and what is corruption.
- ``journal_segments``: the open directory's files: the lock, segments made,
  preallocated, written, rotated, the spare, compaction's list.
- ``journal_space``: whether new commands are admitted (room, the reserve,
  a failure), and the probe that retries what a full disk refused.
- ``journal_writer``: seqs, batches, group commit, the fsync policies (their
  durability table), held batches, failure.
- ``journal_checkpoints``: the snapshot store, checkpoints (a snapshot, then
  compaction), ``restore``, ``register``, the periodic and final checkpoints.

Counters for metrics: ``bytes_written``, ``batches_written``, ``fsyncs``,
``disk_bytes``, ``segment_count``, ``checkpoints``, ``checkpoint_failures``,
``last_checkpoint_seq``, ``last_checkpoint_time``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Collection, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from .journal_checkpoints import Checkpoints
from .journal_format import (
    JournalCorrupt,
    JournalError,
    JournalReport,
    Position,
    SegmentInfo,
    SnapshotInfo,
    TailCut,
    inspect,
    read_records,
    read_span,
)
from .journal_segments import SegmentFiles, in_use, lock_directory
from .journal_space import Availability, JournalUnavailable
from .journal_writer import FSYNC_POLICIES, Bytes, FsyncPolicy, JournalClosed, Writer
from .latency import Recorder

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "FsyncPolicy",
    "Journal",
    "JournalClosed",
    "JournalCorrupt",
    "JournalError",
    "JournalReport",
    "JournalUnavailable",
    "SegmentInfo",
    "SnapshotInfo",
    "TailCut",
    "describe",
    "in_use",
    "inspect",
    "open_daemon_journal",
    "read_records",
]

if TYPE_CHECKING:
    from .settings import JournalSettings

log = logging.getLogger("sprintd.journal")

# Large enough that rotation (an fsync of the old file and of the directory)
# is rare, small enough that compaction frees space in useful steps and that
# a scan reads one segment into memory at a time.
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
# Below this a segment would rotate every few batches.
MIN_SEGMENT_BYTES = 4096
# Checkpoint (snapshot every registered stream, then compact) after this many
# records or bytes written: a restart replays at most about this much, and
# the directory holds about twice it (compaction keeps the records after the
# older of the two snapshots kept).
DEFAULT_CHECKPOINT_RECORDS = 100_000
DEFAULT_CHECKPOINT_BYTES = DEFAULT_SEGMENT_BYTES
# Writes are refused while the file system has less free than this, besides
# the journal's own preallocated segments: room for the snapshots that let
# compaction free space, and a margin before the disk is full.
DEFAULT_RESERVE_BYTES = 64 * 1024 * 1024
# How often the journal retries what a full disk refused (the next segment's
# preallocation, a held batch, a snapshot) and reads the free space; also the
# Retry-After it suggests.
DEFAULT_PROBE_INTERVAL_S = 1.0
# What a tailing reader reads per step: large enough for a batch of thousands
# of records, small enough that a reader far behind holds little in memory.
SPAN_BYTES = 4 * 1024 * 1024


class Journal:
    """An append-only, checksummed, segmented write-ahead log with snapshots.

    Lifecycle: ``open()`` (sync: scan, cut a torn tail) -> ``restore()`` (or
    ``replay()`` and ``latest_snapshot()``) to rebuild state -> ``run()`` as a
    background task while the daemon serves, ``append()`` from any task ->
    ``close()`` once ``run()`` has returned. Everything but the snapshot file
    I/O of ``snapshot()`` happens in the Trio thread; the journal is not
    thread-safe.

    One process at a time: ``open()`` takes an exclusive ``flock`` on the
    directory's ``LOCK`` file.
    """

    # The order path's calls are the parts' own bound methods, not wrappers:
    # a wrapper would add a coroutine frame to every record (to every batch
    # for ``run``, the writer's task).
    run: Callable[[], Coroutine[Any, Any, None]]
    append: Callable[[str, Bytes], Coroutine[Any, Any, int]]
    append_many: Callable[[str, Iterable[Bytes]], Coroutine[Any, Any, range]]
    admit: Callable[[], None]

    def __init__(
        self,
        directory: Path | str,
        *,
        fsync: FsyncPolicy = "interval",
        fsync_interval_ms: float = 10.0,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        checkpoint_records: int = DEFAULT_CHECKPOINT_RECORDS,
        checkpoint_bytes: int = DEFAULT_CHECKPOINT_BYTES,
        reserve_bytes: int = DEFAULT_RESERVE_BYTES,
        probe_interval: float = DEFAULT_PROBE_INTERVAL_S,
    ) -> None:
        """
        Args:
            directory: the journal directory, made if missing (``<data_dir>/journal``).
            fsync: ``always``, ``interval`` or ``os`` (see ``journal_writer``'s table).
            fsync_interval_ms: the period of background fsyncs under ``interval``.
            segment_bytes: a segment is closed and a new one started when the next
                batch would take it past this size (a batch never spans two);
                each segment is preallocated to it.
            checkpoint_records: checkpoint the registered streams after this many
                records written since the last checkpoint...
            checkpoint_bytes: ...or this many bytes.
            reserve_bytes: refuse new commands while the file system has less free.
            probe_interval: seconds between retries of what a full disk refused.

        Raises:
            ValueError: an unknown policy, a non-positive interval, a tiny segment size.
        """
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync = {fsync!r}: expected one of {', '.join(FSYNC_POLICIES)}")
        if not (fsync_interval_ms > 0 and math.isfinite(fsync_interval_ms)):
            raise ValueError(f"fsync_interval_ms = {fsync_interval_ms!r}: expected > 0")
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes = {segment_bytes}: expected >= {MIN_SEGMENT_BYTES}")
        if not (probe_interval > 0 and math.isfinite(probe_interval)):
            raise ValueError(f"probe_interval = {probe_interval!r}: expected > 0")
        if checkpoint_records < 1 or checkpoint_bytes < 1 or reserve_bytes < 0:
            raise ValueError("checkpoint_records and checkpoint_bytes >= 1, reserve_bytes >= 0")
        self.directory = Path(directory)
        self.policy: FsyncPolicy = fsync
        self.fsync_interval = fsync_interval_ms / 1000.0
        self.segment_bytes = segment_bytes
        self.checkpoint_records = checkpoint_records
        self.checkpoint_bytes = checkpoint_bytes
        self.reserve_bytes = reserve_bytes
        self.probe_interval = probe_interval
        self.report: JournalReport | None = None
        self._lock_fd = -1
        self._closed = False
        self._files = SegmentFiles(self.directory, segment_bytes)
        self._space = Availability(
            self._files, reserve_bytes=reserve_bytes, probe_interval=probe_interval
        )
        self._writer = Writer(
            self._files, self._space, policy=fsync, fsync_interval=self.fsync_interval
        )
        self._checkpoints = Checkpoints(
            self._writer,
            checkpoint_records=checkpoint_records,
            checkpoint_bytes=checkpoint_bytes,
            retry_interval=probe_interval,
        )
        self._writer.on_written = self._checkpoints.written
        self._writer.background += [self._space.probe, self._checkpoints.run]
        self.run = self._writer.run
        self.append = self._writer.append
        self.append_many = self._writer.append_many
        self.admit = self._space.admit
        #: Called (no arguments) whenever ``unavailable`` changes.
        self.on_availability: list[Callable[[], None]] = self._space.on_availability

    # --- state --------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the last record appended (acknowledged or not); 0 if none."""
        return self._writer.last_seq

    @property
    def written_seq(self) -> int:
        """Records up to here are in the kernel: a process crash keeps them."""
        return self._writer.written_seq

    @property
    def synced_seq(self) -> int:
        """Records up to here are fsynced: a power loss keeps them."""
        return self._writer.synced_seq

    @property
    def acknowledged_seq(self) -> int:
        """Records up to here are acknowledged, or will be: what the fsync policy
        makes durable before ``append`` returns (``synced_seq`` under ``always``,
        ``written_seq`` otherwise). A reader that tails the journal (a projector)
        reads no further, so it never holds a record that a crash could take back.
        """
        return self._writer.synced_seq if self.policy == "always" else self._writer.written_seq

    @property
    def failed(self) -> BaseException | None:
        """The write or fsync error that failed the journal, if any."""
        return self._writer.failed

    @property
    def unavailable(self) -> str | None:
        """Why new commands are refused now, or None: see ``journal_space``."""
        return self._space.unavailable

    @property
    def writable(self) -> bool:
        """Whether new commands may be admitted (``unavailable`` says why not)."""
        return self._space.unavailable is None

    def segments(self) -> list[SegmentInfo]:
        """The segments as they stand now, oldest first."""
        return self._files.infos()

    @property
    def segment_count(self) -> int:
        return len(self._files.segments)

    @property
    def disk_bytes(self) -> int:
        """Bytes of the journal's files: segments (preallocation included), spare, snapshots."""
        return self._files.disk_bytes + self._checkpoints.disk_bytes

    @property
    def batches_written(self) -> int:
        """Batches written so far: with ``fsyncs``, how well group commit batches."""
        return self._writer.batches_written

    @property
    def fsyncs(self) -> int:
        """Fsyncs of the active segment made so far."""
        return self._writer.fsyncs

    @property
    def bytes_written(self) -> int:
        """Record bytes written since open."""
        return self._writer.bytes_written

    @property
    def records_written(self) -> int:
        """Records written since open."""
        return self._writer.records_written

    @property
    def batch_records(self) -> Recorder:
        """Records per batch written since open, one sample a batch."""
        return self._writer.batch_records

    @property
    def fsync_latency(self) -> Recorder:
        """Fsyncs of the active segment since open, in ns (``fsyncs`` of them)."""
        return self._writer.fsync_latency

    @property
    def checkpoints(self) -> int:
        """Checkpoints written so far."""
        return self._checkpoints.checkpoints

    @property
    def checkpoint_failures(self) -> int:
        """Snapshots the disk refused (each retried)."""
        return self._checkpoints.failures

    @property
    def last_checkpoint_seq(self) -> int:
        """The seq the last checkpoint covers (at open: the oldest kept snapshot's)."""
        return self._checkpoints.last_seq

    @property
    def last_checkpoint_time(self) -> float | None:
        """The wall time of the last checkpoint written since open, if any."""
        return self._checkpoints.last_time

    # --- the lifecycle ------------------------------------------------------------

    def open(self) -> JournalReport:
        """Lock the directory, scan every segment, cut a torn tail, open for appending.

        Blocking (it reads every segment once): call it at start-up, before
        serving.

        Returns:
            The scan's report; ``report.cut`` says what was cut and where.

        Raises:
            JournalCorrupt: damage that is not a torn tail; nothing was changed.
            JournalError: another process has the journal open, or another format.
            OSError: the directory or a file cannot be read or written.
        """
        if self._lock_fd >= 0 or self._closed:
            raise JournalError(f"journal {self.directory}: open() once per Journal")
        lock_fd = lock_directory(self.directory)
        try:
            report = inspect(self.directory)
            if report.cut is not None:
                self._files.cut(report.cut)
            self._checkpoints.remove_tmp()
            self._files.load(report)
        except BaseException:
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        self._writer.opened(report.next_seq)
        # With the disk full none of this can be had: the journal opens all
        # the same (replay only reads) and refuses commands until the probe
        # in run() gets the room.
        self._space.make_room()
        self._checkpoints.opened(report)
        self.report = report
        return report

    async def sync(self) -> int:
        """Write and fsync everything appended so far, whatever the policy (``Writer.sync``)."""
        return await self._writer.sync()

    def close(self) -> None:
        """Write what is pending, fsync, take the final checkpoints, release the lock.

        Call it after ``run()`` has returned; closing twice is harmless. A
        final write that fails fails the journal (logged) rather than raise:
        the daemon is stopping either way.

        Raises:
            RuntimeError: ``run()`` is still running.
        """
        if self._closed:
            return
        if self._writer.running:
            raise RuntimeError(f"journal {self.directory}: close() while run() is running")
        self._closed = True
        self._writer.closed()
        try:
            if self._lock_fd >= 0:
                self._writer.flush_now()
                self._checkpoints.final()
        finally:
            self._files.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    # --- reading, snapshots and checkpoints (``journal_checkpoints``) ----------------

    def replay(
        self, after_seq: int = 0, streams: Collection[str] | None = None
    ) -> Iterator[tuple[int, str, bytes]]:
        """The records after ``after_seq``, in seq order (``Checkpoints.replay``)."""
        return self._checkpoints.replay(after_seq, streams)

    def restore(
        self, stream: str, load: Callable[[bytes], None], apply: Callable[[bytes], object]
    ) -> tuple[int, int]:
        """Rebuild a stream's state at start-up (``Checkpoints.restore``)."""
        return self._checkpoints.restore(stream, load, apply)

    def register(self, stream: str, state: Callable[[], bytes]) -> None:
        """Checkpoint ``stream`` periodically and at close (``Checkpoints.register``)."""
        self._checkpoints.register(stream, state)

    async def checkpoint(self, stream: str, state: Callable[[], bytes]) -> Path | None:
        """Snapshot one stream's state, then compact (``Checkpoints.checkpoint``)."""
        return await self._checkpoints.checkpoint(stream, state)

    def write_snapshot(self, stream: str, seq: int, data: bytes) -> Path:
        """Store a stream's state as of ``seq``, blocking (``Checkpoints.write_snapshot``)."""
        return self._checkpoints.write_snapshot(stream, seq, data)

    async def snapshot(self, stream: str, seq: int, data: bytes) -> Path:
        """``write_snapshot`` without blocking the loop (``Checkpoints.snapshot``)."""
        return await self._checkpoints.snapshot(stream, seq, data)

    def latest_snapshot(self, stream: str) -> tuple[int, bytes] | None:
        """The newest snapshot of ``stream`` that verifies (``Checkpoints.latest_snapshot``)."""
        return self._checkpoints.latest_snapshot(stream)

    def compact(self) -> list[Path]:
        """Delete the oldest segments no stream needs, blocking (``Checkpoints.compact``)."""
        return self._checkpoints.compact()

    def hold(self, name: str, seq: int) -> None:
        """Keep every record after ``seq`` through compaction until ``release(name)``.

        For a reader that tails the journal on its own schedule (the history
        projector): it holds at the seq it can resume from, and moves the hold
        on as it goes. Holds live in the process: a reader sets its own before
        the journal's first checkpoint, in ``sprintd_configure``.
        """
        self._files.holds[name] = seq

    async def read_after(
        self,
        after_seq: int,
        position: Position | None,
        max_bytes: int = SPAN_BYTES,
        until_seq: int | None = None,
        max_records: int | None = None,
    ) -> tuple[list[tuple[int, str, bytes]], Position | None]:
        """The next acknowledged records after ``after_seq``, read in a thread.

        A tailing reader's step (``journal_format.read_span``): about
        ``max_bytes`` from one segment, at most ``max_records``, up to
        ``acknowledged_seq`` (or ``until_seq`` if lower). Pass back the position it returns. The
        reader's ``hold`` must keep the records after ``after_seq``, or a
        compaction may take them away meanwhile.

        Returns:
            ``(records, position)``; no records when none is there yet.

        Raises:
            JournalCorrupt: a segment changed since it was scanned.
            OSError: a segment cannot be read (one compacted away without a hold).
        """
        until = (
            self.acknowledged_seq if until_seq is None else min(until_seq, self.acknowledged_seq)
        )
        return await trio.to_thread.run_sync(
            read_span, self._files.infos(), after_seq, until, position, max_bytes, max_records
        )

    def release(self, name: str) -> None:
        """Drop a hold (``hold``); releasing one that is not held is harmless."""
        self._files.holds.pop(name, None)


def open_daemon_journal(data_dir: Path, settings: JournalSettings) -> Journal:
    """The daemon's journal for ``data_dir``, opened, its report logged.

    Raises:
        JournalError: as ``Journal.open``.
        OSError: as ``Journal.open``.
    """
    journal = Journal(
        data_dir / "journal",
        fsync=settings.fsync,
        fsync_interval_ms=settings.fsync_interval_ms,
        segment_bytes=settings.segment_bytes,
        checkpoint_records=settings.checkpoint_records,
        checkpoint_bytes=settings.checkpoint_bytes,
        reserve_bytes=settings.reserve_bytes,
        probe_interval=settings.probe_interval_ms / 1000.0,
    )
    report = journal.open()
    log.info(
        "journal %s: %d records in %d segments, seq %d..%d, fsync %s",
        journal.directory,
        report.records,
        len(report.segments),
        report.first_seq,
        report.last_seq,
        journal.policy,
    )
    if report.cut is not None:
        log.warning("journal %s: cut a torn tail: %s", journal.directory, report.cut.describe())
    if journal.unavailable is not None:
        log.warning("journal %s: not writable: %s", journal.directory, journal.unavailable)
    return journal


def describe(report: JournalReport, policy: str | None = None) -> Sequence[str]:
    """A one-screen summary of a scan, as ``sprintd journal verify`` prints it.

    Args:
        report: what ``inspect`` (or ``Journal.open``) found.
        policy: the configured fsync policy, shown if given.

    Returns:
        The lines, without newlines.
    """
    lines = [f"journal    {report.directory}"]
    if policy is not None:
        lines.append(f"policy     {policy}")
    segments = report.segments
    if not segments and report.cut is None:
        lines.append("segments   none (no journal yet)")
    else:
        total = sum(s.end for s in segments)
        span = f"{segments[0].path.name} .. {segments[-1].path.name}" if segments else "-"
        lines.append(f"segments   {len(segments)}  ({span}, {total} bytes that verify)")
    if report.records:
        lines.append(f"records    {report.records}  seq {report.first_seq}..{report.last_seq}")
    else:
        lines.append(f"records    0  (next seq {report.next_seq})")
    for stream, count in report.streams.items():
        lines.append(f"  {stream:<20} {count}")
    if not report.snapshots:
        lines.append("snapshots  none")
    else:
        lines.append("snapshots")
        for stream, infos in report.snapshots.items():
            shown = ", ".join(
                f"seq {i.seq} ({i.size} bytes{', ' + i.problem if i.problem else ''})"
                for i in infos
            )
            lines.append(f"  {stream:<20} {shown}")
    if report.cut is None:
        lines.append("tail       clean")
    else:
        lines.append(f"tail       TORN: open() would cut {report.cut.describe()}")
    return lines
