"""What the soak watches: the daemon's RSS and open descriptors, from /proc, once a second.

A thread reads ``/proc/<pid>/status`` (VmRSS), lists ``/proc/<pid>/fd`` and
counts the established connections to the daemon's port in
``/proc/net/tcp``, on a fixed schedule while the loads run. The descriptors
that are not client connections (listeners, epoll, the journal, pipes) are
what must stay flat: the connections are the load tool's to open (k6 adds
a VU, and a keep-alive connection, whenever its VUs fall behind), and are
bounded by its VU count. ``trend`` fits a least-squares line to the samples
after the warm-up: "flat" means its slope is within the tolerance, so a
slow leak shows however noisy the curve is.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Sample", "Sampler", "Trend", "trend"]


@dataclass(frozen=True)
class Sample:
    t_s: float
    rss_mib: float
    fds: int
    connections: int

    @property
    def other_fds(self) -> int:
        """Descriptors besides the client connections."""
        return self.fds - self.connections


# /proc/net/tcp's state column for ESTABLISHED.
_ESTABLISHED = "01"


def _connections(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (the daemon's side)."""
    suffix = f":{port:04X}"
    count = 0
    for line in Path("/proc/net/tcp").read_text("ascii").splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(suffix) and fields[3] == _ESTABLISHED:
            count += 1
    return count


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text("ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS")


@dataclass
class Sampler:
    pid: int
    port: int
    interval_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        start = time.monotonic()
        tick = 0
        while not self._stop.is_set():
            try:
                fds = len(os.listdir(f"/proc/{self.pid}/fd"))
                rss = _rss_mib(self.pid)
                connections = _connections(self.port)
            except (OSError, RuntimeError):
                return  # the daemon is gone: the run reports what it has
            self.samples.append(Sample(time.monotonic() - start, rss, fds, connections))
            tick += 1
            # A fixed schedule: a slow read does not stretch the next interval.
            self._stop.wait(max(0.0, start + tick * self.interval_s - time.monotonic()))


@dataclass(frozen=True)
class Trend:
    """A least-squares line through (minutes, value), after the warm-up."""

    slope_per_min: float
    intercept: float
    low: float
    high: float
    points: int

    def flat(self, tolerance_per_min: float) -> bool:
        return abs(self.slope_per_min) <= tolerance_per_min


def trend(samples: list[Sample], warmup_s: float, attribute: str) -> Trend | None:
    """The trend of ``rss_mib`` or ``other_fds``; None with fewer than 10 samples after warm-up."""
    kept = [s for s in samples if s.t_s >= warmup_s]
    if len(kept) < 10:
        return None
    xs = [s.t_s / 60 for s in kept]
    ys = [float(getattr(s, attribute)) for s in kept]
    n = len(xs)
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    return Trend(slope, mean_y - slope * mean_x, min(ys), max(ys), n)
