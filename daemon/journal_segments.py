"""The journal's segment files as the writer keeps them: made, preallocated, written, rotated.

The format (headers, records, what a scan accepts) is ``journal_format``'s;
this module owns the files of a journal directory while it is open: the
``LOCK`` that keeps it to one process, the segments (``Segment``, the writer's
mutable view of each), the active segment's fd, and the ``SPARE``.

Strategy: every byte a record is written to is allocated before the record
exists. A segment is preallocated (``posix_fallocate``, or zeros written where
a file system has no fallocate) to ``segment_bytes`` when it is made, and the
next one is held ahead as ``SPARE``, preallocated, without a header. Records
go in with ``pwrite`` at the active segment's end, into blocks the journal
already owns; rotation fsyncs the spare's header and renames it into place,
which needs no new blocks. Making and preallocating files blocks, so it is
split into a half that touches no state (``allocate``, ``create``: run in a
worker thread) and a half that takes the result in (``allocated``, in the
Trio thread). Who decides *when* to make room is ``journal_space``; who
writes is ``journal_writer``.

Durability of the directory: a new file, a rename and an unlink are fsynced
into their directory before anything relies on them, so a power loss cannot
drop a segment whose records were acknowledged.

Compaction's list is here too (``compactable``): which whole segments, from
the oldest, no stream's kept snapshots need any more.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .journal_format import (
    KEEP_SNAPSHOTS,
    LOCK_FILE,
    SEGMENT_HEADER,
    SPARE_FILE,
    JournalError,
    JournalReport,
    SegmentInfo,
    TailCut,
    segment_header,
    segment_name,
    snapshot_files,
)

__all__ = [
    "NOTHING_MADE",
    "NOTHING_WANTED",
    "Room",
    "Segment",
    "SegmentFiles",
    "Wanted",
    "fsync_dir",
    "in_use",
    "lock_directory",
    "mkdir_durable",
]

# Files the journal makes: readable by an operator's tools, written by the daemon.
FILE_MODE = 0o644
# Where fallocate is missing, zeros are written in pieces this large.
ZERO_CHUNK = 1 << 20

# What ``SegmentFiles.allocate`` is asked to do: (make the first segment at
# this seq, preallocate this dup of the active segment's fd, make the spare).
Wanted = tuple[int | None, int | None, bool]
# What it did: (the first segment's fd, active done, spare done, the error).
Room = tuple[int | None, bool, bool, str | None]
NOTHING_WANTED: Wanted = (None, None, False)
NOTHING_MADE: Room = (None, False, False, None)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def mkdir_durable(path: Path) -> None:
    """Make ``path`` (and missing parents), each new entry fsynced into its parent."""
    if path.is_dir():
        return
    mkdir_durable(path.parent)
    with contextlib.suppress(FileExistsError):
        path.mkdir()
    fsync_dir(path.parent)


def lock_directory(directory: Path) -> int:
    """Make ``directory`` if missing and take its ``LOCK`` exclusively; the lock's fd.

    Raises:
        JournalError: another process holds the lock.
        OSError: the directory or the lock file cannot be made.
    """
    mkdir_durable(directory)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise JournalError(
            f"journal {directory} is open in another process (its LOCK is held)"
        ) from None
    return fd


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


def preallocate(fd: int, size: int) -> None:
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
            have += os.pwrite(fd, bytes(min(size - have, ZERO_CHUNK)), have)


def unlink_all(paths: Sequence[Path], directory: Path) -> None:
    for path in paths:
        path.unlink()
    fsync_dir(directory)


@dataclass
class Segment:
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


class SegmentFiles:
    """The open journal's segments, oldest first, the active one's fd, and the spare.

    Everything here runs in the Trio thread except ``allocate`` and
    ``create``, which touch no state and are what worker threads run.
    """

    def __init__(self, directory: Path, segment_bytes: int) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.segments: list[Segment] = []
        # The active (last) segment's fd, -1 while there is none.
        self.fd = -1
        # The spare's size, 0 while it cannot be had.
        self.spare_size = 0
        # The seq the first segment starts at, should none exist yet (none
        # could be made): nothing is written before it, so it stays put.
        self._first_seq = 1
        # Readers' holds (``Journal.hold``): name -> the seq after which
        # compaction keeps every record.
        self.holds: dict[str, int] = {}

    # --- opening ----------------------------------------------------------------

    def load(self, report: JournalReport) -> None:
        """Take over what ``inspect`` found (its tail already cut); open the active segment.

        Raises:
            OSError: the active segment cannot be opened or fsynced (nothing is kept open).
        """
        self.segments = [
            Segment(s.path, s.base_seq, s.last_seq, s.records, s.end, dict(s.streams), s.size)
            for s in report.segments
        ]
        self._first_seq = report.next_seq
        try:
            if self.segments:
                self.fd = os.open(self.segments[-1].path, os.O_WRONLY | os.O_CLOEXEC)
                # A process killed under os or interval can leave its last
                # records in the page cache: make them as durable as new ones
                # before a snapshot can rely on them.
                os.fsync(self.fd)
            with contextlib.suppress(FileNotFoundError):
                size = os.stat(self.directory / SPARE_FILE).st_size
                # A spare cut short (a full disk, a smaller segment_bytes
                # before) is preallocated again: fallocate keeps what is there.
                self.spare_size = size if size >= self.segment_bytes else 0
        except BaseException:
            self.close()
            raise

    def cut(self, cut: TailCut) -> None:
        """Cut a torn tail as ``inspect`` reported it: truncate, remove, fsync."""
        for path in cut.removed:
            path.unlink()
        if cut.segment not in cut.removed:
            with open(cut.segment, "r+b") as file:
                file.truncate(cut.offset)
                os.fsync(file.fileno())
        fsync_dir(self.directory)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # --- state ------------------------------------------------------------------

    def infos(self) -> list[SegmentInfo]:
        return [segment.info() for segment in self.segments]

    @property
    def disk_bytes(self) -> int:
        """Bytes of the segments (preallocation included) and the spare."""
        return sum(max(s.size, s.end) for s in self.segments) + self.spare_size

    # --- making room --------------------------------------------------------------

    def room_wanted(self) -> Wanted:
        """What ``allocate`` should do now; ``NOTHING_WANTED`` when all is had."""
        first = None if self.segments else self._first_seq
        active = None
        if self.segments and self.segments[-1].size < self.segment_bytes:
            active = os.dup(self.fd)
        return first, active, self.spare_size == 0

    def allocate(self, first: int | None, active: int | None, spare: bool) -> Room:
        """The blocking half of making room; it touches no state (a worker thread).

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
                made = self.create(first)
            if active is not None:
                preallocate(active, self.segment_bytes)
                active_done = True
            if spare:
                fd = os.open(self.directory / SPARE_FILE, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC)
                try:
                    preallocate(fd, self.segment_bytes)
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

    def allocated(self, first: int | None, room: Room) -> str | None:
        """Take in what ``allocate`` made; return its error, if any."""
        made, active_done, spare_done, error = room
        if made is not None and first is not None:
            self.fd = made
            self.segments.append(self._new_segment(first))
        elif active_done:
            self.segments[-1].size = max(self.segments[-1].size, self.segment_bytes)
        if spare_done:
            self.spare_size = self.segment_bytes
        return error

    def create(self, base_seq: int, spare: bool = False) -> int:
        """A new segment with its header, preallocated, fsynced into the directory; its fd.

        With ``spare`` the preallocated ``SPARE`` becomes the segment (no
        allocation, so it cannot run out of space); otherwise a new file is
        made and preallocated, and removed again if that fails. Touches no
        state: it runs in a worker thread on rotation.

        Raises:
            OSError: ENOSPC when a new file cannot be preallocated.
        """
        path = self.directory / segment_name(base_seq)
        if spare:
            fd = os.open(self.directory / SPARE_FILE, os.O_WRONLY | os.O_CLOEXEC)
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
        try:
            os.pwrite(fd, segment_header(base_seq), 0)
            if not spare:
                preallocate(fd, self.segment_bytes)
            os.fsync(fd)
            if spare:
                os.replace(self.directory / SPARE_FILE, path)
            fsync_dir(self.directory)
        except BaseException:
            os.close(fd)
            if not spare:
                path.unlink(missing_ok=True)
            raise
        return fd

    def _new_segment(self, base_seq: int) -> Segment:
        path = self.directory / segment_name(base_seq)
        return Segment(
            path, base_seq, base_seq - 1, 0, SEGMENT_HEADER.size, size=self.segment_bytes
        )

    # --- writing ----------------------------------------------------------------

    def write(self, data: bytes, first: int, last: int, streams: dict[str, int]) -> None:
        """Write a batch at the active segment's end; nothing is counted unless all of it is.

        Raises:
            OSError: ENOSPC past the preallocation, or an I/O error. Part of
                the batch may be in the file; writing it again at the same
                offset is what a retry does.
        """
        segment = self.segments[-1]
        view = memoryview(data)
        offset = segment.end
        while view:
            done = os.pwrite(self.fd, view, offset)
            view = view[done:]
            offset += done
        segment.end = offset
        segment.records += last - first + 1
        segment.last_seq = last
        counts = segment.streams
        for stream, count in streams.items():
            counts[stream] = counts.get(stream, 0) + count

    async def rotate(self, base_seq: int) -> None:
        """Start the next segment at ``base_seq`` (the spare when there is one); close the old.

        The caller has fsynced the active segment: every segment but the
        active one is on disk whole.

        Raises:
            OSError: ENOSPC when there was no spare and no room for a new one.
        """
        old = self.fd
        spare = self.spare_size >= self.segment_bytes
        if spare:
            self.spare_size = 0
        self.fd = await trio.to_thread.run_sync(self.create, base_seq, spare)
        self.segments.append(self._new_segment(base_seq))
        os.close(old)

    # --- compaction ---------------------------------------------------------------

    def compactable(self) -> list[Path]:
        """The oldest segments that no stream nor hold needs any more (see ``Journal.compact``)."""
        floors: dict[str, int] = {}
        found: list[Path] = []
        held = min(self.holds.values(), default=None)
        for segment in self.segments[:-1]:
            if held is not None and held < segment.last_seq:
                break
            for stream in segment.streams:
                if stream not in floors:
                    kept = snapshot_files(self.directory, stream)[:KEEP_SNAPSHOTS]
                    floors[stream] = kept[-1][0] if kept else 0
            if any(floors[stream] < segment.last_seq for stream in segment.streams):
                break
            found.append(segment.path)
        return found

    def compact_now(self) -> list[Path]:
        """Delete what ``compactable`` lists, blocking; the deleted files.

        Raises:
            OSError: a file cannot be deleted (what was deleted before it is forgotten).
        """
        deleted = self.compactable()
        if deleted:
            unlink_all(deleted, self.directory)
            del self.segments[: len(deleted)]
        return deleted

    async def compact(self) -> OSError | None:
        """``compact_now`` in a worker thread; an error is returned, and what is gone forgotten."""
        deleted = self.compactable()
        if not deleted:
            return None
        error = None
        try:
            await trio.to_thread.run_sync(unlink_all, deleted, self.directory)
        except OSError as exc:
            error = exc
        # Only what is gone leaves the list (all of it, but for an error).
        gone = 0
        while gone < len(deleted) and not self.segments[gone].path.exists():
            gone += 1
        del self.segments[:gone]
        return error
