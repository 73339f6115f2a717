"""The journal reader on damaged files: a report, a cut tail or an error, never a crash or a hang.

Segments are built here byte by byte in the journal's format (so the test
does not trust the writer it checks), then damaged: bytes flipped, inserted,
deleted, the file cut. Every scan (``inspect``), every read back
(``read_records``) and every ``Journal.open`` must answer with a report or
``JournalError`` (``JournalCorrupt`` for damage in the middle), within a
bound, and a report's records are always the undamaged prefix.
"""

from __future__ import annotations

import random
import shutil
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprintd.journal import Journal, JournalError, inspect, read_records
from sprintd.journal_format import (
    CRC,
    LENGTH_SEQ,
    decode_snapshot,
    encode_snapshot,
    segment_header,
    segment_name,
)

from .fuzzing import NOISE_PER_CALL, bounded, mutate, retained_per_call


def record(seq: int, stream: bytes, payload: bytes) -> bytes:
    head = LENGTH_SEQ.pack(9 + len(stream) + len(payload), seq, len(stream)) + stream
    return CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + head + payload


def segment(base: int, payloads: list[bytes]) -> bytes:
    body = b"".join(
        record(base + i, b"orders" if i % 2 else b"pay", p) for i, p in enumerate(payloads)
    )
    return segment_header(base) + body


def payloads(rng: random.Random, count: int) -> list[bytes]:
    return [rng.randbytes(rng.randint(0, 40)) for _ in range(count)]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("journal-fuzz")


def _fresh(scratch: Path) -> Path:
    directory = scratch / "journal"
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir()
    return directory


def _read(directory: Path, written: list[bytes]) -> None:
    """Scan, read back and open; what comes back is a prefix of what was written."""
    try:
        report = inspect(directory)
    except JournalError as exc:
        assert str(exc)
        return
    try:
        got = [payload for _, _, payload in read_records(report.segments)]
    except JournalError as exc:
        assert str(exc)
        return
    assert got == written[: len(got)]
    assert report.records == len(got)
    journal = Journal(directory)
    try:
        reopened = journal.open()
    except JournalError as exc:
        assert str(exc)
        return
    finally:
        journal.close()
    # Opening cut the torn tail: a second scan finds a clean journal.
    assert reopened.records == len(got)
    assert inspect(directory).cut is None


@given(
    st.randoms(use_true_random=False),
    st.integers(0, 20),
    st.integers(0, 6),
    st.booleans(),
)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_damaged_journal_reads_back_a_prefix_or_refuses(
    scratch: Path, rng: random.Random, count: int, edits: int, two: bool
) -> None:
    directory = _fresh(scratch)
    first = payloads(rng, count)
    files = {segment_name(1): segment(1, first)}
    written = list(first)
    if two:
        second = payloads(rng, rng.randint(0, 5))
        files[segment_name(count + 1)] = segment(count + 1, second)
        written += second
    damaged = rng.choice(sorted(files))
    files[damaged] = mutate(rng, files[damaged], edits)
    for name, data in files.items():
        (directory / name).write_bytes(data)
    with bounded(10):
        _read(directory, written)


@given(st.binary(max_size=600), st.integers(1, 2**64 - 1))
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_bytes_as_a_segment(scratch: Path, data: bytes, base: int) -> None:
    directory = _fresh(scratch)
    (directory / segment_name(base)).write_bytes(data)
    with bounded(10):
        _read(directory, [])


@given(st.binary(max_size=200), st.integers(0, 2**64 - 1))
def test_any_snapshot_blob_decodes_or_says_why(blob: bytes, seq: int) -> None:
    data, problem = decode_snapshot(blob, seq)
    assert (data is None) != (problem is None)
    good = encode_snapshot(seq, blob)
    assert decode_snapshot(good, seq) == (blob, None)


def test_a_large_damaged_segment_is_scanned_in_bounded_time(tmp_path: Path) -> None:
    """The byte-by-byte search for a record after damage is linear: a MiB takes
    well under a second, never the minutes a quadratic scan would."""
    rng = random.Random(5)
    # A MiB of garbage after good records: every offset is tried, none verifies.
    data = segment(1, payloads(rng, 100)) + rng.randbytes(1 << 20)
    (tmp_path / segment_name(1)).write_bytes(data)
    with bounded(20):
        report = inspect(tmp_path)
    assert report.records == 100
    assert report.cut is not None


def test_reading_keeps_nothing(tmp_path: Path) -> None:
    rng = random.Random(6)
    written = payloads(rng, 50)
    intact = segment(1, written)
    variants = [intact] + [mutate(rng, intact, 2) for _ in range(20)]
    path = tmp_path / segment_name(1)

    def run() -> None:
        for data in variants:
            path.write_bytes(data)
            try:
                report = inspect(tmp_path)
                list(read_records(report.segments))
            except JournalError:
                pass

    assert retained_per_call(run, 20) / len(variants) <= NOISE_PER_CALL * 10
