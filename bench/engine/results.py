"""What a run measured, per engine variant and load, and its JSON form."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.engine import stats
from bench.engine.variants import Variant

__all__ = ["LoadFigures", "StreamFacts", "VariantRun", "find"]


@dataclass
class StreamFacts:
    key: str
    title: str
    description: str
    ops: int
    mix: dict[str, int]
    traded_qty: int
    taking_orders: int
    resting_end: int
    resting_max: int
    sha256: str


@dataclass
class LoadFigures:
    # ops/s of each throughput run, in the order they ran.
    runs: list[float] = field(default_factory=list)
    # CPU time over wall time of each throughput run: below ~0.97, the runner
    # shared its CPU with something else for part of the run.
    cpu_shares: list[float] = field(default_factory=list)
    # The latency pass's result: percentiles, max, GC pauses (runner's JSON).
    latency: dict[str, Any] | None = None
    throughput_gc: list[dict[str, Any]] = field(default_factory=list)
    traded_qty: int | None = None

    @property
    def ops_s(self) -> float:
        return float(statistics.median(self.runs)) if self.runs else 0.0

    def at_us(self, p: float) -> float:
        assert self.latency is not None
        return stats.at(self.latency, p) / 1000

    @property
    def max_us(self) -> float:
        assert self.latency is not None
        return float(self.latency["max_ns"]) / 1000

    @property
    def gc_max_us(self) -> float:
        """The longest collection in the latency pass, inside a command or between two."""
        assert self.latency is not None
        return float(max(self.latency["gc_pauses"]["max_ns"])) / 1000


@dataclass
class VariantRun:
    variant: Variant
    loads: dict[str, LoadFigures] = field(default_factory=dict)
    memory: dict[str, Any] | None = None
    # What was not measured ("check", "<load> throughput", ...) -> why.
    failures: dict[str, str] = field(default_factory=dict)
    exact: bool = True

    @property
    def usable(self) -> bool:
        return "check" not in self.failures

    def figures(self, load: str) -> LoadFigures | None:
        figures = self.loads.get(load)
        return figures if figures is not None and figures.runs else None

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.variant.title,
            "gc": self.variant.gc,
            "failures": self.failures,
            "memory": self.memory,
            "loads": {
                key: {
                    "ops_per_s": fig.ops_s,
                    "ops_per_s_runs": fig.runs,
                    "cpu_share_runs": fig.cpu_shares,
                    "traded_qty": fig.traded_qty,
                    "latency": fig.latency,
                    "throughput_gc_pauses": fig.throughput_gc,
                }
                for key, fig in self.loads.items()
            },
        }


def find(runs: list[VariantRun], key: str, load: str) -> LoadFigures | None:
    for run in runs:
        if run.variant.key == key:
            return run.figures(load)
    return None
