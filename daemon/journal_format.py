"""The journal's files on disk: segments, records, snapshots, and reading them back.

Everything here reads; nothing writes except ``write_snapshot_file``, which
``Journal`` calls. ``inspect`` is the read-only scan that both ``Journal.open``
(which then cuts what it reports) and ``sprintd journal verify`` (which only
prints it) are built on, so the command and the daemon cannot disagree about
what is damaged.

Layout of ``<data_dir>/journal``::

    00000000000000000001.wal        segments, named by the first seq they hold
    00000000000000500001.wal
    snapshots/<stream>/<seq>.snap   at most KEEP_SNAPSHOTS per stream
    SPARE                           the next segment, preallocated (no header yet)
    LOCK                            flock()ed by the process that has it open

A segment is a 24-byte header, then records back to back::

    header   magic "SPRINTDJ" | u32 version | u64 base seq | u32 crc32 of the 20 bytes before
    record   u32 crc32 | u32 length | u64 seq | u8 stream length | stream | payload

All integers are little-endian. A record's ``length`` counts the bytes after
it (seq, stream length, stream, payload); its crc32 covers the length field
and those bytes, so a damaged length fails the check like a damaged payload.
Sequence numbers are global (one counter for every stream) and gapless: each
record's seq is its predecessor's plus one, across segments too, which is how
a missing or reordered segment is caught.

Segments are preallocated (``posix_fallocate``) to their full size when they
are made, so a segment is its records followed by zeros up to its size. A
record never starts with a zero length, so zeros from a record boundary to
the end of the file are a **clean end**, not damage: the writer continues
there. A scan's ``end`` is that boundary, ``size`` the file's length.

What a scan accepts: records that verify, in order, up to the first that does
not (or the zeros of a clean end). What comes after that first bad record
decides what it is:

- nothing that verifies, in this segment or any later one: a **torn tail** (a
  write cut short by a crash, or never written back before a power loss). It
  is reported and, by ``Journal.open``, cut: the file is truncated at the last
  good record and later segments that hold no record are removed.
- a record that verifies, in this segment or a later one: **corruption** in
  the middle of the journal. ``JournalCorrupt`` is raised with the file, the
  offset and what to do; records are never skipped silently.

A record whose checksum holds but whose seq is not the next one, a segment
that starts at the wrong seq, and a snapshot newer than the journal's last
record are corruption too: no crash produces them.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "FORMAT_VERSION",
    "KEEP_SNAPSHOTS",
    "MAX_PAYLOAD",
    "JournalCorrupt",
    "JournalError",
    "JournalReport",
    "Position",
    "SegmentInfo",
    "SnapshotInfo",
    "TailCut",
    "inspect",
    "read_records",
    "read_span",
]

FORMAT_VERSION = 1
SEGMENT_MAGIC = b"SPRINTDJ"
SNAPSHOT_MAGIC = b"SPRINTDS"
SEGMENT_SUFFIX = ".wal"
SNAPSHOT_SUFFIX = ".snap"
SNAPSHOT_DIR = "snapshots"
LOCK_FILE = "LOCK"
SPARE_FILE = "SPARE"

# magic, version, base seq, crc32 of the first 20 bytes.
SEGMENT_HEADER = struct.Struct("<8sIQI")
# crc32, length, seq, stream length: the fixed part of every record.
RECORD_HEAD = struct.Struct("<IIQB")
# What the crc covers starts at the length field.
CRC_START = 4
# length, seq, stream length: packed by the writer before the crc is known.
LENGTH_SEQ = struct.Struct("<IQB")
CRC = struct.Struct("<I")
# What a record's length counts besides its stream name and payload: the seq
# and the stream length (LENGTH_SEQ without the length field itself).
LENGTH_FIXED = struct.calcsize("<QB")
# magic, version, seq, data length, crc32 of the data, crc32 of the 28 bytes before.
SNAPSHOT_HEADER = struct.Struct("<8sIQQII")

# A record is one command, not a state dump (that is what snapshots are for);
# the bound also lets a scan reject a damaged length without reading on.
MAX_PAYLOAD = 16 * 1024 * 1024
MAX_STREAM = 64
# seq, stream length and a one-byte stream name, with an empty payload.
MIN_LENGTH = LENGTH_FIXED + 1
MAX_LENGTH = LENGTH_FIXED + MAX_STREAM + MAX_PAYLOAD
# Snapshots kept per stream: the newest, and one before it in case the newest
# cannot be read (compaction keeps the journal back to the older one).
KEEP_SNAPSHOTS = 2

# A stream is a file-system name too (snapshots/<stream>/): no separators,
# no leading dot.
STREAM_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
SEQ_NAME = re.compile(r"(\d{20})")


class JournalError(Exception):
    """The journal cannot do what was asked; the message says why."""


class JournalCorrupt(JournalError):
    """Damage that is not a torn tail: the journal refuses to open."""


@dataclass(frozen=True)
class SegmentInfo:
    """One segment file, as a scan found it."""

    path: Path
    base_seq: int
    # base_seq - 1 when the segment holds no record.
    last_seq: int
    records: int
    # Bytes that verify, header included: where a torn tail is cut, and
    # where the writer goes on (the rest up to ``size`` is zeros).
    end: int
    # Bytes in the file, preallocation included.
    size: int
    streams: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TailCut:
    """A torn tail: what ``Journal.open`` cuts (and ``verify`` reports)."""

    # The segment whose tail is torn, and the offset of the first bad byte.
    segment: Path
    offset: int
    # Every byte cut, removed segments included.
    bytes: int
    reason: str
    # Segments removed whole: a torn header, or empty segments after the tear.
    removed: tuple[Path, ...] = ()

    def describe(self) -> str:
        where = f"{self.segment.name} at offset {self.offset}"
        text = f"{self.bytes} bytes from {where}: {self.reason}"
        if self.removed:
            text += f" (segments removed: {', '.join(p.name for p in self.removed)})"
        return text


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot file: its stream, the last record it covers, where it is, its size."""

    stream: str
    seq: int
    path: Path
    size: int
    # None if the snapshot verifies, else why not.
    problem: str | None = None


