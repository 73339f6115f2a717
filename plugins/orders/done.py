"""The done-order store of the price-time engine: a ring of records in generations.

Strategy
--------
``PriceTimeEngine.order(order_id)`` answers for live orders and for recently
done ones (filled, cancelled, expired, rejected): a bounded store the caller
never has to prune. When an order is done it leaves the engine's order table
(its slot is free at once, so the table holds the live book only and stays
small and cache-friendly) and becomes a *record* here: a tuple of ints,
strings and None, which CPython's collector stops tracking at its first young
collection.

Records are kept in generations of ``DONE_GENERATION``: a plain dict
id -> position each, and a region of that many positions in a ring of records
made with the store. When the young generation's region is full it joins the
old ones, and the oldest is dropped (its region becomes the young one's) once
the others hold ``capacity`` without it. So at least the last ``capacity``
done orders are always found; eviction is by completion age (FIFO), not by
lookups. Small generations keep every dict small: neither a resize nor
dropping a generation stalls one operation for long (a 100k-entry dict's
resize took 3-4 ms, and dropping 8192 records at once 0.7 ms). The dicts hold
only ints, so the collector never tracks them, and the ring is made at
start-up, which the tiers that tune GC freeze: with dicts of records, the
first full collection walked every record (17k of them: 2-4 ms,
bench/engine) before it could untrack the dicts.

The engine's matching loop stores the records of the makers it fills itself,
on locals (``ring``, ``young``, ``pos``, ``end`` are public for that reason),
calling ``next_generation`` when ``pos`` reaches ``end``; everything else
goes through ``remember``.
"""

from __future__ import annotations

from collections import deque

__all__ = [
    "DEFAULT_DONE_CAPACITY",
    "DONE_GENERATION",
    "NO_RECORD",
    "RECORD_FIELDS",
    "DoneRing",
    "Record",
]

DEFAULT_DONE_CAPACITY = 16_384
"""Done orders ``order()`` still knows by default (module doc).

Kept small on purpose: the records are the engine's only objects that a full
collection walks (the first full collection after a run of the exchange mix
took 7.3 ms with 100k of them, 0.8 ms with 16k). A caller that must answer for
older orders passes a larger ``done_capacity``, or keeps its own history from
the events."""
DONE_GENERATION = 2048
"""Done orders per generation. Dropping a generation frees its records at
once: 8192 of them stalled one operation for 0.7 ms, 2048 take about a
quarter of that. Looking a done order up scans the generations (up to
``capacity / DONE_GENERATION`` dicts): a slow path, for the API only."""

Record = tuple[int, int | None, int, int, int, int, bool, str]
"""A done order as the store keeps it (and as a snapshot writes it, after its
id): side, price, qty, remaining (what was cancelled, expired or rejected: 0
when filled), account, stp, post_only, end."""
RECORD_FIELDS = 8
NO_RECORD: Record = (-1, None, 0, 0, 0, 0, False, "")


class DoneRing:
    """The last ``capacity`` (at least) done orders' records, by order id.

    Args:
        capacity: how many done orders ``find`` is guaranteed to still know.

    Raises:
        ValueError: ``capacity`` is below 1.
    """

    __slots__ = ("capacity", "end", "keep", "old", "pos", "ring", "size", "young")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("done_capacity must be at least 1")
        self.capacity = capacity
        #: Records per generation, and old generations kept.
        self.size = min(DONE_GENERATION, capacity)
        self.keep = -(-capacity // self.size)
        # The young generation (id -> position in the ring), and the older
        # ones, oldest first.
        self.young: dict[int, int] = {}
        self.old: deque[dict[int, int]] = deque()
        # A region of ``size`` records per generation kept, the young one's
        # included, added as they fill. The list is made now, so the tiers that
        # freeze the start-up heap never have a collection walk it.
        self.ring: list[Record] = [NO_RECORD] * self.size
        #: The young generation's next position, and the end of its region.
        self.pos = 0
        self.end = self.size

    def remember(self, order_id: int, record: Record) -> None:
        """Keep a done order's record in the young generation."""
        pos = self.pos
        self.ring[pos] = record
        self.young[order_id] = pos
        pos += 1
        self.pos = pos
        if pos == self.end:
            self.next_generation()

    def next_generation(self) -> None:
        """The young generation joins the old ones; the oldest is forgotten
        once enough are kept without it, and its ring region is the new young
        generation's. (The ring grows in place: callers' references to it
        stay valid.)"""
        old = self.old
        old.append(self.young)
        self.young = {}
        if len(old) > self.keep:
            old.popleft()
        start = self.end
        ring = self.ring
        if start == len(ring):
            if start < (self.keep + 1) * self.size:
                ring += [NO_RECORD] * self.size
            else:
                start = 0
        self.pos = start
        self.end = start + self.size

    def find(self, order_id: int) -> Record | None:
        """A done order's record, or None."""
        pos = self.young.get(order_id)
        if pos is None:
            for gen in reversed(self.old):
                pos = gen.get(order_id)
                if pos is not None:
                    break
            else:
                return None
        return self.ring[pos]
