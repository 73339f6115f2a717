"""Garbage-collection policy by tier, and the pause monitor.

CPython collects a generation when its allocation count passes a threshold,
and the oldest one when long-lived objects have grown by 25%. sprintd keeps
the young generations to the tier and takes the full collections over,
triggered the way Go's GOGC triggers them, so the seed's ``gc_percent`` keeps
its meaning: a full collection runs once the heap (pymalloc's allocated
blocks, ``sys.getallocatedblocks()``) has grown by ``gc_percent`` percent
since the last one.

Modes:
- default: CPython as it comes (700, 10, 10, its own full collections), and
  also a full collection once the heap has grown by ``gc_percent``.
- tuned: the start-up heap is frozen (``gc.freeze()``: never scanned again),
  the middle generation is collected every second young collection so it
  never piles up, and full collections are the governor's alone.
- manual: frozen, and automatic collection is off. Every ``MANUAL_TICK`` the
  governor collects the young and middle generations together, so the middle
  one holds one tick's survivors at most (a pause of well under 1 ms with an
  order book's);
  full collections run only when the loop has been idle for ``IDLE_CUSHION``,
  unless growth passes ``FORCE_FULL_FACTOR`` times ``gc_percent``: then memory
  wins over latency.

Every collection's pause is timed through ``gc.callbacks`` into a recorder per
generation; /metrics exposes them as a histogram.
"""

from __future__ import annotations

import gc
import sys
import time
from typing import Any, Literal

import trio
from trio.testing import wait_all_tasks_blocked

from .latency import Recorder

__all__ = ["GCPolicy", "PauseMonitor"]

GCMode = Literal["default", "tuned", "manual"]

# CPython's own thresholds; tuned ones keep the middle generation small
# (measured with bench/gcpause: 10 young batches of an order book's survivors
# made a 38 ms middle collection).
DEFAULT_THRESHOLDS = (700, 10, 10)
TUNED_THRESHOLDS = (2000, 1)
# Where full collections are the governor's: a threshold out of reach.
NEVER = 1_000_000_000
# How often the governor measures the heap: getallocatedblocks walks
# pymalloc's arenas, ~220 us on a half-million-order book (bench/engine).
TICK = 0.05
# manual mode collects the young generation more often: at 20k requests/s a
# 50 ms tick let 60k young objects pile up (a 13 ms collection). Every 5 ms,
# whatever gc.get_count() says: the count is allocations less deallocations,
# and an engine that frees as much as it allocates kept it under any limit
# while 17k survivors piled up (bench/engine: one 4 ms collection). A
# collection with nothing young costs well under a microsecond; the heap is
# still measured every TICK.
MANUAL_TICK = 0.005
# manual mode: "idle" means no task has run for this long.
IDLE_CUSHION = 0.002
# manual mode: a full collection waits for idle until growth passes this
# multiple of gc_percent, then runs anyway.
FORCE_FULL_FACTOR = 4


class PauseMonitor:
    """Times every collection, per generation, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.recorders = [Recorder(f"gc{gen}") for gen in range(3)]
        self._started = 0

    def install(self) -> None:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        else:
            self.recorders[info["generation"]].record(time.perf_counter_ns() - self._started)

    @property
    def max_pause_ns(self) -> int:
        return max(r.max for r in self.recorders)


class GCPolicy:
    """The tier's garbage-collection policy, applied to this process.

    ``configure`` sets the thresholds (automatic collection off in
    ``manual`` mode), ``started`` freezes the start-up heap, and in manual
    mode ``run`` is the background task that collects the young generation on
    a tick and full generations in idle time or by heap growth
    (``gc_percent``). ``state`` is what /health and /metrics show.
    """

    def __init__(self, mode: GCMode, percent: int) -> None:
        self.mode = mode
        self.percent = percent
        self.baseline = 0
        self.full_collections = 0
        self.monitor = PauseMonitor()

    def configure(self) -> None:
        """Set thresholds at start-up, before plugins build their state."""
        if self.mode == "default":
            gc.set_threshold(*DEFAULT_THRESHOLDS)
        else:
            gc.set_threshold(*TUNED_THRESHOLDS, NEVER)
        if self.mode == "manual":
            gc.disable()
        else:
            gc.enable()
        self.monitor.install()

    def started(self) -> None:
        """Start-up is over: freeze what it built, and measure the heap.

        The pause monitor starts afresh here: start-up's collections (the one
        before the freeze above all) are not pauses any request waited for.
        """
        if self.mode != "default":
            gc.collect()
            gc.freeze()
        self.baseline = sys.getallocatedblocks()
        for recorder in self.monitor.recorders:
            recorder.reset()

    def state(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "enabled": gc.isenabled(),
            "thresholds": list(gc.get_threshold()),
            "frozen_objects": gc.get_freeze_count(),
            "gc_percent": self.percent,
            "heap_blocks": sys.getallocatedblocks(),
            "full_collection_at_blocks": self._full_limit(1),
            "full_collections": self.full_collections,
            "max_pause_ms": self.monitor.max_pause_ns / 1e6,
            # Since start-up ended: count and longest pause per generation.
            "pauses": {
                str(gen): {"count": rec.count, "max_ms": rec.max / 1e6}
                for gen, rec in enumerate(self.monitor.recorders)
            },
        }

    def _full_limit(self, factor: int) -> int:
        return self.baseline + self.baseline * self.percent * factor // 100

    def _collect_full(self) -> None:
        gc.collect()
        self.full_collections += 1
        self.baseline = sys.getallocatedblocks()

    async def run(self) -> None:
        """The governor: a background task for the worker's lifetime."""
        manual = self.mode == "manual"
        tick = MANUAL_TICK if manual else TICK
        looks_per_measure = round(TICK / tick)
        looks = 0
        while True:
            await trio.sleep(tick)
            if manual:
                gc.collect(1)
            looks += 1
            if looks < looks_per_measure:
                continue
            looks = 0
            if sys.getallocatedblocks() <= self._full_limit(1):
                continue
            if not manual:
                self._collect_full()
                continue
            # Waiting for idle no longer than a young tick: the young
            # collections keep their pace meanwhile (a 50 ms wait let 16k
            # records pile up for the full collection to walk: 6 ms).
            with trio.move_on_after(tick):
                await wait_all_tasks_blocked(IDLE_CUSHION)
                self._collect_full()
                continue
            # No idle moment within a tick: a full collection only past the hard limit.
            if sys.getallocatedblocks() > self._full_limit(FORCE_FULL_FACTOR):
                self._collect_full()
