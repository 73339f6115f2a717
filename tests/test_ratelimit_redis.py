"""Rate limits shared through a real Redis: two limiters (two workers or two
instances) spend one key's allowance between them, and fall back to local
buckets while Redis is away."""

from __future__ import annotations

import pytest
import trio

from sprintd.access import RateLimit
from sprintd.ratelimit import LEASE_TICK, RedisLimiter
from sprintd.redis import Redis

from .daemons import DaemonFactory, wait_for


async def _spend(limiter: RedisLimiter, name: str, limit: RateLimit, seconds: float) -> int:
    bucket = limiter.bucket(name, limit)
    allowed = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(limiter.run)
        with trio.move_on_after(seconds):
            while True:
                if bucket.take() == 0.0:
                    allowed += 1
                await trio.sleep(0.0005)
        nursery.cancel_scope.cancel()
    return allowed


async def test_two_limiters_share_one_keys_rate(redis_url: str) -> None:
    limit = RateLimit(rate=100.0, burst=20)
    one, two = Redis(redis_url), Redis(redis_url)
    counts: list[int] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(one.run)
        nursery.start_soon(two.run)

        async def worker(redis: Redis) -> None:
            counts.append(await _spend(RedisLimiter(redis), "k", limit, 1.0))

        async with trio.open_nursery() as workers:
            workers.start_soon(worker, one)
            workers.start_soon(worker, two)
        nursery.cancel_scope.cancel()
    # Together: the burst plus one second of the rate, not twice that. Each
    # worker can end holding a lease it never spent, so the floor is lower.
    total = sum(counts)
    assert total <= limit.burst + limit.rate * 1.1, counts
    assert total >= limit.rate * 0.6, counts
    assert all(c > 0 for c in counts), counts


async def test_without_redis_each_worker_limits_on_its_own() -> None:
    # Nothing listens on port 1: the lease task fails, buckets stay local.
    redis = Redis("redis://127.0.0.1:1/0", connect_timeout=0.05)
    limit = RateLimit(rate=50.0, burst=5)
    limiter = RedisLimiter(redis)
    allowed = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(redis.run)
        allowed = await _spend(limiter, "k", limit, 0.5)
        nursery.cancel_scope.cancel()
    assert not limiter.shared
    # The local bucket's figures: its burst and half a second of its rate.
    assert limit.burst <= allowed <= limit.burst + limit.rate * 0.5 + 2


def test_a_lease_is_a_tick_of_the_rate_within_one_token_and_the_burst() -> None:
    limiter = RedisLimiter(Redis("redis://127.0.0.1:1/0"))
    assert limiter.bucket("a", RateLimit(rate=1.0, burst=5)).lease == 1
    assert limiter.bucket("b", RateLimit(rate=500.0, burst=2500)).lease == round(500 * LEASE_TICK)
    assert limiter.bucket("c", RateLimit(rate=10_000.0, burst=3)).lease == 3


@pytest.mark.slow
@pytest.mark.parametrize("shared", [True, False])
def test_two_daemons_share_a_free_keys_burst_through_redis(
    daemon: DaemonFactory, redis_url: str, shared: bool
) -> None:
    key = "free-key-0123456789abcdef"
    env = {
        "SPRINTD_AUTH__ENABLED": "true",
        "SPRINTD_AUTH__SHARED_LIMITS": str(shared).lower(),
        "SPRINTD_AUTH__KEYS__CLIENT__KEY": key,
        "SPRINTD_AUTH__KEYS__CLIENT__TIER": "free",  # 1 request/s, burst 5
        "SPRINTD_REDIS__URL": redis_url,
    }
    pair = [daemon(env=env), daemon(env=env)]
    if shared:
        # Ready once each daemon's lease task has had Redis's first answer.
        for one in pair:
            wait_for(lambda one=one: one.health()["checks"]["rate_limits"][0]["shared"])
    answers = [
        pair[i % 2].request("GET", "/v1/prices", None, {"X-API-Key": key}) for i in range(12)
    ]
    allowed = sum(1 for a in answers if a.status == 200)
    assert all(a.status in (200, 429) for a in answers)
    if shared:
        # One burst of 5 between them, plus what a second refills: not 5 each.
        assert 4 <= allowed <= 7, [a.status for a in answers]
    else:
        assert allowed >= 10, [a.status for a in answers]
