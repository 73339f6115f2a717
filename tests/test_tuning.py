"""The tuner: what /health says about a daemon is what the kernel says about it.

Daemons at free and enterprise are checked against /proc and the scheduler;
a daemon without the privileges the maximum tiers want must report each
refused knob as refused, with its reason. The knob logic and the buffer pool
are also tested in process (with the process-changing calls replaced, so the
test process keeps its own affinity, priority and memory).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from sprintd import tuning
from sprintd.server.buffers import BufferPool
from sprintd.settings import TuningSettings
from sprintd.tuning import Knob, Tuner, TuningReport

from .daemons import Daemon, DaemonFactory

KNOB_FIELDS = {"requested", "applied", "ok", "reason"}


def vm_locked_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"^VmLck:\s+(\d+) kB", status, flags=re.MULTILINE)
    assert found, status
    return int(found.group(1))


def assert_truthful(served: Daemon) -> dict[str, Any]:
    """/health's runtime and tuning agree with the kernel about the daemon."""
    locked_before = vm_locked_kib(served.pid)
    body = served.health()
    locked_after = vm_locked_kib(served.pid)
    runtime, knobs = body["runtime"], body["tuning"]
    pid = served.pid
    assert runtime["pid"] == pid

    for name, knob in knobs.items():
        assert set(knob) == KNOB_FIELDS, name
        assert (knob["reason"] is None) == knob["ok"], (name, knob)

    affinity = sorted(os.sched_getaffinity(pid))
    assert runtime["cpu_affinity"] == affinity
    assert knobs["cpu_affinity"]["applied"] == affinity

    nice = os.getpriority(os.PRIO_PROCESS, pid)
    assert runtime["priority"] == nice
    assert knobs["priority"]["applied"] == {"nice": nice}
    wanted = knobs["priority"]["requested"]["nice"]
    assert knobs["priority"]["ok"] == (wanted is None or wanted == nice)

    # Locked memory moves (MCL_FUTURE locks what is allocated later): bracket it.
    locked = runtime["memory_locked_kib"]
    low, high = sorted((locked_before, locked_after))
    assert low * 0.8 - 1024 <= locked <= high * 1.2 + 1024
    lock = knobs["lock_memory"]
    if lock["requested"] is True:
        assert lock["ok"] == (locked > 0) == (low > 0)
    else:
        assert locked == low == high == 0
    return body


# --- free and enterprise -------------------------------------------------------


def test_free_tier_is_cpython_as_it_comes(daemon: DaemonFactory) -> None:
    served = daemon()
    body = assert_truthful(served)
    runtime, knobs = body["runtime"], body["tuning"]
    assert body["tier"] == "free"
    assert runtime["gc"]["enabled"] is True
    assert runtime["gc"]["mode"] == "default"
    assert runtime["gc"]["frozen_objects"] == 0
    # Nothing pinned: the daemon may use every core this test may.
    assert runtime["cpu_affinity"] == sorted(os.sched_getaffinity(0))
    assert knobs["cpu_affinity"]["requested"] == {"max_cpu_cores": 0, "pin_worker": False}
    assert runtime["priority"] == os.getpriority(os.PRIO_PROCESS, 0)
    assert knobs["priority"]["requested"] == {"high_priority": False, "nice": None}
    assert runtime["memory_locked_kib"] == 0
    assert knobs["lock_memory"]["requested"] is False
    assert knobs["prealloc_buffers"]["requested"] is False
    assert knobs["prealloc_buffers"]["applied"]["buffers"] == 0
    assert all(knob["ok"] for knob in knobs.values()), knobs


def test_enterprise_tier_tells_the_truth(daemon: DaemonFactory) -> None:
    served = daemon("--tier", "enterprise")
    body = assert_truthful(served)
    runtime, knobs = body["runtime"], body["tuning"]
    assert body["tier"] == "enterprise"
    # Manual GC: off, with the start-up heap frozen.
    assert runtime["gc"]["enabled"] is False
    assert runtime["gc"]["mode"] == "manual"
    assert runtime["gc"]["frozen_objects"] > 0
    assert runtime["gc"]["gc_percent"] == 25
    assert knobs["gc"]["requested"] == {"mode": "manual", "gc_percent": 25}
    assert knobs["gc"]["ok"] is True
    # The worker (index 0) pinned to the first core it may use.
    assert knobs["cpu_affinity"]["requested"]["pin_worker"] is True
    assert runtime["cpu_affinity"] == [sorted(os.sched_getaffinity(0))[0]]
    assert knobs["priority"]["requested"] == {"high_priority": True, "nice": -10}
    assert knobs["lock_memory"]["requested"] is True
    assert knobs["prealloc_buffers"]["requested"] is True
    assert knobs["prealloc_buffers"]["applied"]["buffers"] == TuningSettings().buffer_count
    assert knobs["switch_interval"]["requested"] == pytest.approx(0.001)


