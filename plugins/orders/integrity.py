"""Every internal invariant of the price-time engine, checked (slow; for tests).

Strategy
--------
The engine's hot paths keep its structures consistent by construction and
check nothing. This module walks them all after the fact, so the property
tests (``tests/test_engine.py``) can run it after every command: the levels
and their keys, each level's doubly linked queue of order-table slots and its
total, the id shards, the free list (no slot lost or freed twice), the book
not crossed, and the done store's generations within their bounds. It reads
the engine's fields as a friend; the engine does not import it.
"""

from __future__ import annotations

from .book import NIL
from .done import DoneRing
from .engine import ID_MASK, PriceTimeEngine
from .events import BUY, SELL

__all__ = ["check_integrity"]


def check_integrity(engine: PriceTimeEngine) -> None:
    """Check every invariant of the engine's book and done store.

    Raises:
        AssertionError: with what is wrong.
    """
    table = engine._table
    live: set[int] = set()
    for side, book in ((BUY, engine._bids), (SELL, engine._asks)):
        assert book.keys == sorted(book.levels), "keys out of step with levels"
        for key, level in book.levels.items():
            assert level.key == key and level.price * book.sign == key, "level key"
            assert level.side is book, "level side"
            total = 0
            last = NIL
            for s in level.slots(table.next):
                assert last == NIL or table.prev[s] == last, f"prev link of slot {s}"
                assert table.level[s] is level, f"level of slot {s}"
                assert table.side[s] == side and table.price[s] == level.price, "order side"
                assert 0 < table.rem[s] <= table.qty[s], f"remaining of slot {s}"
                oid = table.oid[s]
                assert engine._orders[oid & ID_MASK].get(oid) == s, f"slot {s} not live"
                total += table.rem[s]
                last = s
                live.add(s)
            assert level.tail == last, "level tail"
            assert total == level.qty and total > 0, "level qty"
    assert len(live) == engine.open_orders, "live orders out of the book"
    bid, ask = engine.best_bid(), engine.best_ask()
    assert bid is None or ask is None or bid < ask, "book crossed"
    _check_done(engine._done)
    free = set(table.free)
    assert len(free) == len(table.free), "a slot freed twice"
    assert not live & free, "a live slot is free"
    assert len(free) + len(live) == table.size, "a slot is lost"


def _check_done(done: DoneRing) -> None:
    assert done.pos < done.end, "young generation not moved on"
    assert done.end % done.size == 0, "generation off its region"
    assert len(done.old) <= done.keep, "too many generations"
    assert all(len(gen) <= done.size for gen in [*done.old, done.young]), "big gen"
