"""A full disk under a real daemon (``sprintd.journal``'s availability, the plugins' refusals).

The data directory is a tmpfs of a few MiB mounted for the test (the suite
runs as root), filled for real with a filler file. Nothing is timed: every
change of state is polled for with ``wait_for``; the journal's probe runs
every 50 ms so the polls are short.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sprintd.plugins.orders.client import EntryClient

from .daemons import Daemon, DaemonFactory, HTTPResult, wait_for

DISK = "8m"
ENV = {
    "SPRINTD_JOURNAL__SEGMENT_BYTES": str(1024 * 1024),
    "SPRINTD_JOURNAL__RESERVE_BYTES": str(1024 * 1024),
    "SPRINTD_JOURNAL__PROBE_INTERVAL_MS": "50",
    # Payments configured (nothing listens there): they journal too.
    "SPRINTD_PAYMENTS__DEFAULT_URL": "http://127.0.0.1:9",
    "SPRINTD_PAYMENTS__FALLBACK_URL": "http://127.0.0.1:9",
}
ENTRY = re.compile(r"serving orders-entry on (\S+):(\d+)")
JSON_HEADERS = {"Content-Type": "application/json"}
ORDER = {"symbol": "BTC-USD", "side": "buy", "price": "100.00", "qty": "0.01"}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK mounted under tmp_path; unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the file system has no byte left."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as file:
        chunk = b"\xff" * 65536
        with contextlib.suppress(OSError):
            while True:
                file.write(chunk)
        with contextlib.suppress(OSError):
            while True:
                file.write(b"\xff")
    with pytest.raises(OSError) as full:
        (disk / "probe").write_bytes(b"x" * 4096)
    assert full.value.errno == errno.ENOSPC
    return filler


def post(served: Daemon, path: str, body: dict[str, Any]) -> HTTPResult:
    return served.request("POST", path, json.dumps(body).encode(), JSON_HEADERS)


def entry(served: Daemon) -> EntryClient:
    found = ENTRY.search(served.stderr())
    assert found is not None
    return EntryClient(found.group(1), int(found.group(2)))


def refused(result: HTTPResult) -> bool:
    return result.status == 503 and result.json()["error"]["code"] == "journal_unavailable"


def test_a_full_disk_refuses_writes_serves_reads_and_recovers(
    small_disk: Path, daemon: DaemonFactory
) -> None:
    data_dir = small_disk / "data"
    served = daemon(data_dir=data_dir, env=ENV)
    acknowledged: dict[int, dict[str, Any]] = {}

    def order() -> HTTPResult:
        result = post(served, "/v1/orders", ORDER)
        if result.status == 201:
            acknowledged[result.json()["order_id"]] = result.json()
        return result

    for _ in range(20):
        assert order().status == 201
    assert served.get("/readyz").status == 200

    filler = fill(small_disk)
    # Commands admitted until the probe sees the disk full are written (into
    # the preallocated segments); then every write is refused, unapplied.
    last = wait_for(lambda: next(filter(refused, [order()]), None))
    assert last.headers["retry-after"] == "1"
    assert "journal" in last.json()["error"]["message"]
    assert refused(served.request("DELETE", f"/v1/orders/{min(acknowledged)}"))
    payment = {"correlationId": "4a7901b8-7d26-4d0d-aa85-3a1e2b3c4d5e", "amount": 19.9}
    paid = post(served, "/payments", payment)
    assert paid.status == 503 and paid.headers["retry-after"] == "1"
    assert paid.json()["error"]["code"] == "journal_unavailable"
    with entry(served) as client:
        newest = max(acknowledged)
        new, get = client.request([["new", ORDER], ["get", newest]])
        assert new[:2] == ["error", "journal_unavailable"]
        assert get[0] == "ok" and get[1]["order_id"] == newest

    # Reads, the fast path and /health answer; /readyz says why not.
    assert served.get(f"/v1/orders/{newest}").status == 200
    assert served.get("/v1/book/BTC-USD").status == 200
    assert served.get("/livez").status == 200
    ready = served.get("/readyz")
    assert ready.status == 503
    assert ready.json()["reason"] == "journal_unavailable"
    assert "free" in ready.json()["message"]
    (check,) = served.health()["checks"]["journal"]
    assert check["status"] == "warn" and check["writable"] is False and check["output"]
    next_id = served.health()["checks"]["orders"][0]["next_order_id"]
    assert next_id == max(acknowledged) + 1  # the refused orders got no id
    assert served.process.poll() is None

    # Space comes back: writes resume by themselves.
    filler.unlink()
    wait_for(lambda: order().status == 201)
    wait_for(lambda: served.get("/readyz").status == 200)
    for _ in range(5):
        assert order().status == 201

    # kill -9, restart: every acknowledged order is there, and nothing else.
    served.signal(signal.SIGKILL)
    served.process.wait()
    again = daemon(data_dir=data_dir, env=ENV)
    for order_id, body in acknowledged.items():
        found = again.get(f"/v1/orders/{order_id}")
        assert found.status == 200 and found.json()["order_id"] == order_id, body
    assert again.health()["checks"]["orders"][0]["next_order_id"] == max(acknowledged) + 1


def test_a_restart_on_a_full_disk_comes_up_not_ready_and_stays_up(
    small_disk: Path, daemon: DaemonFactory
) -> None:
    data_dir = small_disk / "data"
    served = daemon(data_dir=data_dir, env=ENV)
    made = [post(served, "/v1/orders", ORDER).json()["order_id"] for _ in range(10)]
    served.signal(signal.SIGKILL)
    served.process.wait()
    filler = fill(small_disk)

    again = daemon(data_dir=data_dir, env=ENV)
    ready = again.get("/readyz")
    assert ready.status == 503 and ready.json()["reason"] == "journal_unavailable"
    assert refused(post(again, "/v1/orders", ORDER))
    for order_id in made:
        assert again.get(f"/v1/orders/{order_id}").status == 200
    # Still up, still refusing, still answering: no crash loop.
    for _ in range(20):
        assert again.get("/livez").status == 200
        assert refused(post(again, "/v1/orders", ORDER))
    assert again.process.poll() is None

    filler.unlink()
    created = wait_for(
        lambda: next((r for r in [post(again, "/v1/orders", ORDER)] if r.status == 201), None)
    )
    assert created.json()["order_id"] == max(made) + 1
    wait_for(lambda: again.get("/readyz").status == 200)
