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

Failure: a write or fsync error fails every waiting append with
``JournalError``, makes every later one fail the same way, and makes ``run()``
raise. After a failed fsync the kernel may have dropped the dirty pages, so
there is no safe retry in the same process; restarting reopens the journal and
cuts whatever is incomplete.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import math
import os
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


class JournalClosed(JournalError):
    """The journal is closed (or was never opened)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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

    def info(self) -> SegmentInfo:
        return SegmentInfo(
            self.path,
            self.base_seq,
            self.last_seq,
            self.records,
            self.end,
            self.end,
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
    ) -> None:
        """
        Args:
            directory: the journal directory, made if missing (``<data_dir>/journal``).
            fsync: ``always``, ``interval`` or ``os`` (see the module's table).
            fsync_interval_ms: the period of background fsyncs under ``interval``.
            segment_bytes: a segment is closed and a new one started when the next
                batch would take it past this size (a batch never spans two).

        Raises:
            ValueError: an unknown policy, a non-positive interval, a tiny segment size.
        """
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync = {fsync!r}: expected one of {', '.join(FSYNC_POLICIES)}")
        if not (fsync_interval_ms > 0 and math.isfinite(fsync_interval_ms)):
            raise ValueError(f"fsync_interval_ms = {fsync_interval_ms!r}: expected > 0")
        if segment_bytes < MIN_SEGMENT_BYTES:
            raise ValueError(f"segment_bytes = {segment_bytes}: expected >= {MIN_SEGMENT_BYTES}")
        self.directory = Path(directory)
        self.policy: FsyncPolicy = fsync
        self.fsync_interval = fsync_interval_ms / 1000.0
        self.segment_bytes = segment_bytes
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
        #: Batches written and fsyncs of the active segment made so far: how
        #: well group commit batches (records per batch, per fsync).
        self.batches_written = 0
        self.fsyncs = 0

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
                _Segment(s.path, s.base_seq, s.last_seq, s.records, s.end, dict(s.streams))
                for s in report.segments
            ]
            if self._segments:
                active = self._segments[-1]
                self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
                # A process killed under os or interval can leave its last
                # records in the page cache: make them as durable as new ones
                # before a snapshot can rely on them.
                os.fsync(self._fd)
            else:
                self._fd = self._create_segment(report.next_seq)
                self._segments.append(self._new_segment(report.next_seq))
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
        self.report = report
        return report

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

    def _create_segment(self, base_seq: int) -> int:
        """A new segment file with its header, fsynced into the directory; its fd.

        Runs in a worker thread on rotation: it touches no journal state.
        """
        path = self.directory / segment_name(base_seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, segment_header(base_seq))
            os.fsync(fd)
            _fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _new_segment(self, base_seq: int) -> _Segment:
        path = self.directory / segment_name(base_seq)
        return _Segment(path, base_seq, base_seq - 1, 0, SEGMENT_HEADER.size)

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
        """Write batches (group commit) and, under ``interval``, fsync periodically.

        Run it as a background task for as long as anything appends; appends
        wait for it. When cancelled, it writes and fsyncs what is pending
        (blocking the loop for one fsync) and answers every waiting append
        before it returns.

        Raises:
            JournalError: a write or fsync failed (every waiting append got it too).
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
                await self._guarded(self._write_loop, nursery)
        finally:
            self._running = False
            self._stopped = True
            self._usable = False
            self._writer_idle = False
            self._shutdown_flush()
        if self._failed is not None:
            raise JournalError(f"journal {self.directory}: {self._failed}") from self._failed

    async def _guarded(self, loop: Callable[[], Awaitable[None]], nursery: trio.Nursery) -> None:
        """Run one of ``run()``'s loops; an I/O error fails the journal and stops both."""
        try:
            await loop()
        except OSError as exc:
            self._fail(exc)
            nursery.cancel_scope.cancel()

    async def _write_loop(self) -> None:
        while True:
            if self._chunks:
                await self._write_batch()
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
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        segment = self._segments[-1]
        segment.end += len(data)
        segment.records += last - first + 1
        segment.last_seq = last
        counts = segment.streams
        for stream, count in streams.items():
            counts[stream] = counts.get(stream, 0) + count
        self._written_seq = last
        self.batches_written += 1
        if self._dirty is not None:
            self._dirty.set()
            self._dirty = None

    async def _write_batch(self) -> None:
        active = self._segments[-1]
        if active.records and active.end + sum(map(len, self._chunks)) > self.segment_bytes:
            await self._rotate()
        data, batch, first, last, streams = self._take_batch()
        # In flight until finished, so that a failure or a cancelled run()
        # still answers its waiters.
        self._inflight = batch
        self._write(data, first, last, streams)
        if self.policy == "always":
            await self._fsync_active()
        self._inflight = None
        batch.finish()

    async def _rotate(self) -> None:
        """Fsync and close the active segment, whatever the policy, and start the next.

        Every segment but the active one is therefore on disk whole, and the
        new one's header and directory entry are fsynced before any record
        goes in, so no record sits in a file that a power loss can drop. One
        rotation per ``segment_bytes`` costs ``os`` little.
        """
        old = self._fd
        await trio.to_thread.run_sync(os.fsync, old)
        self._mark_synced(self._written_seq)
        base = self._batch_first
        self._fd = await trio.to_thread.run_sync(self._create_segment, base)
        self._segments.append(self._new_segment(base))
        os.close(old)

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
        self._chunks = []
        self._synced.set()  # sync() waiters wake and see the failure

    def _shutdown_flush(self) -> None:
        """Write and fsync what is pending, in the loop, and answer every waiter."""
        if self._failed is not None or self._fd < 0:
            self._fail(self._failed or JournalClosed("journal closed"))
            return
        try:
            if self._chunks:
                data, batch, first, last, streams = self._take_batch()
                self._write(data, first, last, streams)
            else:
                batch = self._batch
                self._batch = _Batch()
            if self._written_seq > self._synced_seq:
                os.fsync(self._fd)
                self._mark_synced(self._written_seq)
        except OSError as exc:
            self._fail(exc)
            return
        if self._inflight is not None:
            self._inflight.finish()
            self._inflight = None
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
        with open(tmp, "wb") as file:
            file.write(encode_snapshot(seq, bytes(data)))
            file.flush()
            os.fsync(file.fileno())
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

        Returns:
            The deleted segment files, oldest first.

        Raises:
            JournalError: the journal failed or is not open.
            OSError: a file cannot be deleted.
        """
        self._check_open()
        floors: dict[str, int] = {}
        deleted: list[Path] = []
        for segment in self._segments[:-1]:
            for stream in segment.streams:
                if stream not in floors:
                    kept = snapshot_files(self.directory, stream)[:KEEP_SNAPSHOTS]
                    floors[stream] = kept[-1][0] if kept else 0
            if any(floors[stream] < segment.last_seq for stream in segment.streams):
                break
            segment.path.unlink()
            deleted.append(segment.path)
        if deleted:
            del self._segments[: len(deleted)]
            _fsync_dir(self.directory)
        return deleted

    # --- closing ------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is pending, fsync, release the file and the lock.

        Call it after ``run()`` has returned; closing twice is harmless.

        Raises:
            RuntimeError: ``run()`` is still running.
            OSError: the final write or fsync failed.
        """
        if self._closed:
            return
        if self._running:
            raise RuntimeError(f"journal {self.directory}: close() while run() is running")
        self._closed = True
        self._usable = False
        try:
            if self._fd >= 0 and self._failed is None:
                if self._chunks:
                    data, batch, first, last, streams = self._take_batch()
                    self._write(data, first, last, streams)
                    batch.finish()
                if self._written_seq > self._synced_seq:
                    os.fsync(self._fd)
                    self._synced_seq = self._written_seq
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
