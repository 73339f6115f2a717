"""The latency recorder: HDR-style buckets, the ring of recent samples, merging.

Percentiles are checked against the nearest-rank definition: the p-th
percentile of n samples is the smallest sample with at least p% of the
samples at or below it, i.e. ``sorted(samples)[ceil(p * n) - 1]``. The
recorder answers with the upper bound of that sample's bucket, so it may be
higher by less than one bucket's width (1/32 of the value, ~3%), never lower.
"""

from __future__ import annotations

import math
from fractions import Fraction

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sprintd.latency import (
    BUCKETS,
    MAX_VALUE,
    RING_SIZE,
    Recorder,
    bucket_bounds,
    bucket_index,
    merged,
    summarize,
)

QUANTILES = ("0.5", "0.95", "0.99", "0.999")
# Nanoseconds from 0 to ~17 minutes, dense at the small end where buckets are exact.
samples_ns = st.lists(
    st.one_of(st.integers(0, 200), st.integers(0, 10**6), st.integers(0, 10**12)),
    min_size=1,
    max_size=400,
)


def nearest_rank(sorted_samples: list[int], q: str) -> int:
    rank = max(1, math.ceil(Fraction(q) * len(sorted_samples)))
    return sorted_samples[rank - 1]


def recorded(name: str, samples: list[int]) -> Recorder:
    rec = Recorder(name)
    for ns in samples:
        rec.record(ns)
    return rec


def within_a_bucket(reported: int, exact: int) -> bool:
    return exact <= reported <= bucket_bounds(bucket_index(exact))[1]


# --- buckets -------------------------------------------------------------------


def test_buckets_tile_the_range_without_gaps() -> None:
    previous_high = -1
    for index in range(BUCKETS):
        low, high = bucket_bounds(index)
        if index >= 64 and low == high == 0:
            break
        assert low == previous_high + 1, index
        assert bucket_index(low) == bucket_index(high) == index
        # ~3%: a bucket is never wider than 1/32 of its lower bound (past the exact ones).
        assert high - low + 1 <= max(1, low // 32)
        previous_high = high
    assert previous_high >= MAX_VALUE


@given(st.integers(0, MAX_VALUE))
def test_every_value_lies_in_its_bucket(value: int) -> None:
    low, high = bucket_bounds(bucket_index(value))
    assert low <= value <= high


# --- percentiles ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(samples_ns)
def test_percentiles_within_one_bucket_of_exact(samples: list[int]) -> None:
    rec = recorded("r", samples)
    ordered = sorted(samples)
    reported = rec.quantiles([float(q) for q in QUANTILES])
    for q, value in zip(QUANTILES, reported, strict=True):
        exact = nearest_rank(ordered, q)
        assert within_a_bucket(value, exact), (q, value, exact)
    summary = rec.summary()
    assert summary.count == len(samples)
    assert summary.min == ordered[0]
    assert summary.max == ordered[-1]
    assert summary.mean == pytest.approx(sum(samples) / len(samples))
    assert [summary.p50, summary.p95, summary.p99, summary.p999] == reported


def test_median_of_five_is_the_third() -> None:
    """Nearest rank: 3 of 5 samples lie at or below the median, not 2."""
    rec = recorded("r", [10, 20, 30_000, 40_000, 50_000])
    assert within_a_bucket(rec.summary().p50, 30_000), rec.summary().p50


@settings(max_examples=100, deadline=None)
@given(samples_ns)
def test_recent_summary_is_exact(samples: list[int]) -> None:
    rec = recorded("r", samples)
    recent = rec.recent_summary()
    ordered = sorted(samples)
    assert recent.count == len(samples)
    assert (recent.min, recent.max) == (ordered[0], ordered[-1])
    assert recent.mean == pytest.approx(sum(samples) / len(samples))
    # Exact samples, not bucket bounds: every figure is one of the samples.
    for value in (recent.p50, recent.p95, recent.p99, recent.p999):
        assert value in samples
    assert recent.p50 <= recent.p95 <= recent.p99 <= recent.p999


@settings(max_examples=50, deadline=None)
@given(samples_ns)
def test_summarize_a_slice_is_the_summary_of_a_recorder_of_it(samples: list[int]) -> None:
    """What the price engine's history does with the ring's newest samples."""
    newest = samples[len(samples) // 2 :]
    assert summarize(newest) == recorded("r", newest).recent_summary()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(
            # Past MAX_VALUE too: clamped the same way.
            st.one_of(st.integers(0, 200), st.integers(0, 10**12), st.integers(2**40, 2**42)),
            st.integers(0, 25_000),
        ),
        max_size=4,
    ),
    st.integers(0, RING_SIZE),
)
def test_record_many_is_record_repeated(runs: list[tuple[int, int]], before: int) -> None:
    one, many = Recorder("one"), Recorder("many")
    for rec in (one, many):
        for ns in range(before):  # the ring part-filled, so runs wrap around it
            rec.record(ns)
    for ns, times in runs:
        for _ in range(times):
            one.record(ns)
        many.record_many(ns, times)
    assert many.buckets == one.buckets
    assert many.recent() == one.recent()
    assert (many.count, many.total, many.min, many.max) == (one.count, one.total, one.min, one.max)


def test_empty_recorder() -> None:
    rec = Recorder("empty")
    assert rec.summary().count == 0
    assert rec.recent() == []
    assert rec.recent_summary().count == 0
    assert rec.fraction_at_or_below(1000) == 1.0
    assert list(rec.cumulative([10, 100])) == [0, 0]


def test_values_past_the_range_are_clamped() -> None:
    rec = recorded("r", [MAX_VALUE * 4])
    assert rec.max == MAX_VALUE
    assert rec.count == 1
    assert rec.quantiles([0.5]) == [MAX_VALUE]


