"""The write-ahead journal (``sprintd.journal``, ``sprintd.journal_format``).

Durability is tested by order, never by timing: a monkeypatched ``os.fsync``
counts calls, or blocks until the test lets it go, so "append returned before
its fsync" would show as an assertion, not as a flaky latency. Torn tails are
made by cutting a real journal's last record at every byte; the kill -9 test
SIGKILLs a real appending process.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from sprintd import journal_format
from sprintd.hookspecs import hookimpl
from sprintd.journal import (
    Journal,
    JournalClosed,
    JournalCorrupt,
    JournalError,
    JournalUnavailable,
    in_use,
    inspect,
)
from sprintd.settings import load_settings
from sprintd.testing import make_app

from .daemons import clean_environ

HEADER = journal_format.SEGMENT_HEADER.size


def record_size(stream: str, payload: bytes) -> int:
    return 8 + 9 + len(stream) + len(payload)


def segment_files(directory: Path) -> list[Path]:
    return [path for _, path in journal_format.segment_paths(directory)]


def data_end(path: Path | str) -> int:
    """Where a segment's records end: its size but for the preallocated zeros."""
    path = Path(path)
    (found,) = [s for s in inspect(path.parent).segments if s.path == path]
    return found.end


def records_only(path: Path) -> bytes:
    """A segment's bytes without its preallocated zeros, as a crash test cuts them."""
    return path.read_bytes()[: data_end(path)]


def _replay_all(directory: Path) -> list[tuple[int, str, bytes]]:
    """Every record of a closed journal, read without opening it."""
    return list(journal_format.read_records(inspect(directory).segments))


@asynccontextmanager
async def running(journal: Journal) -> AsyncIterator[Journal]:
    """The journal's writer running in the background; closed on the way out."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        yield journal
        nursery.cancel_scope.cancel()
    journal.close()


def build(directory: Path, records: Sequence[tuple[str, bytes]], **options: Any) -> list[int]:
    """A journal holding ``records``, written through the real API (from sync code)."""

    async def main() -> list[int]:
        journal = Journal(directory, **options)
        journal.open()
        async with running(journal):
            return [await journal.append(stream, payload) for stream, payload in records]

    return trio.run(main)


def _written_end(path: str) -> int:
    """``data_end`` of a segment the loop may be writing to meanwhile: this runs
    in the fsync's thread, and a read that meets the next batch half copied
    in sees damage, not a tail. That write lands within microseconds."""
    for _ in range(1000):
        try:
            return data_end(path)
        except JournalCorrupt:
            time.sleep(0.0001)
    return data_end(path)


class FsyncSpy:
    """``os.fsync`` replaced: counts calls, notes what each one covered, can hold them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[int] = []  # the segment data each fsync covered
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.error: OSError | None = None
        real = os.fsync

        def fsync(fd: int) -> None:
            self.entered.set()
            self.gate.wait()
            if self.error is not None:
                raise self.error
            path = os.readlink(f"/proc/self/fd/{fd}")
            self.calls.append(_written_end(path) if path.endswith(".wal") else -1)
            real(fd)

        monkeypatch.setattr(os, "fsync", fsync)


# --- appending and reading back ---------------------------------------------------


