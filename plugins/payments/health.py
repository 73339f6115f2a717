"""The processors' health: polled at most once per interval per processor, everywhere.

A processor answers ``GET /payments/service-health`` once per 5 s, whoever
asks; a second caller within that time gets 429. So one poller at a time:

- memory store (one instance): this worker polls each processor itself, each
  ``interval + SLACK`` seconds.
- redis store: every instance looks every ``LOOK`` seconds; the one that
  takes ``P:health-lock:NAME`` (``SET NX PX``, held ``interval + SLACK``)
  polls and publishes the result in ``P:health:NAME``; every instance,
  the poller included, uses the published result. The lock expires rather
  than being released, so no two polls of a processor are closer than its
  hold, whichever instances make them.

``SLACK`` covers the time between taking the lock and the request reaching
the processor, which may differ from one poll to the next.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence

import trio

from .contract import instant_ms
from .dispatcher import Pacer
from .processors import Processor
from .redis_store import RedisStore
from .store import StoreError

__all__ = ["SLACK", "HealthMonitor"]

SLACK = 0.25
# How often an instance reads the shared result (and tries for the lock).
LOOK = 0.25
# The health endpoint answers at once whatever its payments' delay; a poll
# that takes longer is given up (the last result stays) so that it does not
# hold up the other processor's.
POLL_TIMEOUT = 2.0


class HealthMonitor:
    """Keeps each processor's health result current, polling within the
    processors' rate limit (see the module docstring)."""

    def __init__(
        self,
        processors: Sequence[Processor],
        *,
        interval: float,
        shared: RedisStore | None,
        pacer: Pacer,
    ) -> None:
        self.processors = processors
        # Polls yield to accepting as the dispatcher's sends do.
        self.pacer = pacer
        self.hold = interval + SLACK
        self.shared = shared
        self.polls = 0
        self._next_poll = {proc.name: 0.0 for proc in processors}

    async def run(self) -> None:
        """Poll (or read) each processor's health until cancelled."""
        while True:
            for proc in self.processors:
                await self.pacer.turn()
                # A store error shows on /health; the next look retries.
                with contextlib.suppress(StoreError):
                    await self.look(proc)
            await trio.sleep(LOOK)

    async def look(self, proc: Processor) -> None:
        if self.shared is None:
            now = trio.current_time()
            if now >= self._next_poll[proc.name]:
                self._next_poll[proc.name] = now + self.hold
                await self._poll(proc)
            return
        won, result = await self.shared.claim_health(proc.name, int(self.hold * 1000))
        if won:
            await self._poll(proc)
        elif result is not None:
            self._apply(proc, result)

    async def _poll(self, proc: Processor) -> None:
        self.polls += 1
        found = await proc.check_health(timeout=POLL_TIMEOUT)
        if found is None:
            return
        failing, min_ms = found
        health = proc.health
        health.failing, health.min_response_ms, health.checked_ms = failing, min_ms, instant_ms()
        if self.shared is not None:
            result = {"failing": failing, "minResponseTime": min_ms, "checkedAt": health.checked_ms}
            await self.shared.publish_health(proc.name, json.dumps(result).encode())

    @staticmethod
    def _apply(proc: Processor, result: bytes) -> None:
        try:
            data = json.loads(result)
            failing, min_ms, at = data["failing"], data["minResponseTime"], data["checkedAt"]
        except (ValueError, KeyError, TypeError):
            return
        health = proc.health
        health.failing, health.min_response_ms, health.checked_ms = bool(failing), min_ms, at
