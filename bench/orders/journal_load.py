"""The core journal on its own: appends per second under group commit, and replay.

Appends come from many Trio tasks at once, each awaiting its record's
durability before sending the next, as a daemon's connections do; the
journal's writer batches whatever arrived while the previous batch was being
written and synced (group commit). Replay is ``open()`` plus reading every
record back (each crc checked again), as a daemon's start-up does.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import trio

from sprintd.journal import FsyncPolicy, Journal

__all__ = ["AppendResult", "ReplayResult", "measure_appends", "measure_replay"]

PAYLOAD = b"x" * 64  # about an order command's msgpack size
STREAM = "orders"


@dataclass(frozen=True)
class AppendResult:
    fsync: FsyncPolicy
    appenders: int
    records: int
    seconds: float
    batches: int
    fsyncs: int

    @property
    def per_second(self) -> float:
        return self.records / self.seconds

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"per_second": self.per_second}


@dataclass(frozen=True)
class ReplayResult:
    records: int
    open_s: float
    read_s: float
    bytes_on_disk: int

    @property
    def seconds(self) -> float:
        return self.open_s + self.read_s

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"seconds": self.seconds}


def measure_appends(
    base: Path, fsync: FsyncPolicy, appenders: int, records: int, *, interval_ms: float = 10.0
) -> AppendResult:
    """``records`` appends spread over ``appenders`` tasks; the time until the last is durable."""
    directory = Path(tempfile.mkdtemp(prefix="journal-", dir=base))
    journal = Journal(directory, fsync=fsync, fsync_interval_ms=interval_ms)
    journal.open()
    each = records // appenders

    async def appender() -> None:
        for _ in range(each):
            await journal.append(STREAM, PAYLOAD)

    async def main() -> float:
        async with trio.open_nursery() as outer:
            outer.start_soon(journal.run)
            began = time.perf_counter()
            async with trio.open_nursery() as inner:
                for _ in range(appenders):
                    inner.start_soon(appender)
            await journal.sync()
            took = time.perf_counter() - began
            outer.cancel_scope.cancel()
        return took

    try:
        seconds = trio.run(main)
    finally:
        journal.close()
        shutil.rmtree(directory, ignore_errors=True)
    return AppendResult(
        fsync, appenders, each * appenders, seconds, journal.batches_written, journal.fsyncs
    )


def measure_replay(base: Path, records: int) -> ReplayResult:
    """Write ``records`` records (no fsync wait), then time open() and a full replay."""
    directory = Path(tempfile.mkdtemp(prefix="replay-", dir=base))
    try:
        journal = Journal(directory, fsync="os")
        journal.open()

        async def fill() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(journal.run)
                chunk = [PAYLOAD] * 10_000
                for _ in range(records // len(chunk)):
                    await journal.append_many(STREAM, chunk)
                nursery.cancel_scope.cancel()

        trio.run(fill)
        journal.close()
        size = sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
        began = time.perf_counter()
        journal = Journal(directory, fsync="os")
        journal.open()
        opened = time.perf_counter()
        count = sum(1 for _ in journal.replay(streams={STREAM}))
        read = time.perf_counter() - opened
        journal.close()
        if count != records // 10_000 * 10_000:
            raise RuntimeError(f"replay gave {count} records, wrote {records}")
        return ReplayResult(count, opened - began, read, size)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