async def test_round_trip_in_order_with_streams_and_after(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", fsync="interval", fsync_interval_ms=1)
    report = journal.open()
    assert (report.records, report.next_seq, report.cut) == (0, 1, None)
    async with running(journal):
        one = await journal.append("orders", b"\x93\x01\x02\x03")
        two = await journal.append("payments", b"")
        many = await journal.append_many("orders", [b"a", bytearray(b"b"), b"c" * 1000])
        assert (one, two, list(many)) == (1, 2, [3, 4, 5])
        assert journal.last_seq == 5
        expected = [
            (1, "orders", b"\x93\x01\x02\x03"),
            (2, "payments", b""),
            (3, "orders", b"a"),
            (4, "orders", b"b"),
            (5, "orders", b"c" * 1000),
        ]
        assert list(journal.replay()) == expected
        assert list(journal.replay(after_seq=3)) == expected[3:]
        assert list(journal.replay(streams={"payments"})) == [expected[1]]
        assert list(journal.replay(after_seq=1, streams=["orders"])) == expected[2:]


async def test_bad_stream_names_and_payloads_are_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.open()
    async with running(journal):
        for bad in ("", ".hidden", "a/b", "x" * 65, "ordres\n", "é"):
            with pytest.raises(ValueError, match="stream name"):
                await journal.append(bad, b"x")
        with pytest.raises(ValueError, match="payload"):
            await journal.append("orders", bytes(journal_format.MAX_PAYLOAD + 1))
        assert journal.last_seq == 0
        assert await journal.append("orders-v2.x_y", b"ok") == 1


def test_sequence_continues_across_reopen(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    assert build(directory, [("orders", b"1"), ("payments", b"2")]) == [1, 2]
    assert build(directory, [("orders", b"3")]) == [3]
    journal = Journal(directory)
    report = journal.open()
    assert (report.records, report.first_seq, report.last_seq) == (3, 1, 3)
    assert report.streams == {"orders": 2, "payments": 1}
    assert [seq for seq, _, _ in journal.replay()] == [1, 2, 3]
    journal.close()


async def test_one_process_at_a_time(tmp_path: Path) -> None:
    first = Journal(tmp_path / "j")
    first.open()
    with pytest.raises(JournalError, match="another process"):
        Journal(tmp_path / "j").open()
    first.close()
    second = Journal(tmp_path / "j")
    second.open()
    second.close()
    with pytest.raises(JournalClosed):
        await second.append("orders", b"x")


# --- durability policies --------------------------------------------------------------


async def test_always_returns_only_after_the_fsync_that_covers_the_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "j", fsync="always")
    journal.open()
    spy = FsyncSpy(monkeypatch)
    (segment,) = segment_files(tmp_path / "j")
    end = HEADER
    async with running(journal):
        for i in range(20):
            payload = b"p%d" % i
            await journal.append("orders", payload)
            end += record_size("orders", payload)
            # An fsync that started once the record was in the file has returned.
            assert spy.calls and spy.calls[-1] >= end
            assert journal.synced_seq == i + 1
        # And it does not return while that fsync is held.
        spy.gate.clear()
        spy.entered.clear()
        done = trio.Event()

        async def append() -> None:
            await journal.append("orders", b"held")
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(append)
            await trio.to_thread.run_sync(spy.entered.wait)
            for _ in range(20):
                await trio.sleep(0.001)
            assert not done.is_set()
            assert data_end(segment) == end + record_size("orders", b"held")
            spy.gate.set()
        assert done.is_set()


def _fsync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "sprintd-journal-fsync"]


async def test_a_run_cancelled_during_an_fsync_waits_for_it_and_leaves_no_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "j", fsync="always")
    journal.open()
    spy = FsyncSpy(monkeypatch)
    spy.gate.clear()
    stopped = trio.Event()
    writer = trio.CancelScope()

    async def run() -> None:
        with writer:
            await journal.run()
        stopped.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        nursery.start_soon(journal.append, "orders", b"held")
        await trio.to_thread.run_sync(spy.entered.wait)
        assert len(_fsync_threads()) == 1
        writer.cancel()
        for _ in range(20):
            await trio.sleep(0.001)
        # The cancel waits for the fsync in its thread: never one left behind.
        assert not stopped.is_set()
        spy.gate.set()
    journal.close()
    assert journal.synced_seq == 1
    for thread in _fsync_threads():
        thread.join(10)
    assert _fsync_threads() == []


async def test_interval_returns_after_write_and_fsyncs_in_the_background(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "j", fsync="interval", fsync_interval_ms=5)
    journal.open()
    spy = FsyncSpy(monkeypatch)
    spy.gate.clear()  # every fsync blocks: appends must not wait for one
    (segment,) = segment_files(tmp_path / "j")
    end = HEADER
    async with running(journal):
        for i in range(50):
            await journal.append("orders", b"%d" % i)
            end += record_size("orders", b"%d" % i)
            # Written (a kill -9 keeps it) before append returned.
            assert data_end(segment) == end
        await trio.to_thread.run_sync(spy.entered.wait)  # the interval fsync began
        assert journal.synced_seq == 0
        spy.gate.set()
        with trio.fail_after(5):
            while journal.synced_seq < 50:
                await trio.sleep(0.005)
        assert spy.calls[-1] == end


async def test_os_never_fsyncs_appends_only_sync_and_shutdown_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "j", fsync="os")
    journal.open()
    spy = FsyncSpy(monkeypatch)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        seqs = await journal.append_many("orders", [b"x"] * 100)
        for _ in range(10):
            await trio.sleep(0.002)
        assert spy.calls == [] and journal.written_seq == 100 and journal.synced_seq == 0
        # sync() is the explicit way to make them durable.
        assert await journal.sync() == seqs[-1]
        assert len(spy.calls) == 1
        await journal.append("orders", b"y")
        assert len(spy.calls) == 1
        nursery.cancel_scope.cancel()
    # run() writes and fsyncs what is pending when it stops; close() has nothing left.
    assert len(spy.calls) == 2
    with pytest.raises(JournalClosed, match="stopped"):
        await journal.append("orders", b"nobody would write it")
    assert journal.write_snapshot("orders", journal.last_seq, b"at shutdown").exists()
    spy.calls = spy.calls[:2]  # the snapshot's own fsyncs
    journal.close()
    assert len(spy.calls) == 2


