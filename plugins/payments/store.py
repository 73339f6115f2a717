"""Where payments are kept: the store's interface, and the memory store on the core's journal.

A payment goes through these steps, each one a store call, in this order::

    accept   the client's POST: kept, deduplicated, committed to its first
             send (processor, requestedAt); the 2xx leaves after this
    commit   (processor, requestedAt) recorded before any other send
    release  the processor refused it for sure (500, 429, no connection)
    done     the processor has it (200, or 422: it had it already)

Committing is what makes a payment go to one processor only: after a crash,
a payment whose last commit was not released or done may have reached that
processor, so it is resent there alone, with the same ``requestedAt`` (a
422 then says it arrived). The summary counts ``done`` payments by the
``requestedAt`` they were sent with, which is what the processor recorded.

The memory store keeps everything in the process and writes each step to the
daemon's journal (stream ``payments``) before it returns; start-up loads the
latest snapshot and replays the records after it. Replaying a record twice
changes nothing, so a snapshot taken while an append is under way is safe.
"""

from __future__ import annotations

import enum
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Protocol

import msgpack

from sprintd import Journal, JournalError, JournalUnavailable

from .contract import PROCESSORS, Totals, amount_text, bound_ms

__all__ = [
    "STREAM",
    "Accepted",
    "MemoryStore",
    "Pending",
    "Store",
    "StoreError",
]

STREAM = "payments"
# Journal records: small msgpack arrays, the first item the kind.
ACCEPT, COMMIT, RELEASE, DONE, PURGE = 1, 2, 3, 4, 5
_SNAPSHOT_VERSION = 1


