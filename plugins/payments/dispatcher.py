"""Sending accepted payments to the processors: routing, retries, exactly once.

``concurrency`` tasks take payments from one queue; each delivers its payment
before it takes the next. A delivery is a loop of attempts::

    the committed processor (the store committed a new payment to ``route()``'s
    choice when it accepted it), or, after a refusal, choose one by policy and
    commit (processor, requestedAt) to the store       before anything is sent
    POST it
      200, or 422 (it has it already)  -> done
      500, 429, no connection          -> release; back off; choose again
      no answer (timeout, reset)       -> pin: from now on this processor
                                          only, with this requestedAt; back off

A payment therefore never reaches two processors: it moves only after an
answer that says the processor did not take it, and a crash between commit
and answer leaves it committed, so the restart resends it to the same
processor with the same requestedAt (``store``'s replay pins it).

Routing (``choose``): the default charges less, so it is used whenever it is
usable (not failing by the last health result, no 500 or timeout here in the
last ``suspect_s``) and its minResponseTime is no more than ``slower_ms``
above the fallback's; else the fallback if usable; else the default again
(both down: the back-off paces the attempts until one recovers).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from typing import Any

import trio

from .config import PaymentsSection
from .contract import instant_ms
from .processors import NotSent, Processor, Unsure
from .store import Pending, Store, StoreError

__all__ = ["Dispatcher", "choose"]

log = logging.getLogger("sprintd.payments")


def _usable(proc: Processor, now: float) -> bool:
    return not proc.health.failing and proc.health.suspect_until <= now


def choose(default: Processor, fallback: Processor, slower_ms: int, now: float) -> Processor:
    """The processor for a payment that is not pinned (see the module docstring)."""
    if _usable(default, now):
        if not _usable(fallback, now):
            return default
        if default.health.min_response_ms <= fallback.health.min_response_ms + slower_ms:
            return default
        return fallback
    return fallback if _usable(fallback, now) else default


class Dispatcher:
    """The worker tasks that deliver accepted payments (see the module docstring)."""

    def __init__(self, section: PaymentsSection, processors: Sequence[Processor], store: Store):
        self.section = section
        self.default, self.fallback = processors
        self.by_name = {proc.name: proc for proc in processors}
        self.store = store
        self._in, self._out = trio.open_memory_channel[Pending](math.inf)
        self.queued = 0
        self.inflight = 0
        self.delivered = 0
        self.retries = 0

    def submit(self, payment: Pending) -> None:
        """Queue a payment (never blocks: the queue is unbounded, its items journaled)."""
        self.queued += 1
        self._in.send_nowait(payment)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.section.concurrency):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        async for payment in self._out:
            self.queued -= 1
            self.inflight += 1
            try:
                await self.deliver(payment)
            finally:
                self.inflight -= 1

    async def _backoff(self, delay: float) -> float:
        self.retries += 1
        await trio.sleep(random.uniform(delay / 2, delay))
        return min(delay * 2, self.section.retry_cap)

    def route(self) -> tuple[str, int]:
        """Where a new payment goes first, and its requestedAt: now."""
        proc = choose(self.default, self.fallback, self.section.slower_ms, trio.current_time())
        return proc.name, instant_ms()

    async def deliver(self, payment: Pending) -> None:
        """Send one payment until a processor has it (or it is no longer ours)."""
        section = self.section
        delay = section.retry_first
        while True:
            if payment.committed is None:
                proc = choose(self.default, self.fallback, section.slower_ms, trio.current_time())
                try:
                    if not await self.store.commit(payment, proc.name, instant_ms()):
                        return  # purged, or another instance took it over
                except StoreError:
                    delay = await self._backoff(delay)
                    continue
            assert payment.committed is not None
            name, at = payment.committed
            proc = self.by_name[name]
            timeout = section.request_timeout + proc.health.min_response_ms / 1000
            status = 0
            try:
                status = await proc.pay(payment.cid, payment.amount, at, timeout=timeout)
            except NotSent:
                pass
            except Unsure:
                payment.pinned = True
            proc.sent += 1
            if 200 <= status < 300 or status == 422:
                proc.health.suspect_until = 0.0
                await self._finish(payment, name, at)
                return
            proc.failures += 1
            if status != 429:
                # 500, no connection, no answer: avoid it for a while. (429
                # is a busy processor, not a failing one.)
                proc.health.suspect_until = trio.current_time() + section.suspect_s
            if not payment.pinned:
                try:
                    await self.store.release(payment)
                except StoreError:
                    # Unreleased, it stays committed there: after a restart it
                    # would go back to the same processor, which is safe.
                    payment.committed, payment.pinned = (name, at), True
            delay = await self._backoff(delay)

    async def _finish(self, payment: Pending, name: str, at: int) -> None:
        delay = self.section.retry_first
        while True:
            try:
                await self.store.done(payment, name, at)
            except StoreError as exc:
                log.warning("payments: cannot record %s as done yet: %s", payment.cid, exc)
                delay = await self._backoff(delay)
                continue
            self.delivered += 1
            return

    def details(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "inflight": self.inflight,
            "delivered": self.delivered,
            "retries": self.retries,
            "processors": {
                proc.name: {
                    "url": proc.url,
                    "failing": proc.health.failing,
                    "min_response_ms": proc.health.min_response_ms,
                    "checked_ms": proc.health.checked_ms,
                    "sent": proc.sent,
                    "failures": proc.failures,
                }
                for proc in (self.default, self.fallback)
            },
        }
