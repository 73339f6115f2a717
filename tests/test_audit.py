"""The audit log: JSON lines, written by a thread, bounded, rotated by size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sprintd.audit import AuditLog, RotatingFile
from sprintd.settings import AuditSettings

from .daemons import wait_for


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def generations(path: Path) -> list[Path]:
    """The live file and its rotated ones, oldest first."""
    rotated = sorted(path.parent.glob(path.name + ".[0-9]*"), key=lambda p: -int(p.suffix[1:]))
    return [*rotated, path]


def test_events_are_written_as_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit" / "audit.log"
    audit = AuditLog(AuditSettings(file=path), worker=3)
    audit.emit("before_start", n=0)
    audit.start()
    for n in range(1, 100):
        audit.emit("thing", n=n, path="/x")
    audit.close()
    events = lines(path)
    assert [e["n"] for e in events] == list(range(100))
    assert events[0]["event"] == "before_start"
    assert {e["worker"] for e in events} == {3}
    assert {e["pid"] for e in events} == {os.getpid()}
    assert events[1]["ts"].endswith("Z")
    assert audit.written == 100
    assert audit.dropped == 0


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    audit = AuditLog(AuditSettings(queue_size=10))
    for n in range(25):
        audit.emit("flood", n=n)
    assert audit.dropped == 15
    assert [e["n"] for e in audit.take_pending()] == list(range(10))


def test_disabled_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(AuditSettings(enabled=False, file=path))
    audit.start()
    audit.emit("thing")
    audit.close()
    assert not path.exists()
    assert audit.take_pending() == []


def test_emit_does_not_wait_for_a_slow_writer(tmp_path: Path) -> None:
    """Deterministic: the writer is never started, so any wait would hang here."""
    audit = AuditLog(AuditSettings(file=tmp_path / "audit.log", queue_size=1000))
    for _ in range(5000):
        audit.emit("x")
    assert audit.dropped == 4000


def test_rotation_keeps_the_newest_files(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    file = RotatingFile(path, max_bytes=4096, backups=2)
    line = b"x" * 99 + b"\n"
    for _ in range(200):  # 20000 bytes: five files' worth
        file.write(line)
    file.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit.log",
        "audit.log.1",
        "audit.log.2",
        "audit.log.lock",
    ]
    for name in ("audit.log", "audit.log.1", "audit.log.2"):
        size = (tmp_path / name).stat().st_size
        assert 0 < size <= 4096
        assert size % 100 == 0  # whole lines only


def test_two_writers_share_one_file_through_rotation(tmp_path: Path) -> None:
    """Workers of one daemon: neither writes into a file the other rotated away."""
    path = tmp_path / "audit.log"
    one = RotatingFile(path, max_bytes=4096, backups=50)
    two = RotatingFile(path, max_bytes=4096, backups=50)
    for n in range(300):
        (one if n % 2 else two).write(b"%05d" % n + b"y" * 94 + b"\n")
    one.close()
    two.close()
    seen = []
    for file in generations(path):
        assert file.stat().st_size <= 4096
        seen += [int(line[:5]) for line in file.read_bytes().splitlines()]
    assert seen == list(range(300))


def test_with_no_backups_the_file_starts_again(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    file = RotatingFile(path, max_bytes=4096, backups=0)
    for _ in range(100):
        file.write(b"z" * 99 + b"\n")
    file.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audit.log", "audit.log.lock"]
    assert 0 < path.stat().st_size <= 4096


def test_a_write_failure_is_counted_and_reported(tmp_path: Path) -> None:
    # /dev/full accepts the open and fails every write with ENOSPC.
    audit = AuditLog(AuditSettings(file=Path("/dev/full")))
    audit.start()
    audit.emit("lost")
    wait_for(lambda: audit.lost)
    audit.close()
    assert audit.lost == 1
    assert audit.failure is not None and "No space" in audit.failure


def test_a_file_that_cannot_be_made_fails_at_start(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("a file, not a directory")
    with pytest.raises(OSError):
        AuditLog(AuditSettings(file=tmp_path / "plain" / "audit.log")).start()


def test_standard_output_gets_whole_lines() -> None:
    code = (
        "from sprintd.audit import AuditLog\n"
        "from sprintd.settings import AuditSettings\n"
        "a = AuditLog(AuditSettings())\n"
        "a.start()\n"
        "[a.emit('e', n=n) for n in range(50)]\n"
        "a.close()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert [json.loads(line)["n"] for line in done.stdout.splitlines()] == list(range(50))
