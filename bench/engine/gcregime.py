"""How the collector runs while an engine is measured, and what it cost.

"defaults": CPython's automatic collection, thresholds as they come. The only
thing the bench does is collect twice once the stream is built: a tuple of ints
is untracked by the first collection that looks at it, so the stream's million
tuples then weigh on no collection (a daemon decodes its commands as they
arrive and keeps none of them).

"tier": what the daemon does at its maximum tier (enterprise), with
``sprintd.gcpolicy.GCPolicy`` itself: ``configure()`` before the engine is
built, ``started()`` after it (a full collection, then ``gc.freeze()``), and
the policy's governor running as the daemon runs it, a Trio task beside the
work. The commands are fed in batches of ``BATCH`` with a Trio checkpoint
between batches, as a connection task yields between frames; that is when the
governor gets to collect the young generation, so its pauses fall between
commands and are reported as such, not inside any command's time. One
adjustment: the policy's heap baseline leaves out the stream's blocks, so its
growth trigger for full collections sees the heap a daemon would have.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from bench.engine.loads import Command
from bench.engine.variants import GCRegime
from sprintd.gcpolicy import GCPolicy
from sprintd.tiers import Tier, load_profile

__all__ = ["BATCH", "Pauses", "Regime"]

# Commands between two checkpoints: a batching client's frame. Small enough
# that the governor's 5 ms tick finds the loop free within ~0.3 ms at 1M ops/s.
BATCH = 256
TIER: Tier = "enterprise"

Step = Callable[[Sequence[Command]], None]


class Pauses:
    """Every collection's duration, per generation, through ``gc.callbacks``."""

    def __init__(self) -> None:
        self.count = [0, 0, 0]
        self.max_ns = [0, 0, 0]
        self.total_ns = [0, 0, 0]
        self.over_1ms = 0
        self._start = 0

    def __enter__(self) -> Pauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter_ns()
            return
        took = time.perf_counter_ns() - self._start
        gen = info["generation"]
        self.count[gen] += 1
        self.total_ns[gen] += took
        if took > self.max_ns[gen]:
            self.max_ns[gen] = took
        if took > 1_000_000:
            self.over_1ms += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "max_ns": self.max_ns,
            "total_ns": self.total_ns,
            "over_1ms": self.over_1ms,
        }


class Regime:
    def __init__(self, name: GCRegime) -> None:
        self.name = name
        self.policy: GCPolicy | None = None
        self.settings: dict[str, Any] = {}
        if name == "tier":
            tuning = load_profile(TIER).settings.get("tuning", {})
            self.settings = {
                "tier": TIER,
                "gc_mode": tuning.get("gc_mode", "default"),
                "gc_percent": tuning.get("gc_percent", 100),
            }
            self.policy = GCPolicy(self.settings["gc_mode"], self.settings["gc_percent"])

    def before_build(self) -> None:
        if self.policy is not None:
            self.policy.configure()

    def after_build(self, stream_blocks: int) -> None:
        if self.policy is None:
            gc.collect()
            gc.collect()
            return
        self.policy.started()
        self.policy.baseline = max(0, self.policy.baseline - stream_blocks)

    def drive(self, batches: Sequence[Sequence[Command]], step: Step) -> int:
        """Feed every batch to ``step``; return the nanoseconds that took."""
        if self.policy is None:
            began = time.perf_counter_ns()
            for batch in batches:
                step(batch)
            return time.perf_counter_ns() - began
        return _drive_under_trio(self.policy, batches, step)

    def state(self) -> dict[str, Any]:
        if self.policy is None:
            return {"enabled": gc.isenabled(), "thresholds": list(gc.get_threshold())}
        state: dict[str, Any] = self.policy.state()
        return {**self.settings, **state}


def _drive_under_trio(policy: GCPolicy, batches: Sequence[Sequence[Command]], step: Step) -> int:
    elapsed = 0

    async def main() -> None:
        nonlocal elapsed
        async with trio.open_nursery() as nursery:
            nursery.start_soon(policy.run)
            began = time.perf_counter_ns()
            for batch in batches:
                step(batch)
                await trio.lowlevel.checkpoint()
            elapsed = time.perf_counter_ns() - began
            nursery.cancel_scope.cancel()

    trio.run(main)
    return elapsed


def heap_blocks() -> int:
    return sys.getallocatedblocks()