@pytest.mark.parametrize("policy", ["always", "interval"])
async def test_group_commit_many_appends_few_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str
) -> None:
    journal = Journal(tmp_path / "j", fsync=policy, fsync_interval_ms=2)  # type: ignore[arg-type]
    journal.open()
    spy = FsyncSpy(monkeypatch)
    writes = 0
    real_write = os.pwrite

    def counting_write(fd: int, data: Any, offset: int) -> int:
        nonlocal writes
        writes += 1
        return real_write(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", counting_write)
    seqs: list[int] = []
    async with running(journal):

        async def appender(i: int) -> None:
            for k in range(5):
                seq = await journal.append("orders", b"%d:%d" % (i, k))
                seqs.append(seq)

        async with trio.open_nursery() as nursery:
            for i in range(400):
                nursery.start_soon(appender, i)
        await journal.sync()
    assert sorted(seqs) == list(range(1, 2001))
    # 2000 appends from 400 tasks: a handful of batches, one write and at most
    # one fsync each.
    assert writes <= 40, writes
    assert len(spy.calls) <= 40, spy.calls
    # The journal's own counters agree with the system calls it made.
    assert journal.batches_written == writes
    assert journal.fsyncs <= len(spy.calls)
    assert [seq for seq, _, _ in _replay_all(tmp_path / "j")] == list(range(1, 2001))


async def test_a_cancelled_append_does_not_disturb_its_batch(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", fsync="always")
    journal.open()
    async with running(journal):
        results: list[int] = []

        async def append(payload: bytes) -> None:
            results.append(await journal.append("orders", payload))

        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                scope.cancel()
                with pytest.raises(trio.Cancelled):
                    await journal.append("orders", b"never queued")
            for i in range(10):
                nursery.start_soon(append, b"%d" % i)
            cancelled = trio.CancelScope()

            async def doomed() -> None:
                with cancelled:
                    await journal.append("orders", b"cancelled while waiting")

            nursery.start_soon(doomed)
            await trio.sleep(0)
            cancelled.cancel()
        assert len(results) == 10
        # The journal goes on; the cancelled record may or may not be in it.
        assert await journal.append("orders", b"after") == journal.last_seq
    assert b"never queued" not in [p for _, _, p in _replay_all(tmp_path / "j")]


async def test_a_failed_fsync_fails_the_waiters_and_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path / "j", fsync="always")
    journal.open()
    spy = FsyncSpy(monkeypatch)
    spy.error = OSError(5, "Input/output error")
    failures: list[BaseException] = []

    async def append() -> None:
        try:
            await journal.append("orders", b"x")
        except JournalError as exc:
            failures.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(append)
        # run() returns rather than raise: the daemon around it lives on.
        await journal.run()
    assert len(failures) == 5
    assert journal.failed is not None
    assert journal.unavailable is not None and "Input/output" in journal.unavailable
    with pytest.raises(JournalUnavailable, match="Input/output"):
        journal.admit()
    with pytest.raises(JournalError, match="failed"):
        await journal.append("orders", b"y")
    journal.close()


# --- torn tails and corruption --------------------------------------------------------

RECORDS = [("orders", b"\x92\x01\xa3buy"), ("payments", b"\x81\xa1a\x05"), ("orders", b"last!")]
_reference: dict[str, bytes] = {}


def reference_segment() -> bytes:
    """The bytes of a segment holding RECORDS, made once through the real API."""
    if "segment" not in _reference:
        with tempfile.TemporaryDirectory() as tmp:
            build(Path(tmp), RECORDS, fsync="os", segment_bytes=4096)
            (path,) = segment_files(Path(tmp))
            _reference["segment"] = path.read_bytes()[: data_end(path)]
    return _reference["segment"]


def open_damaged(data: bytes) -> tuple[Any, list[tuple[int, str, bytes]], bytes]:
    """Open a journal whose only segment is ``data``: (report, records, file after)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / journal_format.segment_name(1)
        path.write_bytes(data)
        before = inspect(Path(tmp))
        assert path.read_bytes() == data  # inspect reads only
        journal = Journal(tmp, segment_bytes=4096)
        report = journal.open()
        assert report == before
        records = list(journal.replay())
        journal.close()
        # Without the zeros open() preallocated (no payload in RECORDS ends in one).
        return report, records, path.read_bytes().rstrip(b"\0")


def test_every_cut_of_the_last_record_is_cut_and_reported() -> None:
    data = reference_segment()
    last = len(data) - record_size(*RECORDS[-1])
    for offset in range(last, len(data)):
        report, records, after = open_damaged(data[:offset])
        if offset == last:
            assert report.cut is None  # a clean end between records
        else:
            assert report.cut is not None, offset
            assert (report.cut.offset, report.cut.bytes) == (last, offset - last)
            assert "partial record" in report.cut.reason
        assert records == [(1, *RECORDS[0]), (2, *RECORDS[1])]
        assert after == data[:last]


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(0, 10_000), garbage=st.binary(max_size=64))
def test_a_torn_tail_with_any_garbage_is_cut_never_replayed(cut: int, garbage: bytes) -> None:
    data = reference_segment()
    last = len(data) - record_size(*RECORDS[-1])
    offset = last + cut % (len(data) - last)
    torn = data[:offset] + garbage
    report, records, after = open_damaged(torn)
    assert records == [(1, *RECORDS[0]), (2, *RECORDS[1])]
    assert after == data[:last]
    if torn[last:].strip(b"\0"):
        assert report.cut is not None
        assert (report.cut.offset, report.cut.bytes) == (last, len(torn) - last)
    else:
        assert report.cut is None  # zeros after a record: a preallocated, clean end


def test_a_flipped_byte_in_the_last_record_is_cut() -> None:
    data = reference_segment()
    last = len(data) - record_size(*RECORDS[-1])
    for offset in range(last, len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 0x20
        report, records, after = open_damaged(bytes(damaged))
        assert report.cut is not None and report.cut.offset == last, offset
        assert report.cut.bytes == len(data) - last
        assert records == [(1, *RECORDS[0]), (2, *RECORDS[1])]
        assert after == data[:last]


@pytest.mark.parametrize("where", ["payload", "length", "crc", "seq"])
def test_corruption_followed_by_valid_records_refuses_to_open(tmp_path: Path, where: str) -> None:
    data = bytearray(reference_segment())
    second = HEADER + record_size(*RECORDS[0])
    offset = {"payload": -1, "length": 4, "crc": 0, "seq": 8}[where]
    offset = second + record_size(*RECORDS[1]) - 1 if offset == -1 else second + offset
    data[offset] ^= 0x01
    directory = tmp_path / "j"
    directory.mkdir()
    path = directory / journal_format.segment_name(1)
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorrupt, match=rf"damaged at offset {second}.*verifies") as info:
        Journal(directory).open()
    assert "not a torn tail" in str(info.value) and path.name in str(info.value)
    assert path.read_bytes() == bytes(data)  # nothing was cut


def test_a_record_with_a_good_checksum_and_a_wrong_seq_is_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    build(directory, [("orders", b"a")])
    (path,) = segment_files(directory)
    # A well-formed record for seq 5 where seq 2 belongs.
    head = journal_format.LENGTH_SEQ.pack(9 + 6 + 1, 5, 6) + b"orders"
    crc = journal_format.CRC.pack(zlib.crc32(b"b", zlib.crc32(head)))
    path.write_bytes(records_only(path) + crc + head + b"b")
    with pytest.raises(JournalCorrupt, match="seq 5 where 2"):
        Journal(directory).open()


def test_a_torn_segment_before_a_segment_with_records_refuses(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    build(directory, [("orders", b"x" * 300)] * 30, segment_bytes=4096)
    first, *rest = segment_files(directory)
    assert rest
    first.write_bytes(records_only(first)[:-5])
    with pytest.raises(JournalCorrupt, match=f"{rest[0].name} after it holds a record"):
        Journal(directory).open()


def test_a_torn_new_segment_is_removed(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    build(directory, [("orders", b"x")] * 3)
    # A crash while rotation wrote the next segment's header.
    torn = directory / journal_format.segment_name(4)
    torn.write_bytes(journal_format.segment_header(4)[:10])
    journal = Journal(directory)
    report = journal.open()
    assert report.cut is not None and report.cut.removed == (torn,)
    assert not torn.exists() and report.last_seq == 3
    journal.close()
    assert build(directory, [("orders", b"y")]) == [4]


# --- snapshots ----------------------------------------------------------------------


async def test_snapshots_are_atomic_and_the_newest_readable_wins(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    journal = Journal(directory, fsync="os")
    journal.open()
    async with running(journal):
        assert journal.latest_snapshot("orders") is None
        await journal.append_many("orders", [b"x"] * 10)
        with pytest.raises(ValueError, match="written up to 10"):
            journal.write_snapshot("orders", 11, b"too new")
        journal.write_snapshot("orders", 3, b"three")
        await journal.snapshot("orders", 7, b"seven")
        assert journal.latest_snapshot("orders") == (7, b"seven")
        assert journal.synced_seq >= 7  # the records it covers are on disk first
        journal.write_snapshot("orders", 9, b"nine")
        folder = directory / "snapshots" / "orders"
        # Only the newest two are kept.
        assert sorted(p.name for p in folder.iterdir()) == [
            journal_format.snapshot_name(7),
            journal_format.snapshot_name(9),
        ]
        # A crash mid-write leaves a .tmp: it is not a snapshot.
        leftover = folder / (journal_format.snapshot_name(10) + ".tmp")
        leftover.write_bytes(b"half a snap")
        assert journal.latest_snapshot("orders") == (9, b"nine")
        # A newest snapshot that does not verify gives way to the one before.
        newest = folder / journal_format.snapshot_name(9)
        blob = bytearray(newest.read_bytes())
        blob[-1] ^= 0xFF
        newest.write_bytes(bytes(blob))
        assert journal.latest_snapshot("orders") == (7, b"seven")
    report = inspect(directory)
    assert [(i.seq, i.problem) for i in report.snapshots["orders"]] == [
        (9, "checksum mismatch"),
        (7, None),
    ]
    assert not report.clean
    again = Journal(directory)
    again.open()
    assert not leftover.exists()  # open() clears leftovers
    again.close()


def test_a_snapshot_newer_than_the_journal_refuses(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    build(directory, [("orders", b"x")] * 3)
    folder = directory / "snapshots" / "orders"
    folder.mkdir(parents=True)
    (folder / journal_format.snapshot_name(9)).write_bytes(journal_format.encode_snapshot(9, b"s"))
    with pytest.raises(JournalCorrupt, match="newer than the journal's last record"):
        Journal(directory).open()


# --- rotation and compaction --------------------------------------------------------


async def test_rotation_and_compaction(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    journal = Journal(directory, fsync="interval", fsync_interval_ms=1, segment_bytes=4096)
    journal.open()
    payload = b"o" * 200
    async with running(journal):
        for i in range(60):
            await journal.append("orders", payload)
            if i % 10 == 0:
                await journal.append("audit", b"a%d" % i)
        segments = journal.segments()
        assert len(segments) > 3
        for before, after in itertools.pairwise(segments):
            assert after.base_seq == before.last_seq + 1
            assert before.end <= 4096 + 2 * record_size("orders", payload)
        assert [p.name for _, p in journal_format.segment_paths(directory)] == [
            journal_format.segment_name(s.base_seq) for s in segments
        ]
        last = journal.last_seq
        # "audit" has records in the early segments and no snapshot: nothing goes.
        journal.write_snapshot("orders", last, b"book")
        assert journal.compact() == []
        # With both streams snapshotted, every segment but the active one goes.
        await journal.snapshot("audit", last, b"log")
        deleted = journal.compact()
        assert deleted == [s.path for s in segments[:-1]]
        assert all(not p.exists() for p in deleted)
        assert await journal.append("orders", b"after") == last + 1
    journal = Journal(directory)
    report = journal.open()
    assert report.first_seq == segments[-1].base_seq and report.last_seq == last + 1
    assert list(journal.replay(after_seq=last)) == [(last + 1, "orders", b"after")]
    journal.close()


async def test_compaction_keeps_the_records_after_the_older_kept_snapshot(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "j"
    journal = Journal(directory, fsync="os", segment_bytes=4096)
    journal.open()
    async with running(journal):
        for _ in range(40):
            await journal.append("orders", b"o" * 200)
        middle = journal.last_seq // 2
        journal.write_snapshot("orders", middle, b"older")
        journal.write_snapshot("orders", journal.last_seq, b"newer")
        journal.compact()
        # The newer snapshot could be unreadable: replay from the older must work.
        replayed = [seq for seq, _, _ in journal.replay(after_seq=middle)]
        assert replayed == list(range(middle + 1, journal.last_seq + 1))


async def test_a_hold_keeps_its_records_through_checkpoints_until_it_moves(
    tmp_path: Path,
) -> None:
    """A reader's hold (the history projector's) outweighs the streams' snapshots:
    periodic checkpoints compact nothing after it; moved on, they catch up."""
    directory = tmp_path / "j"
    journal = Journal(directory, fsync="os", segment_bytes=4096, checkpoint_records=20)
    journal.open()
    live = Counter()
    journal.register("orders", live.state)
    journal.hold("history", 10)
    async with running(journal):
        for i in range(400):
            payload = b"%06d" % i + b"o" * 100
            live.apply(payload)
            await journal.append("orders", payload)
        with trio.fail_after(10):
            while journal.last_checkpoint_seq < 380:
                await trio.sleep(0.01)
        # Checkpoints ran and would have compacted all but the last segments.
        assert journal.segments()[0].base_seq <= 11
        held = [seq for seq, _, _ in journal.replay(after_seq=10)]
        assert held == list(range(11, 401))
        journal.hold("history", 300)
        await journal.checkpoint("orders", live.state)
        first = journal.segments()[0].base_seq
        assert 11 < first <= 301
        journal.release("history")
        await journal.checkpoint("orders", live.state)
        assert journal.segments()[0].base_seq > first


@pytest.mark.parametrize(("max_bytes", "max_records"), [(100, None), (1 << 20, 7), (1 << 20, 1)])
async def test_read_after_tails_the_journal_a_span_at_a_time(
    tmp_path: Path, max_bytes: int, max_records: int | None
) -> None:
    """``read_after`` returns every acknowledged record once, in order, across
    segments, from any starting seq, however small its spans."""
    journal = Journal(tmp_path / "j", fsync="always", segment_bytes=4096)
    journal.open()
    async with running(journal):
        for i in range(120):
            await journal.append("orders" if i % 3 else "payments", b"%05d" % i * (1 + i % 7))
        expected = list(journal.replay())
        for start in (0, 7, 59, 119, 120):
            got: list[tuple[int, str, bytes]] = []
            position = None
            after = start
            while True:
                records, moved = await journal.read_after(
                    after, position, max_bytes=max_bytes, max_records=max_records
                )
                if not records and moved == position:
                    break
                assert max_records is None or len(records) <= max_records
                got += records
                after = records[-1][0] if records else after
                position = moved
            assert got == expected[start:]
        # Nothing past what is acknowledged: under always, what is fsynced.
        assert journal.acknowledged_seq == journal.synced_seq == 120


# --- settings -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tier", "policy", "interval"),
    [
        ("free", "os", None),
        ("pro", "interval", 10),
        ("business", "interval", 10),
        ("turbo", "interval", 1),
        ("enterprise", "always", None),
    ],
)
def test_the_tier_sets_the_fsync_policy(tier: str, policy: str, interval: float | None) -> None:
    journal = load_settings(environ={"TIER": tier}).settings.journal
    assert journal.fsync == policy
    if interval is not None:
        assert journal.fsync_interval_ms == interval


# --- the daemon's journal -----------------------------------------------------------


async def test_a_plugin_gets_the_daemons_journal(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    class Plugin:
        @hookimpl
        def sprintd_configure(self, app: Any) -> None:
            seen["journal"] = app.journal
            assert app.journal is seen["journal"]  # one per app

    app = make_app([Plugin()], environ={"SPRINTD_DATA_DIR": str(tmp_path), "TIER": "enterprise"})
    journal = seen["journal"]
    assert journal.directory == tmp_path / "journal" and journal.policy == "always"
    assert [check.name for check in app.health_checks] == ["journal"]
    async with trio.open_nursery() as nursery:
        for task in app.background:
            nursery.start_soon(task, app)
        assert await journal.append("orders", b"x") == 1
        assert app.health_checks[0].check()[0] == "pass"
        nursery.cancel_scope.cancel()
    app.teardown()
    reopened = Journal(tmp_path / "journal")  # the lock was released
    assert reopened.open().last_seq == 1
    reopened.close()


PROBE_PLUGIN = """
from sprintd.app import Route
from sprintd.hookspecs import hookimpl
from sprintd.http import Response