# --- the ring ------------------------------------------------------------------


def test_ring_before_it_fills() -> None:
    rec = recorded("r", list(range(100)))
    assert rec.recent() == list(range(100))


@pytest.mark.parametrize("extra", [0, 1, 7_777, RING_SIZE, 2 * RING_SIZE + 3])
def test_ring_keeps_the_last_ten_thousand(extra: int) -> None:
    assert RING_SIZE == 10_000
    samples = list(range(1, RING_SIZE + extra + 1))
    rec = recorded("r", samples)
    assert rec.recent() == samples[-RING_SIZE:]
    assert rec.count == len(samples)
    recent = rec.recent_summary()
    assert recent.count == RING_SIZE
    assert recent.min == samples[-RING_SIZE]
    # The histogram keeps all time; the ring only the recent.
    assert rec.summary().min == 1


def test_reset_forgets_everything() -> None:
    rec = recorded("r", [5, 6, 7])
    rec.count_status(500)
    rec.reset()
    assert (rec.count, rec.total, rec.server_errors, rec.recent()) == (0, 0, 0, [])
    assert rec.name == "r"


# --- status counts, merging ----------------------------------------------------


def test_count_status() -> None:
    rec = Recorder("r")
    for status in (200, 204, 301, 400, 404, 499, 500, 503):
        rec.count_status(status)
    assert rec.client_errors == 3
    assert rec.server_errors == 2


@settings(max_examples=60, deadline=None)
@given(st.lists(samples_ns, min_size=1, max_size=4))
def test_merged_is_the_recorder_of_all_samples(groups: list[list[int]]) -> None:
    recorders = [recorded(f"r{i}", g) for i, g in enumerate(groups)]
    for i, rec in enumerate(recorders):
        rec.count_status(400 + 100 * (i % 2))
    everything = recorded("all", [ns for g in groups for ns in g])
    combined = merged("all", recorders)
    assert combined.name == "all"
    assert combined.count == everything.count
    assert combined.total == everything.total
    assert combined.buckets == everything.buckets
    assert (combined.min, combined.max) == (everything.min, everything.max)
    assert combined.summary() == everything.summary()
    assert combined.client_errors == sum(1 for i in range(len(groups)) if i % 2 == 0)
    assert combined.server_errors == sum(1 for i in range(len(groups)) if i % 2 == 1)
    # The inputs are untouched.
    assert [r.count for r in recorders] == [len(g) for g in groups]


def test_merged_with_an_empty_recorder() -> None:
    combined = merged("all", [Recorder("a"), recorded("b", [1000, 2000])])
    assert (combined.count, combined.min, combined.max) == (2, 1000, 2000)
    assert merged("none", []).count == 0


# --- cumulative counts and fractions -------------------------------------------


@settings(max_examples=150, deadline=None)
@given(samples_ns, st.lists(st.integers(0, 2 * 10**12), max_size=20))
def test_cumulative_is_monotone_and_ends_at_count(samples: list[int], bounds: list[int]) -> None:
    rec = recorded("r", samples)
    bounds = [*sorted(bounds), MAX_VALUE]
    counts = list(rec.cumulative(bounds))
    assert len(counts) == len(bounds)
    assert counts == sorted(counts)
    assert counts[-1] == rec.count == len(samples)
    for bound, count in zip(bounds, counts, strict=True):
        # Counted only when the whole bucket lies at or below the bound, so
        # never more than the samples at or below it, and at most one bucket short.
        exact = sum(1 for ns in samples if ns <= bound)
        low = bucket_bounds(bucket_index(min(bound, MAX_VALUE)))[0]
        assert sum(1 for ns in samples if ns < low) <= count <= exact


@settings(max_examples=150, deadline=None)
@given(samples_ns, st.integers(0, 2 * 10**12))
def test_fraction_at_or_below(samples: list[int], limit: int) -> None:
    rec = recorded("r", samples)
    fraction = rec.fraction_at_or_below(limit)
    exact = sum(1 for ns in samples if ns <= limit) / len(samples)
    low = bucket_bounds(bucket_index(min(limit, MAX_VALUE)))[0]
    below_bucket = sum(1 for ns in samples if ns < low) / len(samples)
    assert below_bucket <= fraction <= exact
    # At a bucket's upper bound the answer is exact.
    high = bucket_bounds(bucket_index(min(limit, MAX_VALUE)))[1]
    assert rec.fraction_at_or_below(high) == sum(1 for ns in samples if ns <= high) / len(samples)


def test_fraction_at_or_below_extremes() -> None:
    rec = recorded("r", [100, 200, 300, 5_000_000])
    assert rec.fraction_at_or_below(MAX_VALUE) == 1.0
    assert rec.fraction_at_or_below(99) == 0.0
    # 300 shares its bucket with 296..303: counted once the whole bucket is in.
    assert bucket_bounds(bucket_index(300)) == (296, 303)
    assert rec.fraction_at_or_below(302) == 0.5
    assert rec.fraction_at_or_below(303) == 0.75


@given(st.lists(st.integers(min_value=0, max_value=MAX_VALUE), max_size=200))
def test_an_exported_recorder_is_restored_whole(samples: list[int]) -> None:
    rec = Recorder("r")
    for ns in samples:
        rec.record(ns)
    rec.count_status(404)
    rec.count_status(503)
    back = Recorder.restored("r", msgpack.unpackb(msgpack.packb(rec.export())))
    assert back.buckets == rec.buckets
    assert back.summary() == rec.summary()
    assert (back.client_errors, back.server_errors) == (1, 1)


def test_a_restored_recorder_refuses_what_is_not_an_export() -> None:
    with pytest.raises(ValueError, match="not a recorder's export"):
        Recorder.restored("r", [1, 2])
