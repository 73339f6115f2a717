"""Applying a tier's tuning to the process, and telling the truth about it.

Each knob is requested by the settings, tried, and then read back from the
kernel or the interpreter: ``applied`` is what the process really has, never
what was asked for. A knob the kernel refused (no permission, no such
feature) keeps its reason, and /health and /metrics show it as refused.

Order matters: affinity and priority first (they shape everything after),
memory locking last among the process knobs, so it locks the preallocated
buffers too; the GC freeze waits until start-up is over (``finish``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import sys
from dataclasses import asdict, dataclass
from typing import Any

from .gcpolicy import GCPolicy
from .server.buffers import BufferPool
from .settings import TuningSettings

__all__ = ["Knob", "Tuner", "TuningReport", "vm_locked_kib"]

# mlockall flags from <sys/mman.h>.
MCL_CURRENT = 1
MCL_FUTURE = 2
# Lock memory only if the limit leaves this much room over the current RSS:
# with MCL_FUTURE, an allocation past the limit fails instead of paging.
MLOCK_HEADROOM = 4
# The capability's bit in /proc/self/status's CapEff (linux/capability.h).
CAP_IPC_LOCK = 14


@dataclass
class Knob:
    """One tuning knob: what the settings asked for, what the system gave, and why not."""

    requested: Any
    applied: Any
    ok: bool
    reason: str | None = None


@dataclass
class TuningReport:
    """Every knob ``Tuner.apply`` tried, by name, as ``/health`` shows them."""

    knobs: dict[str, Knob]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(knob) for name, knob in self.knobs.items()}

    @property
    def refused(self) -> list[str]:
        return [name for name, knob in self.knobs.items() if not knob.ok]


def vm_locked_kib() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmLck:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _has_ipc_lock() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def _rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Tuner:
    """Applies a ``TuningSettings`` to this process (one worker)."""

    def __init__(self, tuning: TuningSettings, *, worker_index: int) -> None:
        self.tuning = tuning
        self.worker_index = worker_index
        self.gc = GCPolicy(tuning.gc_mode, tuning.gc_percent)
        self.pool = BufferPool(
            tuning.buffer_count, tuning.buffer_size, preallocate=tuning.prealloc_buffers
        )
        self.report = TuningReport({})

    def apply(self) -> TuningReport:
        knobs = self.report.knobs
        knobs["cpu_affinity"] = self._affinity()
        knobs["priority"] = self._priority()
        if self.tuning.realtime:
            knobs["realtime"] = self._realtime()
        knobs["switch_interval"] = self._switch_interval()
        knobs["open_files"] = self._open_files()
        self.gc.configure()
        knobs["gc"] = Knob(
            requested={"mode": self.tuning.gc_mode, "gc_percent": self.tuning.gc_percent},
            applied=self.gc.state(),
            ok=True,
        )
        made = self.tuning.buffer_count if self.tuning.prealloc_buffers else 0
        knobs["prealloc_buffers"] = Knob(
            requested=self.tuning.prealloc_buffers,
            applied={"buffers": self.pool.available, "size": self.pool.size},
            ok=self.pool.available == made,
        )
        knobs["lock_memory"] = self._lock_memory()
        return self.report

    def finish(self) -> None:
        """Start-up is over: freeze the heap and record the GC state."""
        self.gc.started()
        knob = self.report.knobs.get("gc")
        if knob is not None:  # None: built but never applied (``sprintd.testing``)
            knob.applied = self.gc.state()

    # --- the knobs ---------------------------------------------------------

    def _affinity(self) -> Knob:
        requested: dict[str, Any] = {
            "max_cpu_cores": self.tuning.max_cpu_cores,
            # Only the tiers that ask pin: the free tier pins nothing, however
            # many workers it runs.
            "pin_worker": self.tuning.lock_os_thread,
        }
        if not hasattr(os, "sched_setaffinity"):
            return Knob(requested, None, False, "no sched_setaffinity on this platform")
        allowed = sorted(os.sched_getaffinity(0))
        if self.tuning.max_cpu_cores:
            allowed = allowed[: self.tuning.max_cpu_cores]
        # Worker i on core i: a worker per core keeps its caches warm and two
        # workers never contend for one core.
        target = {allowed[self.worker_index % len(allowed)]} if requested["pin_worker"] else allowed
        reason = None
        try:
            os.sched_setaffinity(0, target)
        except OSError as exc:
            reason = f"sched_setaffinity refused: {exc.strerror}"
        applied = sorted(os.sched_getaffinity(0))
        return Knob(requested, applied, applied == sorted(target), reason)

    def _priority(self) -> Knob:
        wanted = self.tuning.nice if self.tuning.high_priority else None
        reason = None
        if wanted is not None:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, wanted)
            except OSError as exc:
                reason = f"setpriority({wanted}) refused: {exc.strerror} (needs CAP_SYS_NICE)"
        applied = os.getpriority(os.PRIO_PROCESS, 0)
        return Knob(
            {"high_priority": self.tuning.high_priority, "nice": wanted},
            {"nice": applied},
            wanted is None or applied == wanted,
            reason,
        )

    def _realtime(self) -> Knob:
        reason = None
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
        except OSError as exc:
            reason = f"SCHED_FIFO refused: {exc.strerror} (needs CAP_SYS_NICE or RLIMIT_RTPRIO)"
        policy = os.sched_getscheduler(0)
        return Knob("SCHED_FIFO", {"policy": policy}, policy == os.SCHED_FIFO, reason)

    def _switch_interval(self) -> Knob:
        wanted = self.tuning.switch_interval_ms / 1000 if self.tuning.optimize_system else None
        if wanted is not None:
            sys.setswitchinterval(wanted)
        applied = sys.getswitchinterval()
        return Knob(wanted, applied, wanted is None or abs(applied - wanted) < 1e-9)

    def _open_files(self) -> Knob:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = hard if self.tuning.optimize_system else None
        reason = None
        if wanted is not None and soft != hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            except (OSError, ValueError) as exc:
                reason = f"RLIMIT_NOFILE refused: {exc}"
        applied = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return Knob(wanted, applied, wanted is None or applied == wanted, reason)

    def _lock_memory(self) -> Knob:
        if not self.tuning.lock_memory:
            return Knob(False, {"locked_kib": vm_locked_kib()}, True)
        libc_name = ctypes.util.find_library("c")
        if libc_name is None:
            return Knob(True, {"locked_kib": 0}, False, "no C library to call mlockall")
        soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft != hard:
            try:
                resource.setrlimit(resource.RLIMIT_MEMLOCK, (hard, hard))
                soft = hard
            except (OSError, ValueError):
                pass
        rss = _rss_bytes()
        reason = None
        # CAP_IPC_LOCK (root, or granted by the unit) is not bound by the limit;
        # anyone else must fit in it.
        if soft != resource.RLIM_INFINITY and not _has_ipc_lock() and soft < rss * MLOCK_HEADROOM:
            reason = (
                f"RLIMIT_MEMLOCK {soft >> 20} MiB is under {MLOCK_HEADROOM}x the "
                f"{rss >> 20} MiB resident; raise LimitMEMLOCK"
            )
        else:
            libc = ctypes.CDLL(libc_name, use_errno=True)
            if libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0:
                reason = f"mlockall refused: {os.strerror(ctypes.get_errno())}"
        locked = vm_locked_kib()
        return Knob(True, {"locked_kib": locked}, reason is None and locked > 0, reason)