state = {}

@hookimpl
def sprintd_configure(app):
    state["journal"] = app.journal
    state["replayed"] = sum(1 for _ in app.journal.replay(streams={"probe"}))

@hookimpl
def sprintd_routes(app):
    async def append(request):
        seq = await state["journal"].append("probe", request.body)
        return Response.data({"seq": seq, "replayed": state["replayed"]})
    return [Route("POST", "/probe", append)]
"""


def test_a_daemon_opens_runs_and_closes_its_journal(
    daemon: Any, sprintd_cli: Callable[..., Any], tmp_path: Path
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "journal_probe.py").write_text(PROBE_PLUGIN)
    config = tmp_path / "probe.toml"
    config.write_text('plugins = ["journal_probe"]\n')
    data_dir = tmp_path / "data"
    for run in range(2):
        served = daemon(
            "--config", str(config), "--tier", "enterprise", data_dir=data_dir, pythonpath=[site]
        )
        assert "journal" in served.stderr() and "fsync always" in served.stderr()
        (check,) = served.health()["checks"]["journal"]
        assert check["status"] == "pass" and check["fsync"] == "always"
        for i in range(3):
            answer = served.request("POST", "/probe", body=b"%d" % i)
            assert answer.status == 200, answer.body
            assert answer.json() == {"seq": run * 3 + i + 1, "replayed": run * 3}
        assert in_use(data_dir / "journal")
        served.signal(signal.SIGTERM)
        assert served.wait() == 0
        assert not in_use(data_dir / "journal")  # closed at teardown
    assert [p for _, _, p in _replay_all(data_dir / "journal")] == [b"0", b"1", b"2"] * 2

    # Damage before valid records stops start-up with one line, and no change.
    (segment,) = segment_files(data_dir / "journal")
    damaged = bytearray(segment.read_bytes())
    damaged[HEADER + 12] ^= 0x01  # the first record's seq
    segment.write_bytes(bytes(damaged))
    args = ("run", "--port", "0", "--config", str(config), "--data-dir", str(data_dir))
    refused = sprintd_cli(*args, pythonpath=[site])
    assert refused.returncode == 2
    assert "config error: journal:" in refused.stderr and "not a torn tail" in refused.stderr
    assert segment.read_bytes() == bytes(damaged)


# --- the command line ---------------------------------------------------------------


def _write_cli_journal(data_dir: Path) -> None:
    records = [("orders", msgpack.packb({"side": "buy", "qty": i})) for i in range(5)]
    records.append(("payments", msgpack.packb(["p", b"\x00\xff"])))
    records.append(("payments", b"\xc1 not msgpack"))
    build(data_dir / "journal", records, fsync="os")


def test_cli_verify_and_replay(sprintd_cli: Callable[..., Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _write_cli_journal(data_dir)
    verify = sprintd_cli("journal", "verify", "--data-dir", str(data_dir), "--tier", "turbo")
    assert verify.returncode == 0, verify.stderr
    assert "records    7  seq 1..7" in verify.stdout
    assert "orders" in verify.stdout and "payments" in verify.stdout
    assert "tail       clean" in verify.stdout and "every 1 ms" in verify.stdout

    replay = sprintd_cli("journal", "replay", "--data-dir", str(data_dir))
    assert replay.returncode == 0, replay.stderr
    lines = replay.stdout.splitlines()
    assert len(lines) == 7
    assert lines[0] == '1\torders\t{"side":"buy","qty":0}'
    assert lines[5] == '6\tpayments\t["p",{"$base64":"AP8="}]'
    assert lines[6].startswith('7\tpayments\t{"$raw":')
    some = sprintd_cli(
        "journal", "replay", "--data-dir", str(data_dir), "--stream", "orders", "--after", "3"
    )
    assert [line.split("\t")[0] for line in some.stdout.splitlines()] == ["4", "5"]

    bad = sprintd_cli("journal", "verify", "--data-dir", str(data_dir), "--tier", "gold")
    assert bad.returncode == 2 and "config error" in bad.stderr

    journal = Journal(data_dir / "journal")
    journal.open()
    live = sprintd_cli("journal", "verify", "--data-dir", str(data_dir))
    journal.close()
    assert live.returncode == 0 and "open in a running daemon" in live.stderr


def test_cli_verify_reports_a_torn_tail_and_changes_nothing(
    sprintd_cli: Callable[..., Any], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    _write_cli_journal(data_dir)
    (segment,) = segment_files(data_dir / "journal")
    segment.write_bytes(records_only(segment)[:-3])
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (data_dir / "journal").iterdir()}
    verify = sprintd_cli("journal", "verify", "--data-dir", str(data_dir))
    assert verify.returncode == 1
    assert "TORN" in verify.stdout and segment.name in verify.stdout
    replay = sprintd_cli("journal", "replay", "--data-dir", str(data_dir))
    assert replay.returncode == 0 and len(replay.stdout.splitlines()) == 6
    assert "torn tail not shown" in replay.stderr
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (data_dir / "journal").iterdir()}
    assert after == before


def test_cli_verify_on_a_corrupt_journal(sprintd_cli: Callable[..., Any], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _write_cli_journal(data_dir)
    (segment,) = segment_files(data_dir / "journal")
    data = bytearray(segment.read_bytes())
    data[HEADER + 20] ^= 0x01  # inside the first record
    segment.write_bytes(bytes(data))
    verify = sprintd_cli("journal", "verify", "--data-dir", str(data_dir))
    assert verify.returncode == 1
    assert "not a torn tail" in verify.stderr


# --- kill -9 --------------------------------------------------------------------------

APPENDER = """
import sys, trio
from sprintd.journal import Journal

