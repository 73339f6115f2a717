"""Per-route latency recorders: an HDR-style histogram plus a ring of recent samples.

Strategy: a request's latency in nanoseconds lands in a log-linear bucket.
Values below 64 ns have a bucket each; above, every power of two is split into
32 linear sub-buckets, so a bucket is at most ~3% wide and 1,152 buckets cover
up to ~20 minutes. Recording is a few integer operations and two list stores,
cheap enough for every request on the fast path; percentiles are computed
only when someone asks (/health, /metrics, /v1/stats).

The ring keeps the last ``RING_SIZE`` samples exactly, for "what is it doing
now" figures; the histogram keeps everything since start (or reset).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["RING_SIZE", "Recorder", "Summary", "merged", "summarize"]

SUB_BITS = 5
SUB_COUNT = 1 << SUB_BITS
# Bucket index for value v: v itself below 2 * SUB_COUNT, else
# (shift << SUB_BITS) + (v >> shift) with shift = bit_length - (SUB_BITS + 1).
_EXACT_BITS = SUB_BITS + 1
MAX_SHIFT = 34
BUCKETS = (MAX_SHIFT + 2) << SUB_BITS
MAX_VALUE = (1 << (MAX_SHIFT + _EXACT_BITS)) - 1
RING_SIZE = 10_000


def _rank(q: float, n: int) -> int:
    """The nearest rank of quantile q among n samples (1-based); the epsilon
    keeps 0.95 * 20 = 19.000000000000004 at rank 19."""
    return max(1, math.ceil(q * n - 1e-9))


def bucket_index(value: int) -> int:
    bits = value.bit_length()
    if bits <= _EXACT_BITS:
        return value
    shift = bits - _EXACT_BITS
    return (shift << SUB_BITS) + (value >> shift)


def bucket_bounds(index: int) -> tuple[int, int]:
    """The smallest and largest value that land in a bucket."""
    if index < 2 * SUB_COUNT:
        return index, index
    shift = (index >> SUB_BITS) - 1
    mantissa = index - (shift << SUB_BITS)
    return mantissa << shift, ((mantissa + 1) << shift) - 1


@dataclass(frozen=True)
class Summary:
    """Latency figures in nanoseconds."""

    count: int
    mean: float
    min: int
    max: int
    p50: int
    p95: int
    p99: int
    p999: int

    def as_ms(self) -> dict[str, float | int]:
        scale = 1e-6
        return {
            "count": self.count,
            "mean": self.mean * scale,
            "min": self.min * scale,
            "max": self.max * scale,
            "p50": self.p50 * scale,
            "p95": self.p95 * scale,
            "p99": self.p99 * scale,
            "p99_9": self.p999 * scale,
        }


class Recorder:
    """Latency of one route; ``record`` is the only method on the hot path."""

    __slots__ = (
        "_pos",
        "_ring",
        "buckets",
        "client_errors",
        "count",
        "max",
        "min",
        "name",
        "server_errors",
        "total",
    )

    def __init__(self, name: str) -> None:
        self.name = name
        self.buckets = [0] * BUCKETS
        self._ring = array("q", bytes(8 * RING_SIZE))
        self._pos = 0
        self.count = 0
        self.client_errors = 0
        self.server_errors = 0
        self.total = 0
        self.min = MAX_VALUE
        self.max = 0

    def record(self, ns: int) -> None:
        # bucket_index inlined: a call costs as much as the arithmetic.
        bits = ns.bit_length()
        if bits <= _EXACT_BITS:
            self.buckets[ns] += 1
        elif bits <= MAX_SHIFT + _EXACT_BITS:
            shift = bits - _EXACT_BITS
            self.buckets[(shift << SUB_BITS) + (ns >> shift)] += 1
        else:
            ns = MAX_VALUE
            self.buckets[-1] += 1
        pos = self._pos
        self._ring[pos] = ns
        self._pos = pos + 1 if pos + 1 < RING_SIZE else 0
        self.count += 1
        self.total += ns
        # Comparisons, not max()/min(): a builtin call costs more on this path.
        if ns > self.max:
            self.max = ns
        if ns < self.min:
            self.min = ns

    def record_many(self, ns: int, times: int) -> None:
        """``record(ns)`` ``times`` times over, in one call: many events that
        share one latency (the updates one publish made visible)."""
        if times <= 1:
            if times:  # one event: record's way, without a ring slice
                self.record(ns)
            return
        bits = ns.bit_length()
        if bits <= _EXACT_BITS:
            self.buckets[ns] += times
        elif bits <= MAX_SHIFT + _EXACT_BITS:
            shift = bits - _EXACT_BITS
            self.buckets[(shift << SUB_BITS) + (ns >> shift)] += times
        else:
            ns = MAX_VALUE
            self.buckets[-1] += times
        # The ring keeps the last RING_SIZE samples: at most that many land.
        ring = self._ring
        pos = self._pos
        left = min(times, RING_SIZE)
        while left:
            run = min(left, RING_SIZE - pos)
            ring[pos : pos + run] = array("q", (ns,)) * run
            pos = (pos + run) % RING_SIZE
            left -= run
        self._pos = (self._pos + times) % RING_SIZE
        self.count += times
        self.total += ns * times
        if ns > self.max:
            self.max = ns
        if ns < self.min:
            self.min = ns

    def count_status(self, status: int) -> None:
        """Count a 4xx or 5xx answer; the latency is recorded apart."""
        if status >= 500:
            self.server_errors += 1
        elif status >= 400:
            self.client_errors += 1

    def reset(self) -> None:
        self.__init__(self.name)  # type: ignore[misc]

    def export(self) -> list[Any]:
        """The histogram and counters as msgpack takes them (the buckets that
        hold anything, by index), for ``restored`` in another process."""
        used = [[index, n] for index, n in enumerate(self.buckets) if n]
        return [
            used,
            self.count,
            self.total,
            self.client_errors,
            self.server_errors,
            self.min,
            self.max,
        ]

    @classmethod
    def restored(cls, name: str, state: Sequence[Any]) -> Recorder:
        """A recorder with the histogram and counters ``export`` gave (not the ring).

        Raises:
            ValueError: ``state`` is not what ``export`` returns.
        """
        try:
            used, count, total, client, server, low, high = state
            rec = cls(name)
            for index, n in used:
                rec.buckets[index] = int(n)
        except (TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"not a recorder's export: {exc}") from None
        rec.count, rec.total, rec.client_errors, rec.server_errors = count, total, client, server
        rec.min, rec.max = low, high
        return rec

    def recent(self) -> list[int]:
        """The last ``RING_SIZE`` samples (fewer before the ring has filled)."""
        if self.count < RING_SIZE:
            return list(self._ring[: self._pos])
        return list(self._ring[self._pos :]) + list(self._ring[: self._pos])

    def summary(self) -> Summary:
        """All-time figures from the histogram; percentiles are bucket upper bounds."""
        if not self.count:
            return Summary(0, 0.0, 0, 0, 0, 0, 0, 0)
        p50, p95, p99, p999 = self.quantiles((0.5, 0.95, 0.99, 0.999))
        return Summary(self.count, self.total / self.count, self.min, self.max, p50, p95, p99, p999)

    def recent_summary(self) -> Summary:
        """Exact figures over the ring."""
        return summarize(self.recent())

    def quantiles(self, qs: Sequence[float]) -> list[int]:
        targets = [_rank(q, self.count) for q in qs]
        out: list[int] = []
        seen = 0
        wanted = iter(targets)
        target = next(wanted)
        for index, n in enumerate(self.buckets):
            seen += n
            while seen >= target:
                out.append(min(bucket_bounds(index)[1], self.max))
                nxt = next(wanted, None)
                if nxt is None:
                    return out
                target = nxt
        return out + [self.max] * (len(qs) - len(out))

    def fraction_at_or_below(self, ns: int) -> float:
        """The share of samples whose bucket lies wholly at or below ``ns``."""
        if not self.count:
            return 1.0
        limit = bucket_index(min(ns, MAX_VALUE))
        if bucket_bounds(limit)[1] > ns:
            limit -= 1
        return sum(self.buckets[: limit + 1]) / self.count

    def cumulative(self, bounds_ns: Sequence[int]) -> Iterator[int]:
        """Counts at or below each bound (ascending), as Prometheus buckets want."""
        seen = 0
        index = 0
        for bound in bounds_ns:
            while index < BUCKETS and bucket_bounds(index)[1] <= bound:
                seen += self.buckets[index]
                index += 1
            yield seen


def summarize(samples: Sequence[int]) -> Summary:
    """Exact figures over some samples (a ring, or a slice of one)."""
    ordered = sorted(samples)
    if not ordered:
        return Summary(0, 0.0, 0, 0, 0, 0, 0, 0)

    def at(q: float) -> int:
        # Nearest rank: the smallest sample with at least q of them at or below it.
        return ordered[_rank(q, len(ordered)) - 1]

    return Summary(
        len(ordered),
        sum(ordered) / len(ordered),
        ordered[0],
        ordered[-1],
        at(0.5),
        at(0.95),
        at(0.99),
        at(0.999),
    )


def merged(name: str, recorders: Sequence[Recorder]) -> Recorder:
    """One recorder holding the histograms and counters of many (not their rings)."""
    out = Recorder(name)
    for rec in recorders:
        out.buckets = [a + b for a, b in zip(out.buckets, rec.buckets, strict=True)]
        out.count += rec.count
        out.total += rec.total
        out.client_errors += rec.client_errors
        out.server_errors += rec.server_errors
        out.max = max(out.max, rec.max)
        out.min = min(out.min, rec.min)
    return out
