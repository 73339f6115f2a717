"""What one run measured: a ``Figures`` per load, in one shape whatever measured it.

Latency is kept as ``bench.engine.stats.summary`` has it (nanoseconds: count,
mean, max and a ladder of ``[percentile, value]``), whether it came from every
sample (in process, the feed clients) or from a load tool's own percentiles
(k6, wrk), so one table and one plot serve every load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.engine import stats
from bench.serving.load import Result

__all__ = ["Figures", "at", "from_tool"]


@dataclass
class Figures:
    key: str
    title: str
    # "in process", "HTTP" or "feed": the report's section.
    group: str
    updates_s: float
    latency: dict[str, Any]
    # What the load offered (updates/s), when it was a constant rate.
    offered: int | None = None
    # k6's dropped iterations, or the feed client's frames over 1 ms late.
    dropped: int = 0
    errors: int = 0
    # The engine's own figures over the load (GET /v1/price-engine/metrics).
    engine: dict[str, Any] | None = None
    # The daemon's CPU time over the load, as a share of one core.
    daemon_cpu: float | None = None
    notes: list[str] = field(default_factory=list)


def at(latency: dict[str, Any], p: float) -> float | None:
    """Nanoseconds at percentile ``p``; None when the ladder lacks it."""
    for q, value in latency["percentiles_ns"]:
        if q == p:
            return float(value)
    return float(latency["max_ns"]) if latency["count"] else None


def from_samples(samples: Sequence[int]) -> dict[str, Any]:
    return stats.summary(samples)


def from_tool(result: Result) -> dict[str, Any]:
    """A k6 or wrk result in the summary's shape."""
    return {
        "count": result.requests,
        "mean_ns": result.mean_ms * 1e6,
        "max_ns": result.max_ms * 1e6,
        "percentiles_ns": [[p, ms * 1e6] for p, ms in result.percentiles_ms],
    }
