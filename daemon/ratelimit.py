"""Per-key rate limits: token buckets behind a small backend interface.

Strategy: each API key gets one bucket per worker, made at start-up, so the
hot path finds it on the key (no dict lookup) and takes a token with a few
float operations: the bucket is refilled lazily from a monotonic clock when
it is asked, never by a timer. A worker is one thread, so no lock is needed.

A key's limit is its tier's (``[auth.limits.TIER]``, the seed system's
figures by default). Held per worker, a limit applies to each worker on its
own: with ``workers = N`` a key may get up to N times its rate from one
instance. A backend that shares buckets across workers and instances (Redis)
implements ``Limiter`` and is chosen in ``make_limiter``; its buckets must
answer ``take()`` without awaiting (leasing tokens from the shared store in
the background), so the request path stays synchronous.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from .settings import RateLimit, Settings

__all__ = ["Bucket", "Limiter", "LocalLimiter", "TokenBucket", "make_limiter", "retry_after"]


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


def make_limiter(settings: Settings) -> Limiter:
    """The limiter the settings ask for; local buckets are the only one yet."""
    return LocalLimiter()


def retry_after(wait: float) -> bytes:
    """A ``Retry-After`` value: whole seconds (RFC 9110), rounded up, at least 1."""
    return b"%d" % max(1, math.ceil(wait))
