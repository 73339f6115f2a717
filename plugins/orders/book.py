"""The order book's data: an order table, price levels, and one side of a book.

Strategy
--------
Everything here is shaped by what the matching loop in ``engine.py`` touches per
operation and by CPython's cyclic garbage collector, measured on CPython 3.11:

* Orders are rows of an ``OrderTable``: one Python list per field (``rem[s]``,
  ``next[s]``, ...), indexed by a slot number ``s`` taken from a free list.
  Reading or writing ``rem[s]`` costs what ``order.rem`` costs on a
  ``__slots__`` object, but a new order allocates no object the garbage
  collector tracks: the lists hold ints, strings and ``None``. With one
  slotted object per order, a book of 100k-1M resting orders made CPython's
  default GC run full collections of the whole book (120 ms each, measured)
  and cut throughput by half to two thirds; with the table, the engine runs
  as fast with the GC on as with it off, and no operation waits for it.
* A price level (``Level``) is a doubly linked list of slots through the
  table's ``prev``/``next`` columns (``head`` is the oldest, the first to
  trade; ``NIL`` ends the list), with the level's total quantity kept up to
  date. The head's ``prev`` is never read (a slot is the head when
  ``level.head`` says so), so it is left stale when a head leaves: one column
  fewer touched per fill. Appending, filling from the head and cancelling from anywhere are
  O(1), with no dead entries to skip and no compaction pass.
* One side of the book (``BookSide``) is a dict ``key -> Level`` plus a sorted
  list of the keys in use, best last. The key is the price for bids and minus
  the price for asks, so on both sides "better" means "larger key": the best
  level is ``keys[-1]`` (O(1), no heap, no stale entries), a new level near the
  top of the book is an ``append`` or a short ``insort`` near the end, and
  depth is a slice. An incoming order whose own key is ``k`` crosses the
  opposite side exactly when ``opposite.keys[-1] + k >= 0``.

Nothing here reads a clock, draws a random number or iterates a ``set``: the
order of everything is the order of the commands. Slot numbers are internal
and never visible in events, hashes or snapshots.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator

__all__ = ["NIL", "BookSide", "Level", "OrderTable"]

NIL = -1
"""The end of a level's list: no previous / next order."""

GROW_MIN = 4096
"""Slots added at least when the table is full: about 430 KB of list cells, so
growing stays rare and each growth costs tens of microseconds."""

GROW_FRACTION = 8
"""Otherwise the table grows by 1/8 of its size: amortised O(1) growth with at
most 12.5% of the cells unused."""


