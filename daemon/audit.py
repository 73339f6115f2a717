"""The audit log: one JSON line per security-relevant event, written off the hot path.

Events: ``config_loaded`` and ``tuning_applied`` at start-up,
``config_reloaded`` on SIGHUP, ``auth_failed`` (no key, an unknown key, a key
without the scope), ``rate_limited`` (sampled: at most one line per key per
``sample_interval``, counting the trips it stands for) and ``admin_action``
(every request to a route that needs the admin scope, with its status).
A line never holds a secret: keys are named by their configured name.

Strategy: ``emit`` is called on the event loop's thread; it stamps the event
and puts it on a ``queue.SimpleQueue`` (which never blocks and takes no lock
a writer could hold). A writer thread takes what is queued, encodes it as
JSON lines and writes the batch with one ``write`` to standard output (for
systemd's journal) or to a file that rotates by size. When the writer falls
behind by ``queue_size`` events, ``emit`` counts the event as dropped instead
of waiting: a flood of failures must not slow the requests that cause it.

Several workers may share one file: each writes whole batches under an
exclusive ``flock`` of ``<file>.lock``, and the one that finds the file full
rotates it (``file`` -> ``file.1`` -> ... ``file.<backups>``); the others see
the inode change and reopen.

Resource handling: ``start`` opens the sink and starts the thread; ``close``
writes what is queued and joins it. An ``AuditLog`` never started (in-process
tests) keeps its events queued for ``take_pending``.

The queue, the thread and the sinks are a ``LineWriter``, which the access
log (``sprintd.logs``) shares: any log written off the loop this way.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .settings import AuditSettings

__all__ = ["AuditLog", "LineWriter", "RotatingFile", "utc_stamp"]

# One batch is at most this many events, so one slow write is bounded too.
MAX_BATCH = 1000
# close() waits this long for the writer to finish what is queued.
CLOSE_TIMEOUT_S = 5.0
_STOP = object()


class RotatingFile:
    """An append-only file that rotates by size, safe to share between processes."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o640)
        self._fd = -1
        self._open()

    def _open(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)

    def _rotate(self) -> None:
        if self.backups == 0:
            os.truncate(self.path, 0)
            return
        for index in range(self.backups - 1, 0, -1):
            older = Path(f"{self.path}.{index}")
            if older.exists():
                older.rename(f"{self.path}.{index + 1}")
        self.path.rename(f"{self.path}.1")
        self._open()

    def write(self, data: bytes) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            try:
                moved = os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
            except FileNotFoundError:
                moved = True
            if moved:  # another process rotated it
                self._open()
            size = os.fstat(self._fd).st_size
            if size and size + len(data) > self.max_bytes:
                self._rotate()
            _write_all(self._fd, data)
        finally:
            fcntl.flock(self._lock, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock)


class _Stdout:
    def write(self, data: bytes) -> None:
        _write_all(1, data)

    def close(self) -> None:
        pass


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def utc_stamp(ts: float) -> str:
    """``ts`` (seconds since the epoch) as ISO 8601 in UTC, to the millisecond."""
    stamp = datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _line(event: dict[str, Any]) -> str:
    record = {**event, "ts": utc_stamp(event["ts"])}
    return json.dumps(record, separators=(",", ":"), default=str) + "\n"


