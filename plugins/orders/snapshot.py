"""The price-time engine's persistence: snapshots, restore and the state hash.

Strategy
--------
The journal's replay and the service's checkpoints rely on the engine being
deterministic; this module turns that into bytes. ``snapshot(engine)`` writes
everything ``restore`` needs to give the same engine back *exactly*: the same
later events, the same ``order()`` answers, and the same snapshot bytes after
the same later commands (the done store's generations close at the same
commands, so its records are written generation by generation, with where the
young one stands). ``state_hash(engine)`` is a digest of what the book *is*:
the resting orders in priority order, the sequence and the trade counter;
done orders (kept only for lookups) are not part of it.

The engine (``engine.py``) does not import this module: it is the hot core,
and this its cold layer, reading the engine's fields as a friend. The
built-in engine kind (``plugin.py``) routes the ``sprintd_order_engines``
hook's ``restore``, ``snapshot`` and ``state_hash`` here.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

from .done import RECORD_FIELDS, DoneRing
from .engine import ID_MASK, PriceTimeEngine
from .events import BUY

__all__ = ["SnapshotError", "restore", "snapshot", "state_hash"]

_SNAPSHOT_VERSION = 1
_HASH_VERSION = 1


class SnapshotError(ValueError):
    """The bytes given to ``restore`` are not a price-time engine snapshot."""


def _book(engine: PriceTimeEngine) -> list[list[Any]]:
    """Every resting order's fields, bids then asks, each in priority order."""
    record = engine._record
    return [record(s) for book in (engine._bids, engine._asks) for s in book.iter_slots()]


def state_hash(engine: PriceTimeEngine) -> str:
    """A digest of the book: every resting order in priority order (id, side,
    price, total and remaining quantity, account, STP mode, post-only), the
    sequence and the trade counter. Identical histories give identical
    hashes; done orders (kept only for lookups) are not part of it.
    """
    payload = msgpack.packb(
        [_HASH_VERSION, engine.symbol, engine.sequence, engine.trade_seq, _book(engine)]
    )
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def snapshot(engine: PriceTimeEngine) -> bytes:
    """The whole engine as msgpack bytes: ``restore`` gives it back exactly."""
    done = engine._done
    data = {
        "v": _SNAPSHOT_VERSION,
        "symbol": engine.symbol,
        "sequence": engine.sequence,
        "trade_seq": engine.trade_seq,
        "done_capacity": done.capacity,
        "book": _book(engine),
        # Oldest generation first; in each, the orders as they retired.
        "done": [
            [[oid, *done.ring[pos]] for oid, pos in gen.items()] for gen in [*done.old, done.young]
        ],
        # Records the young generation took, reused ids counted: where it
        # closes, so a restored engine moves on to its next one in step.
        "young_used": done.pos - (done.end - done.size),
    }
    packed: bytes = msgpack.packb(data)
    return packed


def restore(
    data: bytes, *, reserve: int = 0, engine_class: type[PriceTimeEngine] = PriceTimeEngine
) -> PriceTimeEngine:
    """Rebuild an engine from ``snapshot()`` bytes.

    Args:
        data: the snapshot.
        reserve: order-table slots, as for a new engine.
        engine_class: ``PriceTimeEngine`` or a subclass of it, made with the
            snapshot's symbol and done capacity.

    Raises:
        SnapshotError: the bytes are not a snapshot this version can read.
    """
    try:
        d = msgpack.unpackb(data)
        if not isinstance(d, dict) or d.get("v") != _SNAPSHOT_VERSION:
            raise SnapshotError("not a price-time engine snapshot (version)")
        engine = engine_class(d["symbol"], done_capacity=d["done_capacity"], reserve=reserve)
        engine.sequence = d["sequence"]
        engine.trade_seq = d["trade_seq"]
        _load_book(engine, d["book"])
        _load_done(engine._done, d["done"], d.get("young_used"))
    except SnapshotError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise SnapshotError(f"not a price-time engine snapshot: {exc}") from exc
    except msgpack.UnpackException as exc:
        raise SnapshotError(f"not a price-time engine snapshot: {exc}") from exc
    return engine


def _load_book(engine: PriceTimeEngine, book: list[list[Any]]) -> None:
    """Rest the orders again, in the order written (priority order per side)."""
    table = engine._table
    for rec in book:
        s = table.alloc()
        (
            table.oid[s],
            table.side[s],
            table.price[s],
            table.qty[s],
            table.rem[s],
            table.account[s],
            table.stp[s],
            table.post_only[s],
        ) = rec[:8]
        oid, side, price = rec[0], rec[1], rec[2]
        if side == BUY:
            engine._bids.append(s, price, price)
        else:
            engine._asks.append(s, price, -price)
        engine._orders[oid & ID_MASK][oid] = s


def _load_done(done: DoneRing, generations: list[list[list[Any]]], young_used: int | None) -> None:
    """Remember the records generation by generation, closing each where the
    original closed it."""
    if not generations:
        raise ValueError("no done generation")
    for i, recs in enumerate(generations):
        for oid, *fields in recs:
            if len(fields) != RECORD_FIELDS:
                raise ValueError("bad done record")
            done.remember(oid, tuple(fields))
        # A generation holds fewer ids than records when an id was reused
        # in it: close it where the original did, not where its region is full.
        if i < len(generations) - 1 and done.young:
            done.next_generation()
    if young_used is not None:
        start = done.end - done.size
        if not len(done.young) <= young_used < done.size:
            raise ValueError("bad young_used")
        done.pos = start + young_used