class OrderTable:
    """Every live (resting) order, one list per field.

    Columns (all indexed by slot):

    ``oid`` order id; ``side``; ``price`` (ticks, ``None`` for market orders);
    ``qty`` the current total quantity (original, or as replaced); ``rem`` the
    unfilled part, what rests in the book (``qty - rem`` is filled);
    ``account``; ``stp``;
    ``post_only``; ``prev`` and
    ``next`` (the neighbours in the price level, ``NIL`` at the ends) and
    ``level`` (the ``Level``), meaningful while the order rests.

    A slot is freed as soon as its order is done (the engine keeps a record
    of it elsewhere) and keeps stale values until it is handed out again.
    """

    __slots__ = (
        "account",
        "free",
        "level",
        "next",
        "oid",
        "post_only",
        "prev",
        "price",
        "qty",
        "rem",
        "side",
        "size",
        "stp",
    )

    def __init__(self, reserve: int = 0) -> None:
        self.size = 0
        self.free: list[int] = []
        self.oid: list[int] = []
        self.side: list[int] = []
        self.price: list[int | None] = []
        self.qty: list[int] = []
        self.rem: list[int] = []
        self.account: list[int] = []
        self.stp: list[int] = []
        self.post_only: list[bool] = []
        self.prev: list[int] = []
        self.next: list[int] = []
        self.level: list[Level | None] = []
        if reserve:
            # Growing copies every column: 2-3 ms at 300k slots, on the order
            # that found the table full. A book sized in advance never does.
            self.free.append(self.grow(reserve))

    def grow(self, n: int = 0) -> int:
        """Add free slots (the lists keep their identity) and return one of them.

        ``n`` slots, or by default ``GROW_MIN`` or 1/``GROW_FRACTION`` of the size.
        """
        old = self.size
        n = n or max(GROW_MIN, old // GROW_FRACTION)
        zeros = [0] * n
        nones: list[None] = [None] * n
        self.oid += zeros
        self.side += zeros
        self.price += nones
        self.qty += zeros
        self.rem += zeros
        self.account += zeros
        self.stp += zeros
        self.post_only += [False] * n
        self.prev += [NIL] * n
        self.next += [NIL] * n
        self.level += nones
        self.size = old + n
        # Lowest slot on top of the stack: the table fills from the start.
        self.free.extend(range(old + n - 1, old, -1))
        return old

    def alloc(self) -> int:
        """A free slot (slow path; the engine pops ``free`` itself)."""
        free = self.free
        return free.pop() if free else self.grow()


class Level:
    """All resting orders at one price: slots linked oldest first.

    ``qty`` is the sum of ``rem`` over the level's orders. ``side`` is the
    ``BookSide`` the level belongs to, so a cancel can drop an emptied level
    without looking its side up. A level exists only while it holds orders.
    """

    __slots__ = ("head", "key", "price", "qty", "side", "tail")

    def __init__(self, side: BookSide, price: int, key: int, head: int, qty: int) -> None:
        self.side = side
        self.price = price
        self.key = key
        self.qty = qty
        self.head = head
        self.tail = head

    def slots(self, nxt: list[int]) -> Iterator[int]:
        """The level's slots in time priority (not for the hot path)."""
        s = self.head
        while s != NIL:
            yield s
            s = nxt[s]


class BookSide:
    """The bids or the asks: levels by key, and the keys in use sorted, best last.

    ``sign`` is 1 for bids and -1 for asks: ``key == sign * price``.
    """

    __slots__ = ("keys", "levels", "sign", "table")

    def __init__(self, sign: int, table: OrderTable) -> None:
        self.sign = sign
        self.table = table
        self.levels: dict[int, Level] = {}
        self.keys: list[int] = []

    def add_level(self, s: int, price: int, key: int) -> None:
        """Create the level for ``key`` (which must not exist) holding slot ``s``."""
        table = self.table
        level = Level(self, price, key, s, table.rem[s])
        table.prev[s] = NIL
        table.next[s] = NIL
        table.level[s] = level
        self.levels[key] = level
        keys = self.keys
        if not keys or key > keys[-1]:
            keys.append(key)
        else:
            insort(keys, key)

    def drop_level(self, key: int) -> None:
        """Forget the (empty) level at ``key``."""
        del self.levels[key]
        keys = self.keys
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def append(self, s: int, price: int, key: int) -> None:
        """Rest slot ``s`` at the back of the level for ``key`` (creating it)."""
        level = self.levels.get(key)
        if level is None:
            self.add_level(s, price, key)
            return
        table = self.table
        tail = level.tail
        table.next[tail] = s
        table.prev[s] = tail
        table.next[s] = NIL
        table.level[s] = level
        level.tail = s
        level.qty += table.rem[s]

    def unlink(self, s: int) -> None:
        """Take slot ``s`` out of its level, dropping the level if it empties."""
        table = self.table
        prev = table.prev
        nxt = table.next
        level = table.level[s]
        assert level is not None
        n = nxt[s]
        if level.head == s:
            # A head's prev is stale (never read), and so becomes n's.
            if n == NIL:
                self.drop_level(level.key)
                return
            level.head = n
        else:
            p = prev[s]
            nxt[p] = n
            if n == NIL:
                level.tail = p
            else:
                prev[n] = p
        level.qty -= table.rem[s]

    def best_price(self) -> int | None:
        keys = self.keys
        return keys[-1] * self.sign if keys else None

    def depth(self, levels: int) -> list[tuple[int, int]]:
        """Up to ``levels`` levels as ``(price, total_qty)``, best first."""
        if levels <= 0:
            return []
        by_key = self.levels
        out = []
        for key in reversed(self.keys[-levels:]):
            level = by_key[key]
            out.append((level.price, level.qty))
        return out

    def iter_levels(self) -> Iterator[Level]:
        """Every level, best first."""
        by_key = self.levels
        for key in reversed(self.keys):
            yield by_key[key]

    def iter_slots(self) -> Iterator[int]:
        """Every resting order's slot in priority order: best price, then time."""
        nxt = self.table.next
        for level in self.iter_levels():
            yield from level.slots(nxt)
