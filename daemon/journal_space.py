"""Whether the journal can take new commands: room on disk, the reserve, a failure.

Plugins apply a command to their state and then append it, so a record that
could not be written for want of space would leave state the journal does
not hold. That is avoided by construction: a plugin asks ``admit()`` (or
reads ``unavailable``) *before* it applies a command, and the journal
refuses (``JournalUnavailable``, with ``retry_after``) while any of these
holds, the first one found being the reason given:

1. it failed (a write or fsync error other than "no space": for good);
2. a batch is held for want of space (``journal_writer``);
3. the next segment could not be preallocated (``journal_segments``): an
   admitted command is owed the active segment's room and the spare's;
4. the file system has less than ``reserve_bytes`` free: room for the
   snapshots that let compaction free space, and a margin before the disk
   is full.

Strategy: the inputs are set where they are learnt (the writer reports a
held batch and a failure, the probe the room and the free space) and
``unavailable`` is recomputed from all of them each time, so no path can
leave a stale reason behind. The probe (a ``run()`` task, every
``probe_interval`` on Trio's clock, or at once when the writer wants the
spare made again) retries the preallocation in a worker thread and reads the
free space with ``statvfs``: writes resume by themselves when space returns.
``make_room()`` does the same once, blocking, at ``open()``; on a full disk
it fails quietly and the journal opens all the same (replay only reads).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import trio

from .journal_format import JournalError
from .journal_segments import NOTHING_MADE, NOTHING_WANTED, Room, SegmentFiles

__all__ = ["Availability", "JournalUnavailable"]

log = logging.getLogger("sprintd.journal")


class JournalUnavailable(JournalError):
    """The journal cannot take new commands now: refuse them before applying them.

    ``retry_after``: seconds after which asking again may succeed.
    """

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Availability:
    """Why new commands are refused now (``unavailable``), and the probe that lifts it."""

    def __init__(self, files: SegmentFiles, *, reserve_bytes: int, probe_interval: float) -> None:
        self.files = files
        self.directory: Path = files.directory
        self.reserve_bytes = reserve_bytes
        self.probe_interval = probe_interval
        #: Why new commands are refused now, or None: see ``admit``.
        self.unavailable: str | None = None
        #: Called (no arguments) whenever ``unavailable`` changes.
        self.on_availability: list[Callable[[], None]] = []
        self._failure: BaseException | None = None
        self._space_error: str | None = None
        self._room_error: str | None = "not opened"
        self._free_bytes: int | None = None
        self._spare_wanted = trio.Event()

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

    # --- what the writer reports --------------------------------------------------

    def failed(self, exc: BaseException) -> None:
        self._failure = exc
        self._refresh()

    def held(self, reason: str) -> None:
        """A batch found no room: refuse until it is written; have the probe look for room."""
        self._space_error = reason
        self._refresh()
        self._spare_wanted.set()

    def unheld(self) -> None:
        """The held batch was written."""
        self._space_error = None
        self._refresh()

    def want_spare(self) -> None:
        """The spare was used (rotation): have the probe make the next one now."""
        self._spare_wanted.set()

    # --- the probe ------------------------------------------------------------------

    def make_room(self) -> None:
        """Preallocate what is missing and read the free space, blocking (at ``open()``)."""
        wanted = self.files.room_wanted()
        self._took(wanted[0], self.files.allocate(*wanted))

    async def probe(self) -> None:
        """Keep the spare made and the free space read; retry what a full disk refused."""
        while True:
            with trio.move_on_after(self.probe_interval):
                await self._spare_wanted.wait()
            self._spare_wanted = trio.Event()
            wanted = self.files.room_wanted()
            if wanted == NOTHING_WANTED:
                self._took(None, NOTHING_MADE)
            else:
                room = await trio.to_thread.run_sync(self.files.allocate, *wanted)
                self._took(wanted[0], room)

    def _took(self, first: int | None, room: Room) -> None:
        """Take in what ``allocate`` made, read the free space, recompute availability."""
        self._room_error = self.files.allocated(first, room)
        try:
            vfs = os.statvfs(self.directory)
            self._free_bytes = vfs.f_bavail * vfs.f_frsize
        except OSError:
            self._free_bytes = None
        self._refresh()

    def _refresh(self) -> None:
        """Recompute ``unavailable`` from every input; tell the listeners if it changed."""
        if self._failure is not None:
            reason = f"journal failed: {self._failure}; restart the daemon once the cause is fixed"
        elif self._space_error is not None:
            reason = f"no space to write the journal: {self._space_error}"
        elif self._room_error is not None:
            reason = (
                f"cannot preallocate journal segments ({self.files.segment_bytes} bytes each): "
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