def test_gc_percent_from_the_seed_name(daemon: DaemonFactory) -> None:
    served = daemon(env={"GC_PERCENT": "50"})
    body = assert_truthful(served)
    assert body["tuning"]["gc"]["requested"]["gc_percent"] == 50
    assert body["runtime"]["gc"]["gc_percent"] == 50


def test_max_cpu_cores_1_gives_one_core(daemon: DaemonFactory) -> None:
    served = daemon(env={"MAX_CPU_CORES": "1"})
    body = assert_truthful(served)
    first = sorted(os.sched_getaffinity(0))[0]
    assert body["runtime"]["cpu_affinity"] == [first]
    assert sorted(os.sched_getaffinity(served.pid)) == [first]
    assert body["tuning"]["cpu_affinity"]["requested"]["max_cpu_cores"] == 1
    assert body["tuning"]["cpu_affinity"]["ok"] is True


# --- refusals, for real --------------------------------------------------------


def _unprivileged() -> list[str]:
    """A command prefix without what the maximum tiers ask for: no real-time or
    nice headroom, 64 KiB of lockable memory, and (as root) no CAP_SYS_NICE or
    CAP_IPC_LOCK in the daemon's capability sets."""
    prlimit = shutil.which("prlimit")
    assert prlimit, "prlimit (util-linux) is needed"
    prefix = [prlimit, "--rtprio=0", "--nice=0", "--memlock=65536"]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed"
        prefix += [
            setpriv,
            "--inh-caps=-sys_nice,-ipc_lock",
            "--bounding-set=-sys_nice,-ipc_lock",
        ]
    return prefix


def test_refused_knobs_are_reported_as_refused(daemon: DaemonFactory) -> None:
    served = daemon(
        "--tier",
        "enterprise",
        env={"SPRINTD_TUNING__REALTIME": "true"},
        prefix=_unprivileged(),
    )
    body = assert_truthful(served)
    knobs = body["tuning"]

    priority = knobs["priority"]
    assert priority["ok"] is False
    assert priority["applied"] == {"nice": os.getpriority(os.PRIO_PROCESS, served.pid)}
    assert priority["applied"]["nice"] != -10
    assert "refused" in priority["reason"]

    realtime = knobs["realtime"]
    assert realtime["ok"] is False
    assert realtime["applied"] == {"policy": os.sched_getscheduler(served.pid)}
    assert os.sched_getscheduler(served.pid) != os.SCHED_FIFO
    assert "SCHED_FIFO" in realtime["reason"]

    lock = knobs["lock_memory"]
    assert lock["ok"] is False
    assert lock["applied"] == {"locked_kib": 0}
    assert body["runtime"]["memory_locked_kib"] == 0 == vm_locked_kib(served.pid)
    assert lock["reason"]

    # What could be applied still was.
    assert knobs["cpu_affinity"]["ok"] is True
    assert knobs["gc"]["ok"] is True
    assert body["runtime"]["gc"]["enabled"] is False

    # Each refusal is logged, and /metrics agrees.
    stderr = served.stderr()
    for name in ("priority", "realtime", "lock_memory"):
        assert f"tuning {name} not applied" in stderr
    metrics = served.get("/metrics").body.decode()
    for name, knob in knobs.items():
        expected = "1.0" if knob["ok"] else "0.0"
        assert f'sprintd_tuning_applied{{knob="{name}"}} {expected}' in metrics


# --- the knob logic, in process ------------------------------------------------


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise PermissionError(errno.EPERM, os.strerror(errno.EPERM))


def test_knob_report() -> None:
    report = TuningReport(
        {
            "a": Knob(requested=1, applied=1, ok=True),
            "b": Knob(requested=2, applied=0, ok=False, reason="no"),
            "c": Knob(requested=None, applied={"x": 1}, ok=True),
        }
    )
    assert report.refused == ["b"]
    assert report.as_dict() == {
        "a": {"requested": 1, "applied": 1, "ok": True, "reason": None},
        "b": {"requested": 2, "applied": 0, "ok": False, "reason": "no"},
        "c": {"requested": None, "applied": {"x": 1}, "ok": True, "reason": None},
    }