class LineWriter:
    """Lines written off the event loop (the module's strategy, for any log).

    ``put`` queues an item, never blocking, and counts it dropped once
    ``queue_size`` are waiting; ``start`` opens the sink (standard output
    when ``file`` is None, else a ``RotatingFile``) and starts a thread that
    turns each batch into lines with ``line`` and writes it with one
    ``write``; ``close`` writes what is queued. ``written``, ``dropped`` and
    ``lost`` count what became of the items. Never started, it keeps them
    queued for ``take_pending``.
    """

    def __init__(
        self,
        name: str,
        file: Path | None,
        max_bytes: int,
        backups: int,
        queue_size: int,
        line: Callable[[Any], str],
    ) -> None:
        self.name = name
        self.file = file
        self.max_bytes = max_bytes
        self.backups = backups
        self.queue_size = queue_size
        self.line = line
        # Each counter has one writer thread: dropped is the loop's (queue
        # full), written and lost the writer's (a write that failed).
        self.written = 0
        self.dropped = 0
        self.lost = 0
        # The last write error, cleared by the next write that succeeds.
        self.failure: str | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._sink: RotatingFile | _Stdout | None = None
        self._thread: threading.Thread | None = None

    def put(self, item: Any) -> None:
        """Queue one item; never blocks."""
        if self._queue.qsize() >= self.queue_size:
            self.dropped += 1
            return
        self._queue.put(item)

    def start(self) -> None:
        """Open the sink and start the writer.

        Raises:
            OSError: the file (or its directory) cannot be opened.
        """
        if self._thread is not None:
            return
        self._sink = (
            _Stdout()
            if self.file is None
            else RotatingFile(self.file, self.max_bytes, self.backups)
        )
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Write what is queued, stop the writer, close the sink."""
        if self._thread is None:
            return
        self._queue.put(_STOP)
        self._thread.join(CLOSE_TIMEOUT_S)
        self._thread = None
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def take_pending(self) -> list[Any]:
        """The items queued and not written (all of them when never started)."""
        items = []
        with contextlib.suppress(queue.Empty):
            while True:
                item = self._queue.get_nowait()
                if item is not _STOP:
                    items.append(item)
        return items

    def _run(self) -> None:
        get = self._queue.get
        while True:
            batch = [get()]
            with contextlib.suppress(queue.Empty):
                while len(batch) < MAX_BATCH:
                    batch.append(self._queue.get_nowait())
            stop = any(item is _STOP for item in batch)
            items = [item for item in batch if item is not _STOP]
            if items:
                self._write(items)
            if stop:
                return

    def _write(self, items: list[Any]) -> None:
        assert self._sink is not None
        try:
            data = "".join(self.line(item) for item in items).encode("utf-8")
            self._sink.write(data)
        except OSError as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            self.lost += len(items)
            return
        self.failure = None
        self.written += len(items)


class AuditLog:
    """The worker's audit log (see the module's strategy).

    ``emit`` stamps and queues an event, never blocking; ``start`` opens the
    sink and starts the writer thread; ``close`` writes what is queued.
    ``written``, ``dropped`` and ``lost`` count what became of the events.
    """

    def __init__(self, settings: AuditSettings, worker: int = 0) -> None:
        self.settings = settings
        self.worker = worker
        self.pid = os.getpid()
        self.writer = LineWriter(
            "sprintd-audit",
            settings.file,
            settings.max_bytes,
            settings.backups,
            settings.queue_size,
            _line,
        )

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    @property
    def written(self) -> int:
        return self.writer.written

    @property
    def dropped(self) -> int:
        return self.writer.dropped

    @property
    def lost(self) -> int:
        return self.writer.lost

    @property
    def failure(self) -> str | None:
        return self.writer.failure

    def emit(self, event: str, **fields: Any) -> None:
        """Queue one event; never blocks. Values must be JSON-encodable (or str-able)."""
        if not self.settings.enabled:
            return
        self.writer.put(
            {"ts": time.time(), "event": event, "pid": self.pid, "worker": self.worker, **fields}
        )

    def start(self) -> None:
        """Open the sink and start the writer.

        Raises:
            OSError: the file (or its directory) cannot be opened.
        """
        if self.settings.enabled:
            self.writer.start()

    def close(self) -> None:
        """Write what is queued, stop the writer, close the sink."""
        self.writer.close()

    def take_pending(self) -> list[dict[str, Any]]:
        """The events queued and not written (all of them when never started)."""
        return self.writer.take_pending()
