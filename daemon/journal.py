"""The daemon's write-ahead journal: one per data directory, shared by every stateful plugin.

A plugin (orders, payments) appends its commands as records on its own
*stream* (``"orders"``, ``"payments"``): a payload of bytes (its own msgpack)
that gets a global, gapless sequence number. On start-up it loads its latest
snapshot and replays the records after it. The file format, and what counts
as a torn tail or as corruption, is in ``journal_format``.

Strategy: appenders never touch the file. ``append`` packs its record into
the pending batch (struct packing and a crc32, in the loop) and waits; the
writer task, started by ``run()``, takes everything pending as one batch,
writes it with one ``write()`` (a page-cache copy, done in the loop) and, when
the policy asks, fsyncs it with one ``fsync()`` in a worker thread. Whatever
arrives while that fsync runs becomes the next batch: that is group commit,
and it is why a thousand concurrent appenders cost a few fsyncs, not a
thousand.

Durability: ``[journal] fsync`` (set by the tier) decides when ``append``
returns, and so what a crash can take away from records already acknowledged
(an acknowledged record is one whose ``append`` has returned):

============  ========================  ===============  ==============================
policy        ``append`` returns after  process crash    power loss (or kernel panic)
============  ========================  ===============  ==============================
``always``    its batch's fsync()       nothing          nothing
``interval``  its batch's write()       nothing          up to ``fsync_interval_ms`` of
                                                         records (plus one fsync's time)
``os``        its batch's write()       nothing          what the kernel had not yet
                                                         written back (Linux: ~30 s)
============  ========================  ===============  ==============================

A process crash loses nothing acknowledged under any policy because the data
is in the kernel's page cache once ``write()`` returns. Under ``interval`` a
background task fsyncs once per interval while there is unsynced data. Under
``os`` nothing is fsynced until ``sync()``, a snapshot, or ``close()``; a power
loss can also leave a file system with a hole before written-back data, which
``open()`` refuses (corruption) rather than skip. Tiers: free ``os``, pro and
business ``interval`` 10 ms, turbo ``interval`` 1 ms, enterprise ``always``.

Cancellation: ``append`` checks for cancellation before it queues its record.
Once queued, the record will be written; if the caller is cancelled while it
waits, ``Cancelled`` is raised and the record may or may not reach the disk
(and be replayed): it was not acknowledged. The same holds for a failed write:
``JournalError`` means "not acknowledged", not "not written".

Space, decided: plugins apply a command to their state and then append it,
so a record that could not be written for want of space would leave state
the journal does not hold. That is avoided by construction. Every segment is
preallocated (``posix_fallocate``) to ``segment_bytes`` when it is made, and
the next one is held ahead, preallocated, as ``SPARE``: records are written
(``pwrite`` at the segment's end) into blocks the journal already owns. A
plugin asks ``admit()`` (or reads ``unavailable``) *before* it applies a
command; the journal refuses (``JournalUnavailable``, with ``retry_after``)
when it could not preallocate the next segment, when the file system has less
than ``reserve_bytes`` free (room for snapshots, and a margin), or when it
failed. A background probe (``run()``, every ``probe_interval`` on Trio's
clock) retries the preallocation and reads the free space with ``statvfs``,
so writes resume by themselves when space returns. Should a batch still find
no room (a plugin that does not ask), it is held, not failed: its appends
wait, unacknowledged, and it is written when room comes back. The zeros of a
preallocated segment are a clean end to the reader (``journal_format``).
``open()`` needs no space (replay only reads): on a full disk the daemon
starts, not ready, and does not crash-loop.

Checkpoints: ``restore(stream, load, apply)`` rebuilds a plugin's state at
start-up; ``register(stream, state)`` has the journal checkpoint it after
``checkpoint_records`` records or ``checkpoint_bytes`` bytes (in the
background, no request waits) and at ``close()``: a snapshot of every
registered stream, then compaction of the segments no stream needs. The data
directory thus stays about the state (two snapshots) plus two checkpoint
intervals of records plus the active and spare segments, whatever the uptime.
A snapshot the disk refuses keeps the previous one and is retried.

Failure: a write or fsync error other than "no space" fails every waiting
append with ``JournalError``, makes every later one fail the same way and
``unavailable`` say why; ``run()`` returns (it does not raise), so the daemon
goes on serving reads while its readiness fails. After a failed fsync the
kernel may have dropped the dirty pages, so there is no safe retry in the
same process; restarting reopens the journal and cuts whatever is
incomplete. ``close()`` writes no snapshot after a failure, nor while a
record appended (and so applied) is unwritten: it would claim it.

Counters for metrics: ``bytes_written``, ``batches_written``, ``fsyncs``,
``disk_bytes``, ``segment_count``, ``checkpoints``, ``checkpoint_failures``,
``last_checkpoint_seq``, ``last_checkpoint_time``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import math
import os
import time
import zlib
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from .journal_format import (
    CRC,
    KEEP_SNAPSHOTS,
    LENGTH_SEQ,
    LOCK_FILE,
    MAX_PAYLOAD,
    SEGMENT_HEADER,
    SNAPSHOT_DIR,
    SPARE_FILE,
    JournalCorrupt,
    JournalError,
    JournalReport,
    SegmentInfo,
    SnapshotInfo,
    TailCut,
    check_stream,
    decode_snapshot,
    encode_snapshot,
    inspect,
    read_records,
    segment_header,
    segment_name,
    snapshot_files,
    snapshot_name,
)

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

FsyncPolicy = Literal["always", "interval", "os"]
# What a payload may be; it is copied to bytes unless it is bytes already.
Bytes = bytes | bytearray | memoryview
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval", "os")
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
# Errors that mean "no room now", which the journal waits out; any other
# write or fsync error fails it.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class JournalClosed(JournalError):
    """The journal is closed (or was never opened)."""


class JournalUnavailable(JournalError):
    """The journal cannot take new commands now: refuse them before applying them.

    ``retry_after``: seconds after which asking again may succeed.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def _no_space(exc: OSError) -> bool:
    return exc.errno in NO_SPACE_ERRNOS


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _preallocate(fd: int, size: int) -> None:
    """Allocate the file's blocks up to ``size`` (zeros), so writes there cannot run out.

    Raises:
        OSError: ENOSPC (some blocks may be allocated: calling again finishes).
    """
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
        # A file system without fallocate: zeros, written for real.
        have = os.fstat(fd).st_size
        while have < size:
            have += os.pwrite(fd, bytes(min(size - have, 1 << 20)), have)


