"""Percentiles of per-command latencies, from every sample (no histogram)."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["PERCENTILES", "SLOWEST", "at", "summary"]

SLOWEST = 10

# HdrHistogram's ladder: each step a tenfold rarer tail, so the plot's
# percentile axis spaces them evenly.
PERCENTILES = (
    0.0,
    50.0,
    75.0,
    90.0,
    95.0,
    99.0,
    99.5,
    99.9,
    99.95,
    99.99,
    99.995,
    99.999,
    99.9995,
    99.9999,
)


def summary(samples: Sequence[int]) -> dict[str, Any]:
    """Count, mean, max, the ladder of percentiles and the slowest commands
    (their places in the stream), in nanoseconds."""
    ordered = sorted(samples)
    n = len(ordered)
    if not n:
        return {"count": 0, "mean_ns": 0.0, "max_ns": 0, "slowest": [], "percentiles_ns": []}
    return {
        "count": n,
        "mean_ns": sum(ordered) / n,
        "max_ns": ordered[-1],
        # Where the tail is: a collection, a dict resize, a preemption...
        "slowest": [
            [i, samples[i]] for i in heapq.nlargest(SLOWEST, range(n), key=samples.__getitem__)
        ],
        # A percentile as fine as one sample in the run is the max again:
        # left out, so a plot's line ends at the max alone.
        "percentiles_ns": [
            [p, ordered[_rank(p, n) - 1]] for p in PERCENTILES if 1 / (1 - p / 100) < 0.999 * n
        ],
    }


def at(summary: dict[str, Any], p: float) -> float:
    """The value at percentile ``p`` (one of ``PERCENTILES``) from a summary;
    too fine a percentile for the run's samples is its max."""
    for q, value in summary["percentiles_ns"]:
        if q == p:
            return float(value)
    if p not in PERCENTILES:
        raise KeyError(p)
    return float(summary["max_ns"])


def _rank(p: float, n: int) -> int:
    # Nearest rank; the epsilon keeps 0.99 * 100 = 99.00000000000001 at 99.
    return min(n, max(1, math.ceil(p / 100 * n - 1e-9)))
