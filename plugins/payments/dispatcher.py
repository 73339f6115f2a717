"""Sending accepted payments to the processors: routing, retries, exactly once.

``concurrency`` tasks take payments from one queue; each delivers its payment
before it takes the next. At most ``inflight`` sends per 100 ms of a
processor's reported delay are in flight to it at once (``_slots``). A
delivery is a loop of attempts::

    not pinned: choose a processor by policy (``choose``), or wait for one;
    commit (processor, requestedAt: now) to the store     before anything is sent
    POST it
      200, or 422 (it has it already)  -> done
      500, 429, no connection          -> release; back off; choose again
      no answer (timeout, reset)       -> pin: from now on this processor
                                          only, with this requestedAt; back off

A payment therefore never reaches two processors: it moves only after an
answer that says the processor did not take it, and a crash between commit
and answer leaves it committed, so the restart resends it to the same
processor with the same requestedAt (``store``'s replay pins it). A commit
that was never sent (the accept's, or one made before a wait) may be
replaced by another: nothing was sent on it.

The requestedAt sent is the moment of the send (the accept's commit is used
only while fresh): the processor records a payment under it when the
payment arrives, and the summary counts it once the answer is back, so the
two agree for any window that ends more than a round trip ago. A payment
that waited in the queue with its accept's instant would be recorded under
an instant the window already covers.

Routing (``choose``, the reasoning in README.md): the default, whenever it
is usable, unless the payments queued before this one would keep it waiting
longer than ``fallback_after_s``; an unusable default is waited for up to
``fallback_after_s``, then the fallback takes the payments if it is usable.
While the default is unusable, one task at a time probes it with its own
payment (a 500 records nothing), so its return is seen at once, not at the
next health poll.

Accepting comes first: the dispatcher's tasks and the health monitor share
the event loop with the connections, so before each step they ask the
``Pacer``, which lets their work run for at most ``SLICE`` seconds before
they yield to the connections waiting on the loop's next poll.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Sequence
from typing import Any

import trio

from .config import PaymentsSection
from .contract import instant_ms
from .processors import NotSent, Processor, Unsure
from .store import Pending, Store, StoreError

__all__ = ["SLICE", "Dispatcher", "Pacer", "choose"]

log = logging.getLogger("sprintd.payments")

# Background work runs at most this long before the loop polls for I/O again
# (accepting waits at most about this long behind it).
SLICE = 0.0005
# A commit made longer ago than this (ms) is renewed before its first send:
# the processor must see the send's instant as requestedAt (module docstring).
FRESH_MS = 250
# Tasks waiting for a processor look again this often, or at once when a
# probe gets through (the probe is what notices a default back: the waiting
# tasks only look for a fallback that may take over, and hundreds of them
# looking often would cost the loop for nothing).
WAIT_S = 1.0
# Weight of the newest answer in a processor's measured latency.
LATENCY_WEIGHT = 0.1


class Pacer:
    """Lets background work run in slices of ``SLICE`` seconds between the
    loop's I/O polls.

    ``turn()`` returns at once while the current slice lasts; past it, the
    caller yields (``checkpoint``: it runs again in the loop's next batch,
    after the poll that wakes the connections). The first task back starts
    the next slice.
    """

    def __init__(self, slice_s: float = SLICE) -> None:
        self.slice_s = slice_s
        self.started = 0.0
        self.yields = 0

    async def turn(self) -> None:
        while time.perf_counter() - self.started > self.slice_s:
            began = self.started
            self.yields += 1
            await trio.lowlevel.checkpoint()
            if self.started == began:
                self.started = time.perf_counter()


def choose(
    default: Processor,
    fallback: Processor,
    *,
    now: float,
    waited_s: float,
    backlog_s: float,
    fallback_after_s: float,
) -> Processor | None:
    """The processor for a payment that is not pinned, or None: wait.

    ``waited_s``: how long the default has been unusable (0 while usable);
    ``backlog_s``: how long the default would take to get through the
    payments queued before this one.
    """
    if default.health.usable(now):
        if (
            backlog_s > fallback_after_s
            and fallback.health.usable(now)
            and fallback.health.delay_s() < default.health.delay_s()
        ):
            return fallback
        return default
    if waited_s >= fallback_after_s and fallback.health.usable(now):
        return fallback
    return None


class Dispatcher:
    """The worker tasks that deliver accepted payments (see the module docstring)."""

    def __init__(self, section: PaymentsSection, processors: Sequence[Processor], store: Store):
        self.section = section
        self.default, self.fallback = processors
        self.by_name = {proc.name: proc for proc in processors}
        self.store = store
        self.pacer = Pacer()
        self._in, self._out = trio.open_memory_channel[Pending](math.inf)
        self.queued = 0
        self.inflight = 0
        self.delivered = 0
        self.retries = 0
        self.waits = 0
        # Monotonic time since which the default has been unusable; None: usable.
        self._down_since: float | None = None
        self._probing = False
        self._back = trio.Event()

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

    def choose(self) -> Processor | None:
        """``choose`` with this dispatcher's processors, queue and clock."""
        now = trio.current_time()
        default = self.default
        if default.health.usable(now):
            self._down_since = None
            waited = 0.0
        else:
            if self._down_since is None:
                self._down_since = now
            waited = now - self._down_since
        # The default takes `_slots` payments at a time, each for its delay.
        backlog = self.queued * default.health.delay_s() / self._slots(default)
        return choose(
            default,
            self.fallback,
            now=now,
            waited_s=waited,
            backlog_s=backlog,
            fallback_after_s=self.section.fallback_after_s,
        )

    def _slots(self, proc: Processor) -> int:
        """The sends allowed in flight to ``proc``: ``inflight`` per 100 ms of
        its delay (at least ``inflight``, at most ``concurrency``)."""
        section = self.section
        per_100ms = max(1, int(proc.health.delay_s() * 10))
        return min(section.inflight * per_100ms, section.concurrency)

    def route(self) -> tuple[str, int]:
        """Where a new payment is committed at its accept, and its requestedAt:
        now. Only a first guess, kept cheap for the accept: its first send
        chooses again (``deliver``) and commits anew if the guess was wrong."""
        if self._down_since is None:
            return self.default.name, instant_ms()
        return (self.choose() or self.default).name, instant_ms()

    async def _wait(self) -> None:
        self.waits += 1
        with trio.move_on_after(WAIT_S):
            await self._back.wait()

    def _came_back(self, proc: Processor) -> None:
        """A payment went through: the processor works, whatever its last health said."""
        health = proc.health
        health.suspect_until, health.ok_ms = 0.0, instant_ms()
        if proc is self.default and self._down_since is not None:
            self._down_since = None
            self._back.set()
            self._back = trio.Event()

    async def _commit(self, payment: Pending, proc: Processor) -> bool:
        """Commit an unpinned payment to ``proc`` with requestedAt now, unless its
        commit is that already and fresh; False: drop it (purged, or another
        instance took it over).

        Raises:
            StoreError: the store cannot take the commit now.
        """
        committed = payment.committed
        now_ms = instant_ms()
        if (
            committed is not None
            and committed[0] == proc.name
            and now_ms - committed[1] <= FRESH_MS
        ):
            return True
        return await self.store.commit(payment, proc.name, now_ms)

    async def deliver(self, payment: Pending) -> None:
        """Send one payment until a processor has it (or it is no longer ours)."""
        section = self.section
        delay = section.retry_first
        while True:
            await self.pacer.turn()
            probing = False
            if payment.pinned:
                assert payment.committed is not None
                proc = self.by_name[payment.committed[0]]
            else:
                chosen = self.choose()
                if chosen is None:
                    if self._probing:
                        await self._wait()
                        continue
                    # This payment asks the default whether it is back.
                    self._probing = probing = True
                    chosen = self.default
                proc = chosen
            slots = proc.slots
            wanted = self._slots(proc)
            if slots.total_tokens != wanted:
                slots.total_tokens = wanted
            status = 0
            async with slots:
                # Committed once it has its slot, so that requestedAt is the
                # send's instant, not the start of its wait for one.
                try:
                    committed = payment.pinned or await self._commit(payment, proc)
                except StoreError:
                    committed = None
                if committed:
                    assert payment.committed is not None
                    name, at = payment.committed
                    timeout = section.request_timeout + proc.health.min_response_ms / 1000
                    began = trio.current_time()
                    try:
                        status = await proc.pay(payment.cid, payment.amount, at, timeout=timeout)
                    except NotSent:
                        pass
                    except Unsure:
                        payment.pinned = True
            if not committed:
                self._probing &= not probing
                if committed is None:
                    delay = await self._backoff(delay)
                    continue
                return  # purged, or another instance took it over
            await self.pacer.turn()
            proc.sent += 1
            if 200 <= status < 300 or status == 422:
                health = proc.health
                health.latency_s += (trio.current_time() - began - health.latency_s) * (
                    LATENCY_WEIGHT
                )
                self._probing &= not probing
                self._came_back(proc)
                await self._finish(payment, name, at)
                return
            proc.failures += 1
            if status != 429:
                # 500, no connection, no answer: avoid it for a while. (429
                # is a busy processor, not a failing one.)
                proc.health.suspect_until = trio.current_time() + section.suspect_s
                proc.health.ok_ms = 0
            if not payment.pinned:
                try:
                    await self.store.release(payment)
                except StoreError:
                    # Unreleased, it stays committed there: after a restart it
                    # would go back to the same processor, which is safe.
                    payment.committed, payment.pinned = (name, at), True
            delay = await self._backoff(delay)
            # The next probe waits for this one's back-off.
            self._probing &= not probing

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
            "waits": self.waits,
            "yields": self.pacer.yields,
            "processors": {
                proc.name: {
                    "url": proc.url,
                    "failing": proc.health.failing,
                    "min_response_ms": proc.health.min_response_ms,
                    "latency_ms": round(proc.health.latency_s * 1000, 2),
                    "in_flight": proc.slots.borrowed_tokens,
                    "slots": proc.slots.total_tokens,
                    "checked_ms": proc.health.checked_ms,
                    "sent": proc.sent,
                    "failures": proc.failures,
                }
                for proc in (self.default, self.fallback)
            },
        }
