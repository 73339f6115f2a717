"""Token buckets on a clock the test moves: every answer is exact."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sprintd.access import RateLimit
from sprintd.http import retry_after_header as retry_after
from sprintd.ratelimit import LocalLimiter, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_allows_its_burst_then_refuses() -> None:
    clock = Clock()
    bucket = TokenBucket(1.0, 5, clock)
    assert [bucket.take() for _ in range(5)] == [0.0] * 5
    assert bucket.take() == pytest.approx(1.0)


def test_tokens_come_back_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(10.0, 50, clock)
    for _ in range(50):
        assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.1)
    clock.now += 0.25  # two and a half tokens
    assert bucket.take() == 0.0
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.05)


def test_a_long_pause_refills_to_the_burst_only() -> None:
    clock = Clock()
    bucket = TokenBucket(100.0, 3, clock)
    for _ in range(3):
        bucket.take()
    clock.now += 3600
    assert [bucket.take() == 0.0 for _ in range(4)] == [True, True, True, False]


def test_a_refused_request_spends_nothing() -> None:
    clock = Clock()
    bucket = TokenBucket(1.0, 1, clock)
    assert bucket.take() == 0.0
    for _ in range(100):
        assert bucket.take() > 0
    clock.now += 1.0
    assert bucket.take() == 0.0


@given(
    rate=st.floats(0.5, 1000),
    burst=st.integers(1, 3000),
    steps=st.lists(st.floats(0, 2), max_size=200),
)
def test_never_more_than_the_burst_plus_the_rate_over_time(
    rate: float, burst: int, steps: list[float]
) -> None:
    clock = Clock()
    bucket = TokenBucket(rate, burst, clock)
    start = clock.now
    allowed = 0
    for step in steps:
        clock.now += step
        if bucket.take() == 0.0:
            allowed += 1
        else:
            # The wait it names is enough, and not more than one token's time.
            wait = bucket.take()
            assert 0 < wait <= 1 / rate + 1e-9
    assert allowed <= burst + (clock.now - start) * rate + 1e-6


def test_the_local_limiter_gives_each_key_its_own_bucket() -> None:
    limiter = LocalLimiter(Clock())
    limit = RateLimit(rate=1, burst=1)
    a, b = limiter.bucket("a", limit), limiter.bucket("b", limit)
    assert a.take() == 0.0
    assert a.take() > 0
    assert b.take() == 0.0


@pytest.mark.parametrize(
    ("wait", "header"), [(0.001, b"1"), (0.99, b"1"), (1.0, b"1"), (1.01, b"2"), (59.5, b"60")]
)
def test_retry_after_rounds_up_to_whole_seconds(wait: float, header: bytes) -> None:
    assert retry_after(wait) == header