async def main():
    journal = Journal(sys.argv[1], fsync="interval", fsync_interval_ms=10)
    journal.open()
    async def appender(i):
        k = 0
        while True:
            payload = b"%d:%d" % (i, k)
            seq = await journal.append("orders", payload)
            sys.stdout.write(f"{seq} {payload.decode()}\\n")
            sys.stdout.flush()
            k += 1
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        for i in range(20):
            nursery.start_soon(appender, i)

trio.run(main)
"""


def test_kill_9_loses_no_acknowledged_record(tmp_path: Path) -> None:
    directory = tmp_path / "j"
    script = tmp_path / "appender.py"
    script.write_text(APPENDER)
    process = subprocess.Popen(
        [sys.executable, str(script), str(directory)],
        stdout=subprocess.PIPE,
        env=clean_environ(),
        start_new_session=True,
    )
    acknowledged: dict[int, bytes] = {}
    try:
        assert process.stdout is not None
        while len(acknowledged) < 3000:
            line = process.stdout.readline()
            assert line, "the appender stopped early"
            seq, payload = line.split()
            acknowledged[int(seq)] = payload
        os.kill(process.pid, signal.SIGKILL)
        # Whatever it acknowledged before dying counts too.
        for line in process.stdout:
            if line.endswith(b"\n"):
                seq, payload = line.split()
                acknowledged[int(seq)] = payload
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    journal = Journal(directory)
    report = journal.open()
    replayed = {seq: payload for seq, _, payload in journal.replay()}
    journal.close()
    assert list(replayed) == list(range(1, report.last_seq + 1))
    missing = [seq for seq in acknowledged if replayed.get(seq) != acknowledged[seq]]
    assert missing == [], f"{len(missing)} acknowledged records lost"
    shutil.rmtree(directory)


# --- checkpoints ------------------------------------------------------------------------


class Counter:
    """A stream's state for checkpoint tests: the records applied, in order."""

    def __init__(self) -> None:
        self.items: list[bytes] = []

    def load(self, data: bytes) -> None:
        self.items = msgpack.unpackb(data)

    def apply(self, payload: bytes) -> None:
        self.items.append(payload)

    def state(self) -> bytes:
        data: bytes = msgpack.packb(self.items)
        return data

    def digest(self) -> int:
        return zlib.crc32(b"".join(self.items))