@dataclass(frozen=True)
class JournalReport:
    """What a scan of a journal directory found."""

    directory: Path
    segments: tuple[SegmentInfo, ...]
    cut: TailCut | None
    # Per stream, newest first.
    snapshots: Mapping[str, tuple[SnapshotInfo, ...]]
    # The seq the next record will get.
    next_seq: int

    @property
    def records(self) -> int:
        return sum(s.records for s in self.segments)

    @property
    def first_seq(self) -> int:
        """The first seq still in the journal (``next_seq`` if it holds none)."""
        for segment in self.segments:
            if segment.records:
                return segment.base_seq
        return self.next_seq

    @property
    def last_seq(self) -> int:
        return self.next_seq - 1

    @property
    def streams(self) -> dict[str, int]:
        """Records per stream."""
        counts: dict[str, int] = {}
        for segment in self.segments:
            for name, count in segment.streams.items():
                counts[name] = counts.get(name, 0) + count
        return dict(sorted(counts.items()))

    @property
    def clean(self) -> bool:
        """No torn tail to cut and every snapshot verifies."""
        return self.cut is None and not any(
            info.problem for infos in self.snapshots.values() for info in infos
        )


def check_stream(stream: str) -> bytes:
    """The stream name's bytes, as a record stores them (after a length byte).

    Raises:
        ValueError: not a valid stream name.
    """
    if not STREAM_NAME.fullmatch(stream):
        raise ValueError(
            f"stream name {stream!r}: 1-64 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return stream.encode("ascii")


def segment_name(base_seq: int) -> str:
    return f"{base_seq:020d}{SEGMENT_SUFFIX}"


def segment_header(base_seq: int) -> bytes:
    head = SEGMENT_HEADER.pack(SEGMENT_MAGIC, FORMAT_VERSION, base_seq, 0)[:-4]
    return head + CRC.pack(zlib.crc32(head))


def segment_paths(directory: Path) -> list[tuple[int, Path]]:
    """The segment files of a journal directory, oldest first."""
    found = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return []
    for entry in entries:
        stem, dot, suffix = entry.name.partition(".")
        if dot and "." + suffix == SEGMENT_SUFFIX and SEQ_NAME.fullmatch(stem):
            found.append((int(stem), Path(entry.path)))
    return sorted(found)


# --- scanning records -----------------------------------------------------------


@dataclass
class _Scan:
    end: int
    last_seq: int
    records: int
    streams: dict[bytes, int]
    # (offset, reason) of the first record that does not verify.
    problem: tuple[int, str] | None


def _scan_records(data: bytes, start: int, expect: int, path: Path) -> _Scan:
    """Every record from ``start`` that verifies, up to the first that does not.

    Raises:
        JournalCorrupt: a record verifies but does not carry the next seq.
    """
    unpack = RECORD_HEAD.unpack_from
    crc32 = zlib.crc32
    view = memoryview(data)
    size = len(data)
    off = start
    seq = expect - 1
    records = 0
    streams: dict[bytes, int] = {}
    problem: tuple[int, str] | None = None
    head = RECORD_HEAD.size
    while off < size:
        if size - off < head:
            if data.count(0, off) != size - off:
                problem = (off, f"partial record header ({size - off} of {head} bytes)")
            break
        crc, length, rseq, slen = unpack(data, off)
        if length == 0 and crc == 0 and data.count(0, off) == size - off:
            break  # the preallocated rest of the segment: a clean end
        end = off + 8 + length
        if length < MIN_LENGTH or length > MAX_LENGTH or not 0 < slen <= length - LENGTH_FIXED:
            problem = (off, f"impossible record length {length}")
            break
        if end > size:
            problem = (off, f"partial record ({size - off} of {end - off} bytes)")
            break
        if crc32(view[off + CRC_START : end]) != crc:
            problem = (off, "checksum mismatch")
            break
        if rseq != seq + 1:
            raise JournalCorrupt(
                f"{path} offset {off}: record seq {rseq} where {seq + 1} was expected "
                "(its checksum holds: this is not a torn write)"
            )
        name = data[off + head : off + head + slen]
        streams[name] = streams.get(name, 0) + 1
        records += 1
        seq = rseq
        off = end
    return _Scan(off, seq, records, streams, problem)


def _record_at(data: bytes, off: int) -> int | None:
    """The seq of a record that verifies at ``off``, else None."""
    if len(data) - off < RECORD_HEAD.size:
        return None
    crc, length, seq, slen = RECORD_HEAD.unpack_from(data, off)
    end = off + 8 + length
    if (
        length < MIN_LENGTH
        or length > MAX_LENGTH
        or end > len(data)
        or not 0 < slen <= length - LENGTH_FIXED
    ):
        return None
    if zlib.crc32(memoryview(data)[off + CRC_START : end]) != crc:
        return None
    return int(seq)


def _valid_record_after(data: bytes, bad: int) -> tuple[int, int] | None:
    """(offset, seq) of any record that verifies after offset ``bad``, else None.

    First where the bad record's own length points (a damaged payload leaves
    the length intact), then at every byte: slow (about 0.3 s per MiB) but it
    runs only when a record is damaged, over the rest of that one segment.
    """
    if not data[bad:].strip(b"\0"):
        return None  # zeros: a tail the file system extended but never wrote
    if len(data) - bad >= 8:
        (length,) = struct.unpack_from("<I", data, bad + 4)
        nxt = bad + 8 + length
        if bad < nxt < len(data):
            seq = _record_at(data, nxt)
            if seq is not None:
                return nxt, seq
    for off in range(bad + 1, len(data) - RECORD_HEAD.size + 1):
        seq = _record_at(data, off)
        if seq is not None:
            return off, seq
    return None


def _any_record(data: bytes) -> tuple[int, int] | None:
    """(offset, seq) of any record that verifies in a segment's bytes, else None."""
    start = SEGMENT_HEADER.size if len(data) > SEGMENT_HEADER.size else 0
    seq = _record_at(data, start)
    if seq is not None:
        return start, seq
    return _valid_record_after(data, start)


def _damage(path: Path, offset: int, reason: str, found: str) -> JournalCorrupt:
    return JournalCorrupt(
        f"{path} is damaged at offset {offset} ({reason}), but {found}: this is not a torn "
        "tail, so the journal will not open. Records after the damage would be lost by "
        f"cutting there; to accept that, truncate {path.name} to {offset} bytes and remove "
        "the segments after it (keep a copy first)."
    )


def inspect(directory: Path) -> JournalReport:
    """Scan a journal directory and report what it holds. Reads only.

    Args:
        directory: the journal directory (``<data_dir>/journal``); it need not exist.

    Returns:
        The segments, the torn tail that ``Journal.open`` would cut (if any),
        the snapshots, and the next seq.

    Raises:
        JournalCorrupt: damage that is not a torn tail (the message says where).
        JournalError: a segment of another format version.
        OSError: a file cannot be read.
    """
    paths = segment_paths(directory)
    segments: list[SegmentInfo] = []
    cut: TailCut | None = None
    cut_bytes = 0
    removed: list[Path] = []
    expect: int | None = None
    for base, path in paths:
        data = path.read_bytes()
        if cut is not None:
            # After a torn tail only segments without a single record may follow.
            found = _any_record(data)
            if found is not None:
                raise _damage(
                    cut.segment,
                    cut.offset,
                    cut.reason,
                    f"{path.name} after it holds a record (seq {found[1]})",
                )
            removed.append(path)
            cut_bytes += len(data)
            continue
        header_problem = _check_header(data, base, path)
        if header_problem is not None:
            found = _any_record(data)
            if found is not None:
                raise _damage(
                    path, 0, header_problem, f"a record (seq {found[1]}) verifies at {found[0]}"
                )
            cut = TailCut(path, 0, 0, header_problem)
            removed.append(path)
            cut_bytes += len(data)
            continue
        if expect is not None and base != expect:
            raise JournalCorrupt(
                f"{path.name} starts at seq {base} but the segment before it ends at "
                f"{expect - 1}: records are missing between them"
            )
        scan = _scan_records(data, SEGMENT_HEADER.size, base, path)
        if scan.problem is not None:
            offset, reason = scan.problem
            found = _valid_record_after(data, offset)
            if found is not None:
                raise _damage(
                    path, offset, reason, f"a record (seq {found[1]}) verifies at offset {found[0]}"
                )
            cut = TailCut(path, offset, 0, reason)
            cut_bytes += len(data) - offset
        segments.append(
            SegmentInfo(
                path=path,
                base_seq=base,
                last_seq=scan.last_seq,
                records=scan.records,
                end=scan.end,
                size=len(data),
                streams={k.decode("ascii", "replace"): v for k, v in scan.streams.items()},
            )
        )
        expect = scan.last_seq + 1
    if cut is not None:
        cut = TailCut(cut.segment, cut.offset, cut_bytes, cut.reason, tuple(removed))
    snapshots = list_snapshots(directory)
    newest = max((infos[0].seq for infos in snapshots.values() if infos), default=0)
    if expect is None:
        # No segment left: a new one continues after the newest snapshot.
        next_seq = newest + 1
    else:
        next_seq = expect
        if newest >= next_seq:
            stream = next(s for s, infos in snapshots.items() if infos and infos[0].seq == newest)
            raise JournalCorrupt(
                f"snapshot {stream} at seq {newest} is newer than the journal's last record "
                f"({next_seq - 1}): records written before that snapshot are missing"
            )
    return JournalReport(directory, tuple(segments), cut, snapshots, next_seq)


def _check_header(data: bytes, base: int, path: Path) -> str | None:
    """Why a segment's header is damaged, or None.

    Raises:
        JournalError: the header verifies but is not this format version.
        JournalCorrupt: the header verifies but names another seq than the file.
    """
    size = SEGMENT_HEADER.size
    if len(data) < size:
        return f"partial segment header ({len(data)} of {size} bytes)"
    magic, version, header_base, crc = SEGMENT_HEADER.unpack_from(data)
    if magic != SEGMENT_MAGIC or zlib.crc32(data[: size - 4]) != crc:
        return "damaged segment header"
    if version != FORMAT_VERSION:
        raise JournalError(
            f"{path}: journal format version {version}; this sprintd reads {FORMAT_VERSION}"
        )
    if header_base != base:
        raise JournalCorrupt(f"{path}: the header says it starts at seq {header_base}")
    return None


# --- reading records back -------------------------------------------------------


def _segment_records(
    data: bytes,
    end: int,
    after: int,
    wanted: Collection[str] | None,
    path: Path,
    start: int = SEGMENT_HEADER.size,
) -> Iterator[tuple[int, str, bytes, int]]:
    """The records in ``data[start:end]`` after seq ``after``, each with the offset past it."""
    unpack = RECORD_HEAD.unpack_from
    crc32 = zlib.crc32
    view = memoryview(data)
    names: dict[bytes, str] = {}
    head = RECORD_HEAD.size
    off = start
    while off < end:
        crc, length, seq, slen = unpack(data, off)
        nxt = off + 8 + length
        if nxt > end or crc32(view[off + CRC_START : nxt]) != crc:
            raise JournalCorrupt(f"{path} offset {off}: changed since the journal was opened")
        if seq > after:
            begin = off + head + slen
            raw = data[off + head : begin]
            name = names.get(raw)
            if name is None:
                name = names[raw] = raw.decode("ascii", "replace")
            if wanted is None or name in wanted:
                yield seq, name, data[begin:nxt], nxt
        off = nxt


def read_records(
    segments: Iterable[SegmentInfo],
    after_seq: int = 0,
    streams: Collection[str] | None = None,
) -> Iterator[tuple[int, str, bytes]]:
    """The records of verified segments, in seq order, each checked again.

    Reads each segment whole, up to the end its scan verified (a torn tail
    that has not been cut is never read).

    Raises:
        JournalCorrupt: a segment changed since it was scanned.
    """
    for segment in segments:
        if segment.last_seq <= after_seq:
            continue
        with open(segment.path, "rb") as file:
            data = file.read(segment.end)
        if len(data) < segment.end:
            raise JournalCorrupt(f"{segment.path}: shorter than when the journal was opened")
        for seq, name, payload, _ in _segment_records(
            data, segment.end, after_seq, streams, segment.path
        ):
            yield seq, name, payload


Position = tuple[int, int]
"""Where a reader that tails the journal stands: (a segment's base seq, the
offset of the next record in it)."""


def read_span(
    segments: Iterable[SegmentInfo],
    after_seq: int,
    until_seq: int,
    position: Position | None,
    max_bytes: int,
    max_records: int | None = None,
) -> tuple[list[tuple[int, str, bytes]], Position | None]:
    """The next records after ``after_seq``, up to ``until_seq``, from one segment.

    A tailing reader's step: it reads about ``max_bytes`` (at least one whole
    record) and returns at most ``max_records``, from ``position`` when that
    is in the first segment with a record after ``after_seq``, else from that
    segment's start, so that a reader keeping up reads each record once, not
    each segment once per step.
    Blocking: call it in a thread, with ``segments`` taken in the loop
    (``Journal.segments``) and a ``Journal.hold`` keeping them from compaction.

    Returns:
        The records, in seq order (``[]`` once none is there yet), and the
        position past the last one returned (``position`` if none was).

    Raises:
        JournalCorrupt: a segment changed since it was scanned.
        FileNotFoundError: a segment was compacted away (no hold kept it).
    """
    for segment in segments:
        if segment.last_seq <= after_seq:
            continue
        start = SEGMENT_HEADER.size
        if position is not None and position[0] == segment.base_seq:
            start = position[1]
        with open(segment.path, "rb") as file:
            file.seek(start)
            data = file.read(min(segment.end - start, max_bytes))
            if len(data) >= RECORD_HEAD.size:
                whole = 8 + RECORD_HEAD.unpack_from(data)[1]
                if len(data) < whole <= segment.end - start:
                    data += file.read(whole - len(data))
        # Only whole records: the chunk may end inside one.
        end = 0
        while end + RECORD_HEAD.size <= len(data):
            nxt = end + 8 + RECORD_HEAD.unpack_from(data, end)[1]
            if nxt > len(data):
                break
            end = nxt
        found: list[tuple[int, str, bytes]] = []
        past = start
        # Records up to after_seq are stepped over, not only skipped: a
        # reader that starts mid-segment must not read them again next time.
        for seq, name, payload, nxt in _segment_records(data, end, 0, None, segment.path, 0):
            if seq > until_seq or len(found) == max_records:
                break
            if seq > after_seq:
                found.append((seq, name, payload))
            past = start + nxt
        return found, (segment.base_seq, past)
    return [], position


# --- snapshots ------------------------------------------------------------------


def snapshot_name(seq: int) -> str:
    return f"{seq:020d}{SNAPSHOT_SUFFIX}"


def encode_snapshot(seq: int, data: bytes) -> bytes:
    head = SNAPSHOT_HEADER.pack(
        SNAPSHOT_MAGIC, FORMAT_VERSION, seq, len(data), zlib.crc32(data), 0
    )[:-4]
    return head + CRC.pack(zlib.crc32(head)) + data


def decode_snapshot(blob: bytes, seq: int) -> tuple[bytes | None, str | None]:
    """(data, None) if the snapshot verifies, else (None, why not)."""
    size = SNAPSHOT_HEADER.size
    if len(blob) < size:
        return None, "shorter than its header"
    magic, version, head_seq, length, data_crc, head_crc = SNAPSHOT_HEADER.unpack_from(blob)
    if magic != SNAPSHOT_MAGIC or zlib.crc32(blob[: size - 4]) != head_crc:
        return None, "damaged header"
    if version != FORMAT_VERSION:
        return None, f"format version {version}"
    if head_seq != seq:
        return None, f"header says seq {head_seq}"
    data = blob[size:]
    if len(data) != length or zlib.crc32(data) != data_crc:
        return None, "checksum mismatch"
    return data, None


def snapshot_files(directory: Path, stream: str) -> list[tuple[int, Path]]:
    """A stream's snapshot files, newest first (``.tmp`` leftovers are not snapshots)."""
    found = []
    try:
        entries = list(os.scandir(directory / SNAPSHOT_DIR / stream))
    except (FileNotFoundError, NotADirectoryError):
        return []
    for entry in entries:
        stem, dot, suffix = entry.name.partition(".")
        if dot and "." + suffix == SNAPSHOT_SUFFIX and SEQ_NAME.fullmatch(stem):
            found.append((int(stem), Path(entry.path)))
    return sorted(found, reverse=True)


def list_snapshots(directory: Path) -> dict[str, tuple[SnapshotInfo, ...]]:
    """Every stream's snapshots, newest first, each read and verified."""
    result: dict[str, tuple[SnapshotInfo, ...]] = {}
    try:
        streams = sorted(
            e.name for e in os.scandir(directory / SNAPSHOT_DIR) if STREAM_NAME.fullmatch(e.name)
        )
    except FileNotFoundError:
        return result
    for stream in streams:
        infos = []
        for seq, path in snapshot_files(directory, stream):
            blob = path.read_bytes()
            _, problem = decode_snapshot(blob, seq)
            infos.append(SnapshotInfo(stream, seq, path, len(blob), problem))
        if infos:
            result[stream] = tuple(infos)
    return result
