"""Per-key rate limits: token buckets behind a small backend interface.

Strategy: each API key gets one bucket per worker, made at start-up, so the
hot path finds it on the key (no dict lookup) and takes a token with a few
float operations: the bucket is refilled lazily from a monotonic clock when
it is asked, never by a timer. A worker is one thread, so no lock is needed.

A key's limit is its tier's (``[auth.limits.TIER]``, the seed system's
figures by default). Held per worker, a limit applies to each worker on its
own: with ``workers = N`` a key may get up to N times its rate from one
instance.

With ``[auth] shared_limits = true`` (and ``[redis] url``) the bucket lives
in Redis, shared by every worker of every instance, and the request path
still never waits: each worker *leases* a few tokens at a time from the
shared bucket (a Lua script, on Redis's clock) in a background task and
spends them locally. A leased token is gone from the shared bucket, so
together the workers never exceed the key's rate; what a worker holds and
does not spend is the price (a lease is about ``LEASE_TICK`` of the key's
rate, one token at least). While Redis cannot be reached, each worker falls
back to a local bucket of the key's own limit: the daemon keeps limiting,
per worker, rather than refusing everyone or no one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal, Protocol

import trio

from .access import RateLimit
from .redis import Redis, RedisError, Script

__all__ = [
    "LEASE_TICK",
    "Bucket",
    "LeasedBucket",
    "Limiter",
    "LocalLimiter",
    "RedisLimiter",
    "TokenBucket",
]

log = logging.getLogger("sprintd.ratelimit")

LEASE_TICK = 0.01
"""How often the lease task tops buckets up; a lease is this long of the rate."""


class Bucket(Protocol):
    """One key's allowance in one worker."""

    def take(self) -> float:
        """Spend one request: 0.0 when allowed, else the seconds until it would be."""


class Limiter(Protocol):
    """Makes the buckets: local to the worker, or backed by a shared store."""

    def bucket(self, name: str, limit: RateLimit) -> Bucket:
        """The bucket of the key called ``name`` under ``limit``."""


class TokenBucket:
    """``rate`` tokens a second, holding at most ``burst``; starts full.

    A refused request takes nothing, so a client that backs off for the
    time it was told gets through.
    """

    __slots__ = ("burst", "clock", "rate", "stamp", "tokens")

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self.tokens = self.burst
        self.stamp = clock()

    def take(self) -> float:
        now = self.clock()
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        return (1.0 - tokens) / self.rate


class LocalLimiter:
    """Buckets in this worker's memory: no lock, no I/O."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock

    def bucket(self, name: str, limit: RateLimit) -> TokenBucket:
        return TokenBucket(limit.rate, limit.burst, self.clock)


# The shared token bucket: refilled on Redis's clock, so workers on
# different machines agree; grants up to ARGV[3] whole tokens. The key
# expires once it would be full again anyway.
_LEASE = Script("""
local now = redis.call('TIME')
now = tonumber(now[1]) + tonumber(now[2]) / 1000000
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(held[1]) or burst
local stamp = tonumber(held[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - stamp) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {granted, tostring(tokens)}
""")


class LeasedBucket:
    """Tokens leased from the shared bucket, spent here without waiting."""

    __slots__ = ("burst", "fallback", "key", "lease", "limiter", "low", "rate", "tokens", "wait")

    def __init__(self, limiter: RedisLimiter, key: str, limit: RateLimit) -> None:
        self.limiter = limiter
        self.key = key
        self.rate = limit.rate
        self.burst = limit.burst
        # At least one token, at most the burst: a lease never holds more
        # than the shared bucket could give at once.
        self.lease = max(1, min(limit.burst, math.ceil(limit.rate * LEASE_TICK)))
        # Spent down to this, the bucket asks the lease task for more at once.
        self.low = self.lease // 2
        self.tokens = 0
        # Seconds until the shared bucket has a token, as its last answer said.
        self.wait = 1.0 / limit.rate
        self.fallback = TokenBucket(limit.rate, limit.burst, limiter.clock)

    def take(self) -> float:
        tokens = self.tokens
        if tokens:
            self.tokens = tokens = tokens - 1
            if tokens <= self.low:
                self.limiter.wanted.set()
            return 0.0
        if not self.limiter.shared:
            return self.fallback.take()
        self.limiter.wanted.set()
        return self.wait

    async def top_up(self, redis: Redis) -> None:
        want = self.lease - self.tokens
        if want <= 0:
            return
        granted, left = await redis.script(
            _LEASE, keys=[self.key], args=[self.rate, self.burst, want]
        )
        self.tokens += int(granted)
        self.wait = max(0.001, (1.0 - float(left)) / self.rate)


class RedisLimiter:
    """Buckets shared through Redis; ``run`` is the worker's lease task."""

    def __init__(
        self,
        redis: Redis,
        prefix: str = "sprintd:ratelimit:",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self.buckets: list[LeasedBucket] = []
        # False until the first leases came back, and while Redis is down.
        self.shared = False
        # Set by a bucket running low: the lease task tops up before its tick.
        self.wanted = trio.Event()

    def check(self) -> tuple[Literal["pass", "warn"], dict[str, Any]]:
        """For /health: whether the limits are shared yet, or per worker for now."""
        if self.shared:
            return "pass", {"shared": True, "keys": len(self.buckets)}
        return "warn", {
            "shared": False,
            "keys": len(self.buckets),
            "output": "limiting per worker until Redis answers",
        }

    def bucket(self, name: str, limit: RateLimit) -> LeasedBucket:
        bucket = LeasedBucket(self, self.prefix + name, limit)
        self.buckets.append(bucket)
        return bucket

    async def run(self) -> None:
        """Top the buckets up each ``LEASE_TICK`` or when one asks, for the worker's lifetime."""
        while True:
            try:
                for bucket in self.buckets:
                    await bucket.top_up(self.redis)
            except RedisError as exc:
                if self.shared:
                    log.warning("rate limits: Redis unreachable, limiting per worker: %s", exc)
                self.shared = False
            else:
                if not self.shared:
                    log.info("rate limits: shared through Redis")
                self.shared = True
            with trio.move_on_after(LEASE_TICK):
                await self.wanted.wait()
            self.wanted = trio.Event()