class StoreError(Exception):
    """The store cannot take the step now (journal failed, Redis unreachable).

    ``code`` is the API's error code; ``retry_after`` (seconds) is set when
    asking again later may succeed.
    """

    def __init__(
        self, message: str, code: str = "store_unavailable", retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class Accepted(enum.Enum):
    """What a store made of a payment it was offered."""

    NEW = "new"
    SAME = "same"  # accepted before, with the same amount
    CONFLICT = "conflict"  # accepted before, with another amount


class Pending:
    """A payment on its way to a processor.

    ``committed`` is the (processor, requestedAt) the store holds for its
    next send, or None; only the store sets it, before its record can be
    durable, so a snapshot never misses a commit. ``pinned``: a send to the
    committed processor may have arrived, so it goes nowhere else, with the
    same requestedAt (set after an unknown outcome, and for every committed
    payment found after a restart).
    """

    __slots__ = ("amount", "cid", "committed", "generation", "pinned")

    def __init__(
        self,
        cid: str,
        amount: str,
        committed: tuple[str, int] | None = None,
        *,
        pinned: bool = False,
        generation: int = 0,
    ) -> None:
        self.cid = cid
        self.amount = amount
        self.committed = committed
        self.pinned = pinned
        self.generation = generation


class Store(Protocol):
    """What the API and the dispatcher need of a store. Every method may raise
    ``StoreError``; then the step did not happen (or, for Redis, may have)."""

    kind: str

    async def accept(
        self, cid: str, amount: Decimal, processor: str, at: int
    ) -> tuple[Accepted, Pending | None]:
        """Keep a new payment, committed to its first send; say whether it is
        new (and the payment to queue), the same, or conflicts."""

    async def commit(self, payment: Pending, processor: str, at: int) -> bool:
        """Record where the payment is about to go (and set ``committed``);
        False: drop it (purged, or another instance owns it now)."""

    async def release(self, payment: Pending) -> None:
        """The committed processor refused the payment for sure (``committed`` is None after)."""

    async def done(self, payment: Pending, processor: str, at: int) -> None:
        """The processor has the payment, sent with ``at``."""

    async def summary(self, low_us: int | None, high_us: int | None) -> Totals:
        """Done payments per processor, ``requestedAt`` within the inclusive bounds."""

    async def purge(self) -> None:
        """Forget every payment."""

    def details(self) -> dict[str, Any]:
        """What /health shows."""


class _Done:
    """One processor's done payments, ordered by requestedAt, and their total."""

    __slots__ = ("amounts", "ats", "total")

    def __init__(self) -> None:
        self.ats: list[int] = []
        self.amounts: list[Decimal] = []
        self.total = Decimal(0)

    def add(self, at: int, amount: Decimal) -> None:
        ats = self.ats
        if not ats or at >= ats[-1]:
            ats.append(at)
            self.amounts.append(amount)
        else:  # a resend with its first requestedAt, or a slower answer
            index = bisect_right(ats, at)
            ats.insert(index, at)
            self.amounts.insert(index, amount)
        self.total += amount

    def between(self, low_ms: int | None, high_ms: int | None) -> tuple[int, Decimal]:
        ats = self.ats
        low = 0 if low_ms is None else bisect_left(ats, low_ms)
        high = len(ats) if high_ms is None else bisect_right(ats, high_ms)
        if low == 0 and high == len(ats):
            return len(ats), self.total
        return max(high - low, 0), sum(self.amounts[low:high], Decimal(0))

    def clear(self) -> None:
        self.ats.clear()
        self.amounts.clear()
        self.total = Decimal(0)


class MemoryStore:
    """Payments in this process, every step journaled before it returns."""

    kind = "memory"

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.generation = 0
        self.accepted: dict[str, Decimal] = {}
        # Accepted and not done: cid -> the payment (with its pin, if any).
        self.pending: dict[str, Pending] = {}
        # Per processor: the done payments by requestedAt (ms).
        self.done_by = {name: _Done() for name in PROCESSORS}

    # --- replay ------------------------------------------------------------------

    def load(self) -> tuple[int, int]:
        """Rebuild from the latest snapshot and the records after it.

        Returns:
            (the snapshot's seq or 0, the number of records replayed).

        Raises:
            ValueError: a snapshot or record this version cannot read.
        """
        restored = self.journal.restore(
            STREAM, self._restore, lambda payload: self._apply(msgpack.unpackb(payload))
        )
        # Replaying a record twice changes nothing, so the state may be
        # taken whenever the journal asks (periodically, and at close).
        self.journal.register(STREAM, self.snapshot)
        return restored

    def recovered(self) -> list[Pending]:
        """The payments to send after a restart, pinned where they were committed."""
        return list(self.pending.values())

    def _apply(self, record: list[Any]) -> None:
        kind = record[0]
        if kind == ACCEPT:
            # [ACCEPT, cid, amount, processor, at]: accepted and committed; a
            # duplicate's [ACCEPT, cid, amount] is only a durability barrier.
            cid, amount = record[1], record[2]
            if cid not in self.accepted:
                self.accepted[cid] = Decimal(amount)
                self.pending[cid] = Pending(
                    cid, amount, (record[3], record[4]), pinned=True, generation=self.generation
                )
        elif kind == COMMIT:
            found = self.pending.get(record[1])
            if found is not None:
                # A restart cannot know whether this send arrived.
                found.committed, found.pinned = (record[2], record[3]), True
        elif kind == RELEASE:
            found = self.pending.get(record[1])
            if found is not None:
                found.committed, found.pinned = None, False
        elif kind == DONE:
            found = self.pending.pop(record[1], None)
            if found is not None:
                self.done_by[record[2]].add(record[3], self.accepted[record[1]])
        elif kind == PURGE:
            self._clear()
        else:
            raise ValueError(f"payments journal record of unknown kind {kind!r}")

    def _clear(self) -> None:
        self.generation += 1
        self.accepted.clear()
        self.pending.clear()
        for done in self.done_by.values():
            done.clear()

    # --- snapshots ------------------------------------------------------------------

    def snapshot(self) -> bytes:
        pending = [[p.cid, *(p.committed or (None, 0))] for p in self.pending.values()]
        done = {
            name: [[at, amount_text(amount)] for at, amount in zip(d.ats, d.amounts, strict=True)]
            for name, d in self.done_by.items()
        }
        accepted = {cid: amount_text(amount) for cid, amount in self.accepted.items()}
        data: bytes = msgpack.packb([_SNAPSHOT_VERSION, accepted, pending, done])
        return data

    def _restore(self, data: bytes) -> None:
        version, accepted, pending, done = msgpack.unpackb(data)
        if version != _SNAPSHOT_VERSION:
            raise ValueError(f"payments snapshot version {version}")
        self._clear()
        self.accepted.update((cid, Decimal(text)) for cid, text in accepted.items())
        for cid, processor, at in pending:
            committed = None if processor is None else (processor, at)
            self.pending[cid] = Pending(
                cid,
                accepted[cid],
                committed,
                pinned=committed is not None,
                generation=self.generation,
            )
        for name, items in done.items():
            for at, text in items:
                self.done_by[name].add(at, Decimal(text))

    def _admit(self) -> None:
        """Refuse a client's step before it changes anything while the journal cannot take it."""
        try:
            self.journal.admit()
        except JournalUnavailable as exc:
            raise StoreError(str(exc), "journal_unavailable", exc.retry_after) from None

    async def _journal(self, record: Iterable[Any]) -> None:
        try:
            await self.journal.append(STREAM, msgpack.packb(list(record)))
        except JournalError as exc:
            raise StoreError(str(exc), "journal_unavailable", self.journal.probe_interval) from None

    # --- the steps ------------------------------------------------------------------

    async def accept(
        self, cid: str, amount: Decimal, processor: str, at: int
    ) -> tuple[Accepted, Pending | None]:
        self._admit()
        text = amount_text(amount)
        known = self.accepted.get(cid)
        if known is not None:
            if known != amount:
                return Accepted.CONFLICT, None
            # Journaled again, so the answer leaves only once the first
            # record (earlier in the journal) is durable too.
            await self._journal((ACCEPT, cid, text))
            return Accepted.SAME, None
        payment = Pending(cid, text, (processor, at), generation=self.generation)
        self.accepted[cid] = amount
        self.pending[cid] = payment
        try:
            await self._journal((ACCEPT, cid, text, processor, at))
        except StoreError:
            # Not acknowledged; a failed journal writes nothing more.
            del self.accepted[cid]
            del self.pending[cid]
            raise
        return Accepted.NEW, payment

    async def commit(self, payment: Pending, processor: str, at: int) -> bool:
        if payment.generation != self.generation:
            return False
        payment.committed = (processor, at)
        await self._journal((COMMIT, payment.cid, processor, at))
        return True

    async def release(self, payment: Pending) -> None:
        payment.committed = None
        if payment.generation == self.generation:
            await self._journal((RELEASE, payment.cid))

    async def done(self, payment: Pending, processor: str, at: int) -> None:
        if payment.generation != self.generation:
            return
        if self.pending.pop(payment.cid, None) is not None:
            self.done_by[processor].add(at, self.accepted[payment.cid])
        await self._journal((DONE, payment.cid, processor, at))

    async def summary(self, low_us: int | None, high_us: int | None) -> Totals:
        low, high = bound_ms(low_us, low=True), bound_ms(high_us, low=False)
        return {name: done.between(low, high) for name, done in self.done_by.items()}

    async def purge(self) -> None:
        self._admit()
        self._clear()
        await self._journal((PURGE,))

    def details(self) -> dict[str, Any]:
        return {
            "store": self.kind,
            "accepted": len(self.accepted),
            "pending": len(self.pending),
            "done": {name: len(done.ats) for name, done in self.done_by.items()},
        }
