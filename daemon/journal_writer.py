"""The journal's writer: sequence numbers, batches, group commit, fsync policies, failure.

Strategy: appenders never touch the file. ``append`` packs its record into
the pending batch (struct packing and a crc32, in the loop) and waits; the
writer task, started by ``run()``, takes everything pending as one batch,
writes it with one ``write()`` (a page-cache copy, done in the loop) and, when
the policy asks, fsyncs it with one ``fsync()`` in the writer's fsync thread.
Whatever arrives while that fsync runs becomes the next batch: that is group
commit, and it is why a thousand concurrent appenders cost a few fsyncs, not
a thousand.

The fsync thread (``_SyncThread``) lives as long as ``run()``: the loop hands
it an fsync through a queue and parks the writer task, and the thread wakes
the task through the Trio token. That costs the loop half of what
``trio.to_thread.run_sync`` does (a thread cache, a capacity limiter and
a cancel scope per call), once per batch. The fsync never runs in the loop:
on a disk where one takes milliseconds the loop would stop serving for as
long, and the next batch would not gather while it runs. (``fdatasync``
would skip the inode's times, but writing into a preallocated segment
changes its extents, which both must sync: no gain was measured.)

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

Space: should a batch find no room (a plugin that did not ask ``admit()``),
it is held, not failed: its appends wait, unacknowledged, the journal refuses
new commands (``journal_space``), and the batch is written first once the
probe has found room.

Failure: a write or fsync error other than "no space" fails every waiting
append with ``JournalError``, makes every later one fail the same way and
``unavailable`` say why; ``run()`` returns (it does not raise), so the daemon
goes on serving reads. After a failed fsync the kernel may have dropped the
dirty pages, so there is no safe retry in the same process; restarting
reopens the journal and cuts whatever is incomplete.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Literal

import trio
from trio.lowlevel import Abort, Task, current_task, reschedule, wait_task_rescheduled

from .journal_format import CRC, LENGTH_FIXED, LENGTH_SEQ, MAX_PAYLOAD, JournalError, check_stream
from .journal_segments import SegmentFiles
from .journal_space import Availability
from .latency import Recorder

__all__ = ["FSYNC_POLICIES", "Bytes", "FsyncPolicy", "JournalClosed", "Writer"]

log = logging.getLogger("sprintd.journal")

FsyncPolicy = Literal["always", "interval", "os"]
FSYNC_POLICIES: tuple[FsyncPolicy, ...] = ("always", "interval", "os")
# What a payload may be; it is copied to bytes unless it is bytes already.
Bytes = bytes | bytearray | memoryview
# Errors that mean "no room now", which the writer waits out; any other
# write or fsync error fails it.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class JournalClosed(JournalError):
    """The journal is closed (or was never opened)."""


def _fsync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unabortable(_: object) -> Abort:
    return Abort.FAILED


class _SyncThread:
    """The writer's fsync thread (module doc): one call at a time, in order.

    ``run`` waits like ``trio.to_thread.run_sync`` with its default
    ``abandon_on_cancel=False``: a cancel waits for the call to end, so an
    fsync is never left running behind a task that went on.
    """

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        # (function, fd, task, [error]): the error slot is the thread's to fill.
        self._calls: queue.SimpleQueue[
            tuple[Callable[[int], object], int, Task, list[BaseException]] | None
        ] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="sprintd-journal-fsync", daemon=True).start()

    def _serve(self) -> None:
        calls, wake = self._calls, self._token.run_sync_soon
        while (call := calls.get()) is not None:
            function, fd, task, error = call
            try:
                function(fd)
            except BaseException as exc:  # the waiting task raises it
                error.append(exc)
            wake(reschedule, task)

    async def run(self, function: Callable[[int], object], fd: int) -> None:
        """Call ``function(fd)`` in the thread; raise what it raised."""
        error: list[BaseException] = []
        self._calls.put((function, fd, current_task(), error))
        await wait_task_rescheduled(_unabortable)
        if error:
            raise error[0]

    def stop(self) -> None:
        """The thread ends once the calls before this one are done."""
        self._calls.put(None)


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


# A batch taken from the pending records: its bytes, waiters, first and last
# seq, and records per stream.
_Taken = tuple[bytes, _Batch, int, int, dict[str, int]]


class Writer:
    """Assigns seqs, batches records, writes and fsyncs them into ``files``.

    Everything runs in the Trio thread but the fsyncs it hands to its fsync
    thread. ``opened`` and ``closed`` bracket its life; ``run`` is its task.
    """

    def __init__(
        self,
        files: SegmentFiles,
        space: Availability,
        *,
        policy: FsyncPolicy,
        fsync_interval: float,
    ) -> None:
        self.files = files
        self.space = space
        self.policy: FsyncPolicy = policy
        self.fsync_interval = fsync_interval
        #: Called with (last seq, bytes written) after every batch written.
        self.on_written: Callable[[int, int], None] | None = None
        #: Tasks ``run()`` runs beside the writer, and stops with it.
        self.background: list[Callable[[], Awaitable[None]]] = []
        self._open = False
        self.failed: BaseException | None = None
        # Open, not closed, not failed, run() not stopped: the one check an
        # append makes.
        self._usable = False
        self.running = False
        self._stopped = False
        # Sequence numbers: assigned (next - 1) >= written >= synced.
        self._next_seq = 1
        self.written_seq = 0
        self.synced_seq = 0
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
        self._held: _Taken | None = None
        #: Batches written and fsyncs of the active segment made so far: how
        #: well group commit batches (records per batch, per fsync).
        self.batches_written = 0
        self.fsyncs = 0
        #: Record bytes written since open (for checkpoints and metrics).
        self.bytes_written = 0
        #: Records written since open, and per batch (one sample a batch,
        #: never one an append): group commit's fan-in.
        self.records_written = 0
        self.batch_records = Recorder("journal_batch_records")
        #: Each fsync of the active segment, ns from asking to done (the
        #: thread's hand-off included: what an ``always`` append waits).
        self.fsync_latency = Recorder("journal_fsync")
        # The fsync thread, while run() runs.
        self._sync_thread: _SyncThread | None = None

    # --- state ------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The seq of the last record appended (acknowledged or not); 0 if none."""
        return self._next_seq - 1

    @property
    def all_written(self) -> bool:
        """Whether every record appended is written (none pending, none held)."""
        return self.written_seq == self._next_seq - 1

    def opened(self, next_seq: int) -> None:
        """The journal is open and its files loaded; the next record gets ``next_seq``."""
        self._open = True
        self._usable = True
        self._next_seq = next_seq
        self.written_seq = self.synced_seq = next_seq - 1
        self._sync_target = self.synced_seq

    def closed(self) -> None:
        """Appends fail from now on; ``flush_now`` writes what they left."""
        self._open = False
        self._usable = False

    def check_open(self) -> None:
        if not self._open:
            raise JournalClosed(f"journal {self.files.directory} is not open")
        if self.failed is not None:
            raise JournalError(
                f"journal {self.files.directory} failed: {self.failed}"
            ) from self.failed

    def check_usable(self) -> None:
        if self._usable:
            return
        self.check_open()
        if self._stopped:
            raise JournalClosed(
                f"journal {self.files.directory}: run() has stopped, nothing is written"
            )

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
            self.check_usable()
        name = self._names.get(stream) or self._name(stream)
        if type(payload) is not bytes:
            payload = bytes(payload)  # a bytearray could change before the write
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"payload of {len(payload)} bytes: at most {MAX_PAYLOAD}")
        seq = self._next_seq
        self._next_seq = seq + 1
        head = LENGTH_SEQ.pack(LENGTH_FIXED + len(name) + len(payload), seq, len(name)) + name
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
        self.check_usable()
        name = self._names.get(stream) or self._name(stream)
        items = [p if type(p) is bytes else bytes(p) for p in payloads]
        for payload in items:
            if len(payload) > MAX_PAYLOAD:
                raise ValueError(f"payload of {len(payload)} bytes: at most {MAX_PAYLOAD}")
        first = seq = self._next_seq
        if not items:
            return range(first, first)
        fixed = LENGTH_FIXED + len(name)
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
        while self.synced_seq < target:
            self.check_usable()
            self._sync_target = max(self._sync_target, target)
            self._wake_writer()
            await self._synced.wait()
        self.check_usable()
        return self.synced_seq

    def fsync_now(self) -> None:
        """Fsync what is written, blocking the loop (a snapshot written outside ``run()``)."""
        os.fsync(self.files.fd)
        self._mark_synced(self.written_seq)

    # --- the writer task ----------------------------------------------------------

    async def run(self) -> None:
        """Write batches (group commit), fsync under ``interval``, run ``background`` beside.

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
        self.check_usable()
        if self.running:
            raise RuntimeError(f"journal {self.files.directory}: run() is already running")
        self.running = True
        self._sync_thread = _SyncThread()
        try:
            async with trio.open_nursery() as nursery:
                if self.policy == "interval":
                    nursery.start_soon(self._guarded, self._interval_fsyncs, nursery)
                for task in self.background:
                    nursery.start_soon(task)
                await self._guarded(self._write_loop, nursery)
        finally:
            self._sync_thread.stop()
            self._sync_thread = None
            self.running = False
            self._stopped = True
            self._usable = False
            self._writer_idle = False
            self.flush_now()

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
                    if exc.errno not in NO_SPACE_ERRNOS:
                        raise
                    # Held, not failed: its waiters wait for room, and the
                    # probe looks for it.
                    self.space.held(exc.strerror or str(exc))
                    await trio.sleep(self.space.probe_interval)
            elif self._sync_target > self.synced_seq:
                await self._fsync_active()
            else:
                self._work = trio.Event()
                self._writer_idle = True
                await self._work.wait()

    def _take_batch(self) -> _Taken:
        data = b"".join(self._chunks)
        batch, streams = self._batch, self._batch_streams
        first, last = self._batch_first, self._next_seq - 1
        self._chunks = []
        self._batch = _Batch()
        self._batch_streams = {}
        return data, batch, first, last, streams

    def _write(self, data: bytes, first: int, last: int, streams: dict[str, int]) -> None:
        """Write a batch (see ``SegmentFiles.write``) and count it."""
        self.files.write(data, first, last, streams)
        self.written_seq = last
        self.batches_written += 1
        self.records_written += last - first + 1
        self.batch_records.record(last - first + 1)
        self.bytes_written += len(data)
        if self._dirty is not None:
            self._dirty.set()
            self._dirty = None
        if self.on_written is not None:
            self.on_written(last, self.bytes_written)

    async def _write_batch(self) -> None:
        # A batch still here was held for want of space: the refusal ends
        # when it is written.
        retry = self._held is not None
        if self._held is None:
            self._held = self._take_batch()
        data, batch, first, last, streams = self._held
        # In flight until finished, so that a failure or a cancelled run()
        # still answers its waiters.
        self._inflight = batch
        segments = self.files.segments
        if not segments:
            raise OSError(errno.ENOSPC, "no segment could be made to write to")
        # A batch never spans two segments; an empty segment takes any.
        active = segments[-1]
        if active.records and active.end + len(data) > self.files.segment_bytes:
            await self._rotate(first)
        self._write(data, first, last, streams)
        self._held = None
        if retry:
            self.space.unheld()
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
        assert self._sync_thread is not None  # rotations are run()'s
        await self._sync_thread.run(os.fsync, self.files.fd)
        self._mark_synced(self.written_seq)
        await self.files.rotate(base)
        self.space.want_spare()

    async def _fsync_active(self) -> None:
        # A dup, so that rotation may close the original while the thread runs.
        seq = self.written_seq
        assert self._sync_thread is not None  # fsyncs are run()'s
        fd = os.dup(self.files.fd)
        began = time.perf_counter_ns()
        await self._sync_thread.run(_fsync_and_close, fd)
        self.fsync_latency.record(time.perf_counter_ns() - began)
        self.fsyncs += 1
        self._mark_synced(seq)

    def _mark_synced(self, seq: int) -> None:
        if seq > self.synced_seq:
            self.synced_seq = seq
            done, self._synced = self._synced, trio.Event()
            done.set()

    async def _interval_fsyncs(self) -> None:
        last = trio.current_time()
        while True:
            if self.written_seq <= self.synced_seq:
                self._dirty = trio.Event()
                await self._dirty.wait()
            await trio.sleep_until(last + self.fsync_interval)
            last = trio.current_time()
            if self.written_seq > self.synced_seq:
                await self._fsync_active()

    def _fail(self, exc: BaseException) -> None:
        self._usable = False
        if self.failed is None:
            self.failed = exc
            log.error("journal %s failed: %s", self.files.directory, exc)
        for batch in (self._inflight, self._batch):
            if batch is not None:
                batch.finish(exc)
        self._inflight = None
        self._held = None
        self._chunks = []
        self._synced.set()  # sync() waiters wake and see the failure
        self.space.failed(self.failed)

    def flush_now(self) -> None:
        """Write what is held and pending and fsync it, in the loop; answer every waiter.

        Any error fails the journal (the process is stopping: there is no
        later to wait for), and then no final snapshot is written.
        """
        if self.failed is not None:
            self._fail(self.failed)
            return
        batches: list[_Batch] = []
        try:
            if not self.files.segments and (self._held is not None or self._chunks):
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
            if self.written_seq > self.synced_seq:
                self.fsync_now()
        except OSError as exc:
            self._fail(exc)
            return
        if self._inflight is not None:
            self._inflight.finish()
            self._inflight = None
        for batch in batches:
            batch.finish()