def test_priority_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning.os, "setpriority", _refuse)
    tuner = Tuner(TuningSettings(high_priority=True, nice=-7), worker_index=0)
    knob = tuner._priority()
    current = os.getpriority(os.PRIO_PROCESS, 0)
    assert knob.requested == {"high_priority": True, "nice": -7}
    assert knob.applied == {"nice": current}
    assert knob.ok is (current == -7)
    assert knob.reason is not None
    assert "setpriority(-7) refused" in knob.reason


def test_priority_not_asked_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning.os, "setpriority", _refuse)
    knob = Tuner(TuningSettings(), worker_index=0)._priority()
    assert (knob.ok, knob.reason) == (True, None)
    assert knob.requested == {"high_priority": False, "nice": None}


def test_realtime_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning.os, "sched_setscheduler", _refuse)
    knob = Tuner(TuningSettings(realtime=True), worker_index=0)._realtime()
    assert knob.ok is False
    assert knob.applied == {"policy": os.sched_getscheduler(0)}
    assert knob.reason is not None
    assert "SCHED_FIFO refused" in knob.reason


def test_affinity_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tuning.os, "sched_setaffinity", _refuse)
    settings = TuningSettings(lock_os_thread=True)
    knob = Tuner(settings, worker_index=1)._affinity()
    allowed = sorted(os.sched_getaffinity(0))
    assert knob.requested == {"max_cpu_cores": 0, "pin_worker": True}
    # Nothing changed: the applied set is the one the process had.
    assert knob.applied == allowed
    assert knob.reason is not None
    assert "sched_setaffinity refused" in knob.reason
    assert knob.ok is (allowed == [allowed[1 % len(allowed)]])


def test_lock_memory_over_the_limit_is_not_attempted(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = {tuning.resource.RLIMIT_MEMLOCK: (65536, 65536)}
    real_getrlimit = tuning.resource.getrlimit
    monkeypatch.setattr(
        tuning.resource, "getrlimit", lambda which: limits.get(which) or real_getrlimit(which)
    )
    monkeypatch.setattr(tuning, "_has_ipc_lock", lambda: False)

    def no_libc(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("mlockall must not be called past the limit")

    monkeypatch.setattr(tuning.ctypes, "CDLL", no_libc)
    knob = Tuner(TuningSettings(lock_memory=True), worker_index=0)._lock_memory()
    assert knob.ok is False
    assert knob.requested is True
    assert knob.reason is not None
    assert "RLIMIT_MEMLOCK" in knob.reason


def test_lock_memory_not_asked_for() -> None:
    knob = Tuner(TuningSettings(), worker_index=0)._lock_memory()
    assert (knob.requested, knob.ok, knob.reason) == (False, True, None)


# --- the buffer pool -----------------------------------------------------------


def test_preallocated_pool() -> None:
    pool = BufferPool(3, 4096, preallocate=True)
    assert pool.available == 3
    bufs = [pool.acquire() for _ in range(3)]
    assert all(isinstance(b, bytearray) and len(b) == 4096 for b in bufs)
    assert len({id(b) for b in bufs}) == 3
    assert pool.available == 0
    assert pool.misses == 0
    extra = pool.acquire()
    assert pool.misses == 1
    assert len(extra) == 4096
    for buf in [*bufs, extra]:
        pool.release(buf)
    # Never more than its capacity: the extra buffer is dropped.
    assert pool.available == 3
    # Released buffers are reused, not remade.
    again = pool.acquire()
    assert any(again is b for b in [*bufs, extra])
    assert pool.misses == 1


def test_pool_without_preallocation() -> None:
    pool = BufferPool(2, 8192, preallocate=False)
    assert pool.available == 0
    buf = pool.acquire()
    assert pool.misses == 1
    assert len(buf) == 8192
    pool.release(buf)
    assert pool.available == 1
    assert pool.acquire() is buf
    assert pool.misses == 1


def test_tuner_builds_the_pool_from_the_settings() -> None:
    tuner = Tuner(
        TuningSettings(prealloc_buffers=True, buffer_count=5, buffer_size=4096), worker_index=0
    )
    assert tuner.pool.available == 5
    assert tuner.pool.size == 4096