def directory_bytes(directory: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file())


async def test_periodic_checkpoints_keep_the_directory_bounded_and_replay_the_same(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "j"
    options: dict[str, Any] = {
        "fsync": "os",
        "segment_bytes": 8192,
        "checkpoint_records": 50,
        "reserve_bytes": 0,
    }
    journal = Journal(directory, **options)
    journal.open()
    live = Counter()
    journal.register("orders", live.state)
    sizes = []
    async with running(journal):
        for i in range(3000):
            payload = b"%06d" % i + b"o" * 100
            live.apply(payload)  # applied, then appended before any await
            await journal.append("orders", payload)
            if i % 100 == 99:
                sizes.append(directory_bytes(directory))
        with trio.fail_after(10):
            while journal.last_checkpoint_seq < 2950:
                await trio.sleep(0.01)
    assert journal.checkpoints >= 20
    # 330 KB of records went through; the directory stays at the state, two
    # snapshots, two intervals of records and the active and spare segments.
    bound = 4 * 8192 + 2 * 50 * 130 + 3 * len(live.state())
    assert max(sizes[5:]) < bound, sizes
    assert len(segment_files(directory)) <= 4

    again = Journal(directory, **options)
    report = again.open()
    assert report.first_seq > 2000  # compacted
    restored = Counter()
    after, replayed = again.restore("orders", restored.load, restored.apply)
    again.close()
    assert after >= 2950 and replayed == 3000 - after
    assert restored.digest() == live.digest() and len(restored.items) == 3000


async def test_close_checkpoints_unless_the_journal_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "j"
    journal = Journal(directory, fsync="always")
    journal.open()
    live = Counter()
    journal.register("orders", live.state)
    async with running(journal):
        live.apply(b"one")
        await journal.append("orders", b"one")
    assert [seq for seq, _ in journal_format.snapshot_files(directory, "orders")] == [1]

    journal = Journal(directory, fsync="always")
    journal.open()
    journal.restore("orders", live.load, live.apply)
    journal.register("orders", live.state)
    spy = FsyncSpy(monkeypatch)
    spy.error = OSError(5, "Input/output error")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        live.apply(b"two")
        with pytest.raises(JournalError):
            await journal.append("orders", b"two")
    monkeypatch.undo()
    journal.close()
    # The state holds a command the journal never made durable: no snapshot claims it.
    assert [seq for seq, _ in journal_format.snapshot_files(directory, "orders")] == [1]


async def test_a_snapshot_the_disk_refuses_keeps_the_previous_one(tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True)
    try:
        journal = Journal(disk / "j", fsync="os", segment_bytes=64 * 1024, reserve_bytes=0)
        journal.open()
        async with running(journal):
            await journal.append("orders", b"x")
            assert await journal.checkpoint("orders", lambda: b"small") is not None
            big = b"s" * (2 * 1024 * 1024)  # more than the disk holds
            assert await journal.checkpoint("orders", lambda: big) is None
            assert journal.checkpoint_failures == 1
            assert journal.latest_snapshot("orders") == (1, b"small")
            assert not list((disk / "j" / "snapshots" / "orders").glob("*.tmp"))
            assert await journal.append("orders", b"y") == 2  # the journal goes on
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