def _unlink_all(paths: Sequence[Path], directory: Path) -> None:
    for path in paths:
        path.unlink()
    _fsync_dir(directory)


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir_durable(path: Path) -> None:
    """Make ``path`` (and missing parents), each new entry fsynced into its parent."""
    if path.is_dir():
        return
    _mkdir_durable(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    _fsync_dir(path.parent)


@dataclass
class _Segment:
    """The writer's view of a segment: mutable, unlike ``SegmentInfo``."""

    path: Path
    base_seq: int
    last_seq: int
    records: int
    end: int
    # Records per stream.
    streams: dict[str, int] = field(default_factory=dict)
    # The file's size: its preallocation, or ``end`` if it grew past it.
    size: int = 0

    def info(self) -> SegmentInfo:
        return SegmentInfo(
            self.path,
            self.base_seq,
            self.last_seq,
            self.records,
            self.end,
            max(self.size, self.end),
            dict(self.streams),
        )


class _Batch:
    """Records that share one write (and fsync), and the tasks waiting for them.

    The waiters park with ``wait_task_rescheduled`` rather than on a
    ``trio.Event``: a ParkingLot's bookkeeping costs a third of an append.
    """

    __slots__ = ("done", "error", "gone", "tasks")

    def __init__(self) -> None:
        self.tasks: list[Task] = []
        self.done = False
        self.error: BaseException | None = None
        # Waiters cancelled before the batch finished, per task.
        self.gone: dict[Task, int] | None = None

    async def wait(self) -> None:
        """Park the current task until ``finish``; cancellable (the record stays queued)."""
        task = current_task()
        self.tasks.append(task)
        await wait_task_rescheduled(lambda _: self.abort(task))

    def abort(self, task: Task) -> Abort:
        # A task waits on one append at a time, so its entries before the
        # last are appends cancelled earlier: counting per task is enough.
        gone = self.gone = self.gone or {}
        gone[task] = gone.get(task, 0) + 1
        return Abort.SUCCEEDED

    def finish(self, error: BaseException | None = None) -> None:
        """Wake every waiter; each then reads ``error``."""
        if self.done:
            return
        self.done = True
        self.error = error
        gone = self.gone
        for task in self.tasks:
            if gone and gone.get(task):
                gone[task] -= 1
                continue
            reschedule(task)
        self.tasks = []


class Journal:
    """An append-only, checksummed, segmented write-ahead log with snapshots.

    Lifecycle: ``open()`` (sync: scan, cut a torn tail) -> ``replay()`` and
    ``latest_snapshot()`` to rebuild state -> ``run()`` as a background task
    while the daemon serves, ``append()`` from any task -> ``close()`` once
    ``run()`` has returned. Everything but the snapshot file I/O of
    ``snapshot()`` happens in the Trio thread; the journal is not thread-safe.

    One process at a time: ``open()`` takes an exclusive ``flock`` on the
    directory's ``LOCK`` file.
    """

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
            fsync: ``always``, ``interval`` or ``os`` (see the module's table).
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
        self._fd = -1
        self._segments: list[_Segment] = []
        self._closed = False
        self._failed: BaseException | None = None
        # Open, not closed, not failed, run() not stopped: the one check an
        # append makes.
        self._usable = False
        self._running = False
        self._stopped = False
        # Sequence numbers: assigned (next - 1) >= written >= synced.
        self._next_seq = 1
        self._written_seq = 0
        self._synced_seq = 0
        self._synced = trio.Event()
        self._sync_target = 0
        # The pending batch: packed records, the streams in it, its waiters.
        self._chunks: list[bytes] = []
        self._batch_first = 0
        self._batch_streams: dict[str, int] = {}
        self._batch = _Batch()
        self._inflight: _Batch | None = None
        # Stream name -> its bytes in a record, checked once.
        self._names: dict[str, bytes] = {}
        self._work = trio.Event()
        self._writer_idle = False
        self._dirty: trio.Event | None = None
        # A batch taken but not written for want of space: written first,
        # as soon as there is room (its waiters wait; nothing is dropped).
        self._held: tuple[bytes, _Batch, int, int, dict[str, int]] | None = None
        self._space_error: str | None = None
        # The next segment, preallocated: what makes every admitted command
        # writable. Its size, 0 while it cannot be had (and why not).
        self._spare_size = 0
        self._room_error: str | None = "not opened"
        self._spare_wanted = trio.Event()
        self._free_bytes: int | None = None
        #: Why new commands are refused now, or None: see ``admit``.
        self.unavailable: str | None = None
        #: Called (no arguments) whenever ``unavailable`` changes.
        self.on_availability: list[Callable[[], None]] = []
        # Registered streams' state getters, checkpointed together.
        self._states: dict[str, Callable[[], bytes]] = {}
        self._checkpoint_due = trio.Event()
        self._checkpoint_lock = trio.Lock()
        self._next_checkpoint_seq = 0
        self._next_checkpoint_bytes = 0
        #: Batches written and fsyncs of the active segment made so far: how
        #: well group commit batches (records per batch, per fsync).
        self.batches_written = 0
        self.fsyncs = 0
        #: Record bytes written since open (for checkpoints and metrics).
        self.bytes_written = 0
        #: Checkpoints done and failed (a snapshot the disk refused), the seq
        #: and wall time of the last one that was written.
        self.checkpoints = 0
        self.checkpoint_failures = 0
        self.last_checkpoint_seq = 0
        self.last_checkpoint_time: float | None = None

    # --- state --------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the last record appended (acknowledged or not); 0 if none."""
        return self._next_seq - 1

    @property
    def written_seq(self) -> int:
        """Records up to here are in the kernel: a process crash keeps them."""
        return self._written_seq

    @property
    def synced_seq(self) -> int:
        """Records up to here are fsynced: a power loss keeps them."""
        return self._synced_seq

    @property
    def failed(self) -> BaseException | None:
        """The write or fsync error that failed the journal, if any."""
        return self._failed

    def segments(self) -> list[SegmentInfo]:
        """The segments as they stand now, oldest first."""
        return [segment.info() for segment in self._segments]

    @property
    def writable(self) -> bool:
        """Whether new commands may be admitted (``unavailable`` says why not)."""
        return self.unavailable is None

    def admit(self) -> None:
        """Refuse a new command, before it is applied, while the journal cannot take it.

        A plugin calls this (or reads ``unavailable``) before it changes its
        state for a command: an admitted command's record is guaranteed
        room (the active segment's preallocation, and the next segment held
        ahead), so it cannot be applied and then fail to be written for
        want of space.

        Raises:
            JournalUnavailable: with the reason and ``retry_after``.
        """
        if self.unavailable is not None:
            # A new exception each time: raising one instance again would
            # grow its traceback with every refusal.
            raise JournalUnavailable(self.unavailable, self.probe_interval)

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    @property
    def disk_bytes(self) -> int:
        """Bytes of the journal's files: segments (preallocation included), spare, snapshots."""
        total = sum(max(s.size, s.end) for s in self._segments) + self._spare_size
        for path in (self.directory / SNAPSHOT_DIR).glob("*/*"):
            with contextlib.suppress(FileNotFoundError):
                total += path.stat().st_size
        return total

    def _refresh(self) -> None:
        """Recompute ``unavailable`` from what the writer and the probe know."""
        if self._failed is not None:
            reason = f"journal failed: {self._failed}; restart the daemon once the cause is fixed"
        elif self._space_error is not None:
            reason = f"no space to write the journal: {self._space_error}"
        elif self._room_error is not None:
            reason = (
                f"cannot preallocate journal segments ({self.segment_bytes} bytes each): "
                f"{self._room_error}"
            )
        elif self._free_bytes is not None and self._free_bytes < self.reserve_bytes:
            reason = (
                f"{self._free_bytes} bytes free on the journal's file system, less than "
                f"journal.reserve_bytes ({self.reserve_bytes})"
            )
        else:
            reason = None
        if reason == self.unavailable:
            return
        if reason is None:
            log.info("journal %s: writable again", self.directory)
        elif self.unavailable is None:
            log.warning("journal %s: refusing new commands: %s", self.directory, reason)
        self.unavailable = reason
        for callback in self.on_availability:
            callback()

    def _check_open(self) -> None:
        if self._closed or self._lock_fd < 0:
            raise JournalClosed(f"journal {self.directory} is not open")
        if self._failed is not None:
            raise JournalError(f"journal {self.directory} failed: {self._failed}") from self._failed

    def _check_usable(self) -> None:
        if self._usable:
            return
        self._check_open()
        if self._stopped:
            raise JournalClosed(f"journal {self.directory}: run() has stopped, nothing is written")

    # --- opening and reading --------------------------------------------------------

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
        _mkdir_durable(self.directory)
        lock_fd = os.open(self.directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise JournalError(
                f"journal {self.directory} is open in another process (its LOCK is held)"
            ) from None
        try:
            report = inspect(self.directory)
            if report.cut is not None:
                self._cut(report.cut)
            self._remove_tmp_snapshots()
            self._segments = [
                _Segment(s.path, s.base_seq, s.last_seq, s.records, s.end, dict(s.streams), s.size)
                for s in report.segments
            ]
            if self._segments:
                active = self._segments[-1]
                self._fd = os.open(active.path, os.O_WRONLY | os.O_CLOEXEC)
                # A process killed under os or interval can leave its last
                # records in the page cache: make them as durable as new ones
                # before a snapshot can rely on them.
                os.fsync(self._fd)
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            os.close(lock_fd)
            raise
        self._lock_fd = lock_fd
        self._usable = True
        self._next_seq = report.next_seq
        self._written_seq = self._synced_seq = report.next_seq - 1
        self._sync_target = self._synced_seq
        with contextlib.suppress(FileNotFoundError):
            size = os.stat(self.directory / SPARE_FILE).st_size
            # A spare cut short (a full disk, a smaller segment_bytes
            # before) is preallocated again: fallocate keeps what is there.
            self._spare_size = size if size >= self.segment_bytes else 0
        # With the disk full none of this can be had: the journal opens all
        # the same (replay only reads) and refuses commands until the probe
        # in run() gets the room.
        wanted = self._room_wanted()
        self._allocated(wanted[0], self._allocate(*wanted))
        floor = min((infos[0].seq for infos in report.snapshots.values()), default=0)
        self._next_checkpoint_seq = max(floor, 0) + self.checkpoint_records
        self._next_checkpoint_bytes = self.checkpoint_bytes
        self.last_checkpoint_seq = floor
        self.report = report
        return report

    def _room_wanted(self) -> tuple[int | None, int | None, bool]:
        """What ``_allocate`` should do now: (first segment's seq, active fd dup, spare)."""
        first = None if self._segments else self._written_seq + 1
        active = None
        if self._segments and self._segments[-1].size < self.segment_bytes:
            active = os.dup(self._fd)
        return first, active, self._spare_size == 0

    def _allocate(
        self, first: int | None, active: int | None, spare: bool
    ) -> tuple[int | None, bool, bool, str | None]:
        """The blocking half of making room; it touches no journal state (a worker thread).

        Args:
            first: make the first segment, at this seq (none could be made before).
            active: a dup of the active segment's fd to preallocate (closed here).
            spare: preallocate the next segment.

        Returns:
            (the first segment's fd or None, active done, spare done, the error or None).
        """
        made: int | None = None
        active_done = spare_done = False
        try:
            if first is not None:
                made = self._create_segment(first)
            if active is not None:
                _preallocate(active, self.segment_bytes)
                active_done = True
            if spare:
                fd = os.open(self.directory / SPARE_FILE, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC)
                try:
                    _preallocate(fd, self.segment_bytes)
                    os.fsync(fd)
                finally:
                    os.close(fd)
                spare_done = True
        except OSError as exc:
            return made, active_done, spare_done, exc.strerror or str(exc)
        finally:
            if active is not None:
                os.close(active)
        return made, active_done, spare_done, None

    def _allocated(
        self, first: int | None, result: tuple[int | None, bool, bool, str | None]
    ) -> None:
        """Take in what ``_allocate`` made, read the free space, recompute availability."""
        made, active_done, spare_done, error = result
        if made is not None and first is not None:
            self._fd = made
            self._segments.append(self._new_segment(first))
        elif active_done:
            self._segments[-1].size = max(self._segments[-1].size, self.segment_bytes)
        if spare_done:
            self._spare_size = self.segment_bytes
        self._room_error = error
        try:
            vfs = os.statvfs(self.directory)
            self._free_bytes = vfs.f_bavail * vfs.f_frsize
        except OSError:
            self._free_bytes = None
        self._refresh()

    def _cut(self, cut: TailCut) -> None:
        for path in cut.removed:
            path.unlink()
        if cut.segment not in cut.removed:
            with open(cut.segment, "r+b") as file:
                file.truncate(cut.offset)
                os.fsync(file.fileno())
        _fsync_dir(self.directory)

    def _remove_tmp_snapshots(self) -> None:
        root = self.directory / SNAPSHOT_DIR
        for tmp in root.glob("*/*.tmp"):
            tmp.unlink(missing_ok=True)

    def _create_segment(self, base_seq: int, spare: bool = False) -> int:
        """A new segment with its header, preallocated, fsynced into the directory; its fd.

        With ``spare`` the preallocated ``SPARE`` becomes the segment (no
        allocation, so it cannot run out of space); otherwise a new file is
        made and preallocated, and removed again if that fails. Touches no
        journal state: it runs in a worker thread on rotation.

        Raises:
            OSError: ENOSPC when a new file cannot be preallocated.
        """
        path = self.directory / segment_name(base_seq)
        if spare:
            fd = os.open(self.directory / SPARE_FILE, os.O_WRONLY | os.O_CLOEXEC)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.pwrite(fd, segment_header(base_seq), 0)
            if not spare:
                _preallocate(fd, self.segment_bytes)
            os.fsync(fd)
            if spare:
                os.replace(self.directory / SPARE_FILE, path)
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            if not spare:
                path.unlink(missing_ok=True)
            raise
        return fd

    def _new_segment(self, base_seq: int) -> _Segment:
        path = self.directory / segment_name(base_seq)
        return _Segment(
            path, base_seq, base_seq - 1, 0, SEGMENT_HEADER.size, size=self.segment_bytes
        )

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
        self._check_open()
        wanted = None if streams is None else frozenset(streams)
        return read_records(self.segments(), after_seq, wanted)

    # --- appending -------------------------------------------------------------------

    def _name(self, stream: str) -> bytes:
        name = self._names[stream] = check_stream(stream)
        return name

    def _wake_writer(self) -> None:
        if self._writer_idle:
            self._writer_idle = False
            self._work.set()

    async def append(self, stream: str, payload: Bytes) -> int:
        """Append one record; return its seq once it is durable per the policy.

        Args:
            stream: the record's stream (a plugin's name), 1-64 of ``[A-Za-z0-9_.-]``.
            payload: the record's bytes (at most ``MAX_PAYLOAD``).

        Returns:
            The record's seq, after its batch's write (``interval``, ``os``) or
            fsync (``always``).

        Raises:
            JournalError: the journal failed; the record is not acknowledged.
            JournalClosed: the journal is not open.
            ValueError: a bad stream name, or a payload too large.
            trio.Cancelled: before the record was queued, or while it waited
                (then it may still be written: see the module's docstring).
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if not self._usable:
            self._check_usable()
        name = self._names.get(stream) or self._name(stream)
        if type(payload) is not bytes:
            payload = bytes(payload)  # a bytearray could change before the write
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes: at most {MAX_PAYLOAD}")
        seq = self._next_seq
        self._next_seq = seq + 1
        head = LENGTH_SEQ.pack(9 + len(name) + len(payload), seq, len(name)) + name
        chunks = self._chunks
        if not chunks:
            self._batch_first = seq
        chunks.append(CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + head)
        chunks.append(payload)
        counts = self._batch_streams
        counts[stream] = counts.get(stream, 0) + 1
        batch = self._batch
        if self._writer_idle:
            self._wake_writer()
        task = current_task()
        batch.tasks.append(task)
        await wait_task_rescheduled(lambda _: batch.abort(task))
        if batch.error is not None:
            raise JournalError(f"seq {seq} not acknowledged: {batch.error}") from batch.error
        return seq

    async def append_many(self, stream: str, payloads: Iterable[Bytes]) -> range:
        """Append records as one batch (one write, at most one fsync); return their seqs.

        Args:
            stream: the records' stream.
            payloads: their bytes, in order; the seqs are consecutive.

        Returns:
            The seqs (``range``), once all of them are durable per the policy.

        Raises:
            Like ``append``; a bad payload raises before any record is queued.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_usable()
        name = self._names.get(stream) or self._name(stream)
        items = [p if type(p) is bytes else bytes(p) for p in payloads]
        for payload in items:
            if len(payload) > MAX_PAYLOAD:
                raise ValueError(f"payload of {len(payload)} bytes: at most {MAX_PAYLOAD}")
        first = seq = self._next_seq
        if not items:
            return range(first, first)
        fixed = 9 + len(name)
        slen = len(name)
        pack_head = LENGTH_SEQ.pack
        pack_crc = CRC.pack
        crc32 = zlib.crc32
        chunks = self._chunks
        if not chunks:
            self._batch_first = first
        append = chunks.append
        for payload in items:
            head = pack_head(fixed + len(payload), seq, slen) + name
            append(pack_crc(crc32(payload, crc32(head))) + head)
            append(payload)
            seq += 1
        self._next_seq = seq
        counts = self._batch_streams
        counts[stream] = counts.get(stream, 0) + len(items)
        batch = self._batch
        self._wake_writer()
        await batch.wait()
        if batch.error is not None:
            raise JournalError(
                f"seqs {first}-{seq - 1} not acknowledged: {batch.error}"
            ) from batch.error
        return range(first, seq)

    async def sync(self) -> int:
        """Write and fsync everything appended so far, whatever the policy.

        Returns:
            The synced seq (at least ``last_seq`` as it was on entry).

        Raises:
            JournalError: the journal failed.
            JournalClosed: the journal is not open.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        target = self._next_seq - 1
        while self._synced_seq < target:
            self._check_usable()
            self._sync_target = max(self._sync_target, target)
            self._wake_writer()
            await self._synced.wait()
        self._check_usable()
        return self._synced_seq

    # --- the writer ---------------------------------------------------------------------

    async def run(self) -> None:
        """Write batches (group commit), keep room ahead, checkpoint; fsync under ``interval``.

        Run it as a background task for as long as anything appends; appends
        wait for it. When cancelled, it writes and fsyncs what is pending
        (blocking the loop for one fsync) and answers every waiting append
        before it returns.

        A full disk does not stop it: a batch that finds no room is held
        (its appends wait) and written when the probe finds room again. A
        write or fsync error of another kind fails the journal (every
        waiting and later append gets ``JournalError``, ``unavailable`` says
        why) and ``run()`` returns: the daemon goes on serving reads.

        Raises:
            JournalClosed: the journal is not open, or ``run()`` ran before (it runs once).
            RuntimeError: ``run()`` is already running.
        """
        self._check_usable()
        if self._running:
            raise RuntimeError(f"journal {self.directory}: run() is already running")
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                if self.policy == "interval":
                    nursery.start_soon(self._guarded, self._interval_fsyncs, nursery)
                nursery.start_soon(self._probe)
                nursery.start_soon(self._checkpointer)
                await self._guarded(self._write_loop, nursery)
        finally:
            self._running = False
            self._stopped = True
            self._usable = False
            self._writer_idle = False
            self._flush_now()

    async def _guarded(self, loop: Callable[[], Awaitable[None]], nursery: trio.Nursery) -> None:
        """Run one of ``run()``'s loops; an I/O error fails the journal and stops run()."""
        try:
            await loop()
        except OSError as exc:
            self._fail(exc)
            nursery.cancel_scope.cancel()

    async def _write_loop(self) -> None:
        while True:
            if self._held is not None or self._chunks:
                try:
                    await self._write_batch()
                except OSError as exc:
                    if not _no_space(exc):
                        raise
                    # Held, not failed: its waiters wait for room, and the
                    # probe looks for it.
                    self._space_error = exc.strerror or str(exc)
                    self._refresh()
                    self._spare_wanted.set()
                    await trio.sleep(self.probe_interval)
            elif self._sync_target > self._synced_seq:
                await self._fsync_active()
            else:
                self._work = trio.Event()
                self._writer_idle = True
                await self._work.wait()

    def _take_batch(self) -> tuple[bytes, _Batch, int, int, dict[str, int]]:
        data = b"".join(self._chunks)
        batch, streams = self._batch, self._batch_streams
        first, last = self._batch_first, self._next_seq - 1
        self._chunks = []
        self._batch = _Batch()
        self._batch_streams = {}
        return data, batch, first, last, streams

    def _write(self, data: bytes, first: int, last: int, streams: dict[str, int]) -> None:
        """Write a batch at the active segment's end; nothing is counted unless all of it is.

        Raises:
            OSError: ENOSPC past the preallocation, or an I/O error. Part of
                the batch may be in the file; writing it again at the same
                offset is what a retry does.
        """
        segment = self._segments[-1]
        view = memoryview(data)
        offset = segment.end
        while view:
            done = os.pwrite(self._fd, view, offset)
            view = view[done:]
            offset += done
        segment.end = offset
        segment.records += last - first + 1
        segment.last_seq = last
        counts = segment.streams
        for stream, count in streams.items():
            counts[stream] = counts.get(stream, 0) + count
        self._written_seq = last
        self.batches_written += 1
        self.bytes_written += len(data)
        if self._dirty is not None:
            self._dirty.set()
            self._dirty = None
        if self._states and (
            last >= self._next_checkpoint_seq or self.bytes_written >= self._next_checkpoint_bytes
        ):
            self._checkpoint_due.set()

    async def _write_batch(self) -> None:
        if self._held is None:
            self._held = self._take_batch()
        data, batch, first, last, streams = self._held
        # In flight until finished, so that a failure or a cancelled run()
        # still answers its waiters.
        self._inflight = batch
        if not self._segments:
            raise OSError(errno.ENOSPC, "no segment could be made to write to")
        active = self._segments[-1]
        if active.records and active.end + len(data) > self.segment_bytes:
            await self._rotate(first)
        self._write(data, first, last, streams)
        self._held = None
        if self._space_error is not None:
            self._space_error = None
            self._refresh()
        if self.policy == "always":
            await self._fsync_active()
        self._inflight = None
        batch.finish()

    async def _rotate(self, base: int) -> None:
        """Fsync and close the active segment, whatever the policy, and start the next.

        Every segment but the active one is therefore on disk whole, and the
        new one's header and directory entry are fsynced before any record
        goes in, so no record sits in a file that a power loss can drop. One
        rotation per ``segment_bytes`` costs ``os`` little. The next segment
        is the spare when there is one (the probe then makes another).

        Raises:
            OSError: ENOSPC when there was no spare and no room for a new one.
        """
        old = self._fd
        await trio.to_thread.run_sync(os.fsync, old)
        self._mark_synced(self._written_seq)
        spare = self._spare_size >= self.segment_bytes
        if spare:
            self._spare_size = 0
        self._fd = await trio.to_thread.run_sync(self._create_segment, base, spare)
        self._segments.append(self._new_segment(base))
        os.close(old)
        self._spare_wanted.set()

    async def _probe(self) -> None:
        """Keep the spare made and the free space read; retry what a full disk refused."""
        while True:
            with trio.move_on_after(self.probe_interval):
                await self._spare_wanted.wait()
            self._spare_wanted = trio.Event()
            wanted = self._room_wanted()
            if wanted == (None, None, False):
                self._allocated(None, (None, False, False, None))
            else:
                result = await trio.to_thread.run_sync(self._allocate, *wanted)
                self._allocated(wanted[0], result)

    async def _fsync_active(self) -> None:
        # A dup, so that rotation may close the original while the thread runs.
        seq = self._written_seq
        fd = os.dup(self._fd)
        await trio.to_thread.run_sync(_fsync_and_close, fd)
        self.fsyncs += 1
        self._mark_synced(seq)

    def _mark_synced(self, seq: int) -> None:
        if seq > self._synced_seq:
            self._synced_seq = seq
            done, self._synced = self._synced, trio.Event()
            done.set()

    async def _interval_fsyncs(self) -> None:
        last = trio.current_time()
        while True:
            if self._written_seq <= self._synced_seq:
                self._dirty = trio.Event()
                await self._dirty.wait()
            await trio.sleep_until(last + self.fsync_interval)
            last = trio.current_time()
            if self._written_seq > self._synced_seq:
                await self._fsync_active()

    def _fail(self, exc: BaseException) -> None:
        self._usable = False
        if self._failed is None:
            self._failed = exc
            log.error("journal %s failed: %s", self.directory, exc)
        for batch in (self._inflight, self._batch):
            if batch is not None:
                batch.finish(exc)
        self._inflight = None
        self._held = None
        self._chunks = []
        self._synced.set()  # sync() waiters wake and see the failure
        self._refresh()

    def _flush_now(self) -> None:
        """Write what is held and pending and fsync it, in the loop; answer every waiter.

        Any error fails the journal (the process is stopping: there is no
        later to wait for), and then no final snapshot is written.
        """
        if self._failed is not None:
            self._fail(self._failed)
            return
        batches: list[_Batch] = []
        try:
            if not self._segments and (self._held is not None or self._chunks):
                raise OSError(errno.ENOSPC, "no segment could be made to write to")
            if self._held is not None:
                data, batch, first, last, streams = self._held
                self._write(data, first, last, streams)
                self._held = None
                batches.append(batch)
            if self._chunks:
                data, batch, first, last, streams = self._take_batch()
                self._write(data, first, last, streams)
                batches.append(batch)
            if self._written_seq > self._synced_seq:
                os.fsync(self._fd)
                self._mark_synced(self._written_seq)
        except OSError as exc:
            self._fail(exc)
            return
        if self._inflight is not None:
            self._inflight.finish()
            self._inflight = None
        for batch in batches:
            batch.finish()

    # --- snapshots and compaction ---------------------------------------------------

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
        self._check_open()
        check_stream(stream)
        if seq > self._written_seq:
            raise ValueError(
                f"snapshot of {stream} at seq {seq}: the journal has written up to "
                f"{self._written_seq}; await journal.snapshot() or journal.sync() first"
            )
        if seq > self._synced_seq:
            os.fsync(self._fd)
            self._mark_synced(self._written_seq)
        return self._store_snapshot(stream, seq, data)

    async def snapshot(self, stream: str, seq: int, data: bytes) -> Path:
        """``write_snapshot`` without blocking the loop: sync, then write in a thread.

        Args:
            stream: the stream the state belongs to.
            seq: the last seq the state includes; at most ``last_seq``.
            data: the state, in the plugin's own encoding.

        Returns:
            The snapshot file's path.

        Raises:
            ValueError: a bad stream name, or ``seq`` beyond ``last_seq``.
            JournalError: the journal failed or is not open.
            OSError: the file cannot be written.
        """
        check_stream(stream)
        if seq > self.last_seq:
            raise ValueError(f"snapshot of {stream} at seq {seq}: last seq is {self.last_seq}")
        await self.sync()
        return await trio.to_thread.run_sync(self._store_snapshot, stream, seq, data)

    def _store_snapshot(self, stream: str, seq: int, data: bytes) -> Path:
        folder = self.directory / SNAPSHOT_DIR / stream
        _mkdir_durable(folder)
        final = folder / snapshot_name(seq)
        tmp = final.with_name(final.name + ".tmp")
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
        _fsync_dir(folder)
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
        self._check_open()
        deleted = self._compactable()
        if deleted:
            _unlink_all(deleted, self.directory)
            del self._segments[: len(deleted)]
        return deleted

    def _compactable(self) -> list[Path]:
        floors: dict[str, int] = {}
        found: list[Path] = []
        for segment in self._segments[:-1]:
            for stream in segment.streams:
                if stream not in floors:
                    kept = snapshot_files(self.directory, stream)[:KEEP_SNAPSHOTS]
                    floors[stream] = kept[-1][0] if kept else 0
            if any(floors[stream] < segment.last_seq for stream in segment.streams):
                break
            found.append(segment.path)
        return found

    async def _compact(self) -> None:
        deleted = self._compactable()
        if not deleted:
            return
        try:
            await trio.to_thread.run_sync(_unlink_all, deleted, self.directory)
        except OSError as exc:
            log.warning("journal %s: compaction stopped: %s", self.directory, exc)
        # Only what is gone leaves the list (all of it, but for an error).
        gone = 0
        while gone < len(deleted) and not self._segments[gone].path.exists():
            gone += 1
        del self._segments[:gone]

    # --- checkpoints: what every stateful plugin uses ---------------------------------

    def restore(
        self, stream: str, load: Callable[[bytes], None], apply: Callable[[bytes], None]
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
        for _, _, payload in self.replay(after_seq=after, streams={stream}):
            apply(payload)
            applied += 1
        return after, applied

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

    async def checkpoint(self, stream: str, state: Callable[[], bytes]) -> Path | None:
        """Snapshot one stream's state as of ``last_seq``, then compact.

        A snapshot the disk refuses (ENOSPC) is not an error: the previous
        one stands, and so do the segments it needs.

        Returns:
            The snapshot's path, or None if it could not be written (logged).
        """
        async with self._checkpoint_lock:
            seq = self.last_seq
            path = await self._snapshot_state(stream, state)
            await self._compact()
        if path is not None:
            self._checkpointed(seq)
        return path

    def _checkpointed(self, seq: int) -> None:
        self.checkpoints += 1
        self.last_checkpoint_seq = seq
        self.last_checkpoint_time = time.time()

    async def _snapshot_state(self, stream: str, state: Callable[[], bytes]) -> Path | None:
        # Taken together, with no await between (see ``register``).
        seq, data = self.last_seq, state()
        try:
            await self.sync()
            path = await trio.to_thread.run_sync(self._store_snapshot, stream, seq, data)
        except (JournalError, OSError) as exc:
            self.checkpoint_failures += 1
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
        async with self._checkpoint_lock:
            seq, written = self.last_seq, self.bytes_written
            ok = True
            for stream, state in list(self._states.items()):
                if await self._snapshot_state(stream, state) is None:
                    ok = False
            await self._compact()
        if ok:
            # Counted once every stream's snapshot is on disk, at the seq all
            # of them cover.
            self._checkpointed(seq)
            self._next_checkpoint_seq = seq + self.checkpoint_records
            self._next_checkpoint_bytes = written + self.checkpoint_bytes
        return ok

    async def _checkpointer(self) -> None:
        while True:
            await self._checkpoint_due.wait()
            self._checkpoint_due = trio.Event()
            if not await self._checkpoint_all():
                # Most likely a full disk: try again once the probe had a go.
                await trio.sleep(self.probe_interval)
                self._checkpoint_due.set()

    def _final_checkpoints(self) -> None:
        """At close: snapshot every registered stream and compact, if that is safe.

        Not after a failure, and not while a record appended (and applied
        by its plugin) is unwritten: a snapshot would claim it.
        """
        if not self._states:
            return
        if self._failed is not None or self._written_seq != self._next_seq - 1:
            log.warning(
                "journal %s: no snapshot at close (%s)",
                self.directory,
                self._failed or "records appended but not written",
            )
            return
        seq = self.last_seq
        for stream, state in self._states.items():
            try:
                self._store_snapshot(stream, seq, state())
            except Exception as exc:
                log.warning(
                    "journal %s: no snapshot of %s at close: %s", self.directory, stream, exc
                )
        try:
            deleted = self._compactable()
            if deleted:
                _unlink_all(deleted, self.directory)
                del self._segments[: len(deleted)]
        except OSError as exc:
            log.warning("journal %s: compaction at close stopped: %s", self.directory, exc)

    # --- closing ------------------------------------------------------------------------

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
        if self._running:
            raise RuntimeError(f"journal {self.directory}: close() while run() is running")
        self._closed = True
        self._usable = False
        try:
            if self._lock_fd >= 0:
                self._flush_now()
                self._final_checkpoints()
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


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


def in_use(directory: Path) -> bool:
    """Whether a process has the journal open (holds its ``LOCK``). Changes nothing.

    Args:
        directory: the journal directory.

    Returns:
        True if the lock is held; False if it is free or there is no lock file.
    """
    try:
        fd = os.open(directory / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # and with it the probe's lock
    return False


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
