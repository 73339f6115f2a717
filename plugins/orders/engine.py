"""The built-in price-time priority matching engine, one instance per symbol.

Strategy
--------
Prices are integer ticks and quantities integer lots (``spec.SymbolSpec``
converts from the decimal strings clients send). Orders match best price
first and, at one price, oldest first; a trade always prints at the resting
(maker) order's price. The engine reads no clock and draws no random number:
the same commands give the same events, the same ``state_hash()`` and the same
``snapshot()`` bytes, every time, which is what the journal's replay relies on.

The hot paths (``new``, ``cancel`` and the matching loop ``_take``) are written
for CPython's specialising interpreter and its garbage collector. Live orders
are rows of an ``OrderTable`` (``book.py``: one list per field) rather than
objects, so a resting order allocates nothing the collector tracks and a book
of any size adds nothing to its collections: with one object per order,
CPython's default GC halved throughput on a growing book and stalled single
operations for 100+ ms. Beyond that: locals over attributes, no exceptions for
control flow, and no allocation per operation but the event tuples, the list
that carries them back and, when an order is done, its record.

Rules
-----
* Order kinds: ``LIMIT`` (needs an integer ``price`` from 1 to ``MAX_PRICE``)
  and ``MARKET`` (``price`` is ignored and reported as ``None``). ``qty`` is
  an integer from 1 to ``MAX_QTY``.
* Time in force: ``GTC`` rests what does not fill; ``IOC`` expires it; ``FOK``
  fills completely at once or expires without touching the book. A market
  order never rests: what it cannot fill expires (``GTC`` counts as ``IOC``).
* ``post_only`` (GTC limits only) is rejected, never repriced, if it would
  take liquidity on arrival; a replace that would make it cross is rejected
  and leaves the order as it was.
* Replace (``price``/``qty``, either may be ``None`` for "unchanged"). ``qty``
  is the new *total* quantity, filled part included (as in FIX's OrderQty), so
  the remaining quantity becomes ``qty - filled``; it must stay positive. The
  order keeps its time priority when the price is unchanged and the remaining
  quantity does not grow; otherwise it leaves the book, takes liquidity as a
  new taker if the new price crosses, and rests what is left at the back of
  its new level.
* Self-trade prevention is the *taker's* ``stp`` mode, applied when the next
  maker in priority has the taker's ``account``: ``STP_CANCEL_TAKER`` cancels
  the taker's remainder (the maker stays), ``STP_CANCEL_MAKER`` cancels that
  maker and keeps matching, ``STP_CANCEL_BOTH`` cancels both, ``STP_NONE``
  lets them trade. A FOK order counts only the quantity it could really take
  under its STP mode.
* ``order_id`` is chosen by the caller. An id that is live (resting) is
  rejected as a duplicate; an id of a done order may be reused.

Events
------
Every operation returns a list of plain tuples, in the vocabulary of
``events`` (kinds, layouts, sequence numbers, reasons).

Done orders
-----------
``order(order_id)`` answers for live orders and for recently done ones (filled,
cancelled, expired, rejected): a bounded store the caller never has to prune.
When an order is done it leaves the order table (its slot is free at once, so
the table holds the live book only and stays small and cache-friendly) and
becomes a record: a tuple of ints, strings and None, which CPython's collector
stops tracking at its first young collection. Records are kept in generations
of ``DONE_GENERATION`` (a plain dict id -> position each, and a region of that
many positions in a ring of records made with the engine): when the young
generation's region is full it joins the old ones, and the oldest is dropped
(its region becomes the young one's) once the others hold ``done_capacity``
without it. So at least the last ``done_capacity`` done orders are always
found; eviction is by completion age (FIFO), not by lookups. Small generations
keep every dict small: neither a resize nor dropping a generation stalls one
operation for long (a 100k-entry dict's resize took 3-4 ms, and dropping 8192
records at once 0.7 ms). The dicts hold only ints, so the collector never
tracks them, and the ring is made at start-up, which the tiers that tune GC
freeze: with dicts of records, the first full collection walked every record
(17k of them: 2-4 ms, bench/engine) before it could untrack the dicts.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from typing import Any

import msgpack

from .book import NIL, BookSide, OrderTable
from .events import (
    BUY,
    C_STP,
    C_USER,
    E_FOK,
    E_IOC,
    E_MARKET,
    END_FILLED,
    END_STATUS,
    EV_ACCEPTED,
    EV_CANCELLED,
    EV_EXPIRED,
    EV_REJECTED,
    EV_REPLACED,
    EV_TRADE,
    FOK,
    GTC,
    IOC,
    LIMIT,
    MARKET,
    MAX_PRICE,
    MAX_QTY,
    R_DUPLICATE_ORDER_ID,
    R_INVALID_POST_ONLY,
    R_INVALID_PRICE,
    R_INVALID_QTY,
    R_INVALID_SIDE,
    R_INVALID_STP,
    R_INVALID_TIF,
    R_INVALID_TYPE,
    R_ORDER_DONE,
    R_POST_ONLY_WOULD_TAKE,
    R_UNKNOWN_ORDER,
    SELL,
    STP_CANCEL_BOTH,
    STP_CANCEL_MAKER,
    STP_CANCEL_TAKER,
    STP_NONE,
    Event,
    OrderState,
)

__all__ = [
    "DEFAULT_DONE_CAPACITY",
    "DONE_GENERATION",
    "PriceTimeEngine",
    "SnapshotError",
]

_STP_MODES = frozenset((STP_CANCEL_TAKER, STP_CANCEL_MAKER, STP_CANCEL_BOTH))

# A market order's limit: crosses every price (keys are +/- prices in ticks).
_NO_LIMIT_KEY = 1 << 127

_SNAPSHOT_VERSION = 1
_HASH_VERSION = 1
DEFAULT_DONE_CAPACITY = 16_384
"""Done orders ``order()`` still knows by default (module doc, "Done orders").

Kept small on purpose: the records are the engine's only objects that a full
collection walks (the first full collection after a run of the exchange mix
took 7.3 ms with 100k of them, 0.8 ms with 16k). A caller that must answer for
older orders passes a larger ``done_capacity``, or keeps its own history from
the events."""
ID_SHARDS = 256
"""Dicts the live orders' ids are spread over (by ``id & (ID_SHARDS - 1)``)."""
_ID_MASK = ID_SHARDS - 1
DONE_GENERATION = 2048
"""Done orders per generation of the done store. Dropping a generation frees
its records at once: 8192 of them stalled one operation for 0.7 ms, 2048 take
about a quarter of that. Looking a done order up scans the generations (up to
``done_capacity / DONE_GENERATION`` dicts): a slow path, for the API only."""


class SnapshotError(ValueError):
    """The bytes given to ``PriceTimeEngine.restore`` are not an engine snapshot."""


def _as_int(value: object, default: int) -> int:
    return value if type(value) is int else default


# A done order as the done store keeps it (and as a snapshot writes it, after
# its id): side, price, qty, remaining (what was cancelled, expired or
# rejected: 0 when filled), account, stp, post_only, end.
_Record = tuple[int, int | None, int, int, int, int, bool, str]
_RECORD_FIELDS = 8
_NO_RECORD: _Record = (-1, None, 0, 0, 0, 0, False, "")


class PriceTimeEngine:
    """A price-time priority order book and matcher for one symbol.

    Args:
        symbol: the symbol's name, carried into ``order()`` answers, the state
            hash and snapshots.
        done_capacity: how many done orders ``order()`` is guaranteed to still
            know (module doc, "Done orders").
        reserve: order-table slots made at once, so a book that stays within
            them never waits for the table to grow (``book.OrderTable``).
    """

    # The order table's columns are cached as attributes of the engine: one
    # attribute load per column per operation, then list indexing.
    __slots__ = (
        "_acct",
        "_asks",
        "_bids",
        "_done",
        "_done_cap",
        "_done_pos",
        "_free",
        "_gen_end",
        "_gen_keep",
        "_gen_size",
        "_level",
        "_next",
        "_oid",
        "_old",
        "_orders",
        "_post",
        "_prev",
        "_price",
        "_qty",
        "_rem",
        "_ring",
        "_side",
        "_stp",
        "_table",
        "sequence",
        "symbol",
        "trade_seq",
    )

    def __init__(
        self, symbol: str, *, done_capacity: int = DEFAULT_DONE_CAPACITY, reserve: int = 0
    ) -> None:
        if done_capacity < 1:
            raise ValueError("done_capacity must be at least 1")
        if reserve < 0:
            raise ValueError("reserve must not be negative")
        self.symbol = symbol
        #: The last event's sequence number (0 before the first event).
        self.sequence = 0
        #: The last trade's id (0 before the first trade).
        self.trade_seq = 0
        table = self._table = OrderTable(reserve)
        self._free = table.free
        self._oid = table.oid
        self._side = table.side
        self._price = table.price
        self._qty = table.qty
        self._rem = table.rem
        self._acct = table.account
        self._stp = table.stp
        self._post = table.post_only
        self._prev = table.prev
        self._next = table.next
        self._level = table.level
        self._bids = BookSide(1, table)
        self._asks = BookSide(-1, table)
        # Live (resting) orders: id -> slot, in ID_SHARDS dicts by the id's low
        # bits. One dict of 300k entries stalled the order that made it resize
        # for 5-70 ms (measured); a shard resizes 1/256 of that. The price:
        # consecutive ids no longer sit side by side in one table, and
        # liquibook's insert pattern runs ~12% slower (A/B, pinned; the
        # exchange mix does not move).
        self._orders: list[dict[int, int]] = [{} for _ in range(ID_SHARDS)]
        # Done orders (id -> position of the record in the ring): the young
        # generation, and the older ones, oldest first.
        self._done: dict[int, int] = {}
        self._old: deque[dict[int, int]] = deque()
        self._done_cap = done_capacity
        self._gen_size = min(DONE_GENERATION, done_capacity)
        self._gen_keep = -(-done_capacity // self._gen_size)  # old generations kept
        # A region of gen_size records per generation kept, the young one's
        # included, added as they fill. The list is made now, so the tiers that
        # freeze the start-up heap never have a collection walk it (module
        # doc, "Done orders").
        self._ring: list[_Record] = [_NO_RECORD] * self._gen_size
        self._done_pos = 0
        self._gen_end = self._gen_size

    # -- commands ------------------------------------------------------------

    def new(
        self,
        order_id: int,
        side: int,
        price: int | None,
        qty: int,
        kind: int = LIMIT,
        tif: int = GTC,
        post_only: bool = False,
        account: int = 0,
        stp: int = STP_NONE,
    ) -> list[Event]:
        """Enter a new order; returns its events (module doc, "Events").

        Rejections, checked in this order: ``duplicate_order_id`` (the id is
        live), ``invalid_side``, ``invalid_type``, ``invalid_price`` (a limit
        without an integer price in 1..MAX_PRICE), ``invalid_qty`` (not an
        integer in 1..MAX_QTY), ``invalid_tif``, ``invalid_stp``, ``invalid_post_only``
        (post-only on anything but a GTC limit), ``post_only_would_take``.
        """
        orders = self._orders[order_id & _ID_MASK]
        if order_id in orders:
            return self._reject(order_id, R_DUPLICATE_ORDER_ID)
        if side == BUY:
            own = self._bids
            opp = self._asks
        elif side == SELL:
            own = self._asks
            opp = self._bids
        else:
            return self._reject_new(order_id, side, price, qty, account, R_INVALID_SIDE)
        if kind == LIMIT:
            if type(price) is not int or not 0 < price <= MAX_PRICE:
                return self._reject_new(order_id, side, price, qty, account, R_INVALID_PRICE)
            key = price if side == BUY else -price
        elif kind == MARKET:
            price = None
            key = _NO_LIMIT_KEY
        else:
            return self._reject_new(order_id, side, price, qty, account, R_INVALID_TYPE)
        if type(qty) is not int or not 0 < qty <= MAX_QTY:
            return self._reject_new(order_id, side, price, qty, account, R_INVALID_QTY)
        # Chained comparisons, not "in (GTC, IOC, FOK)": the constants are
        # globals, so that would build a tuple per call; GTC stops at the first.
        if tif != GTC and tif != IOC and tif != FOK:  # noqa: PLR1714
            return self._reject_new(order_id, side, price, qty, account, R_INVALID_TIF)
        if stp and stp not in _STP_MODES:
            return self._reject_new(order_id, side, price, qty, account, R_INVALID_STP)
        if post_only and (kind != LIMIT or tif != GTC):
            return self._reject_new(order_id, side, price, qty, account, R_INVALID_POST_ONLY)

        okeys = opp.keys
        if not okeys or okeys[-1] + key < 0:
            # Nothing to take.
            if kind == LIMIT and tif == GTC:
                # The common case: it rests.
                assert price is not None
                free = self._free
                s = free.pop() if free else self._table.grow()
                self._oid[s] = order_id
                self._side[s] = side
                self._price[s] = price
                self._qty[s] = qty
                self._rem[s] = qty
                self._acct[s] = account
                self._stp[s] = stp
                self._post[s] = post_only
                level = own.levels.get(key)
                if level is None:
                    own.add_level(s, price, key)
                else:
                    tail = level.tail
                    nxt = self._next
                    nxt[tail] = s
                    nxt[s] = NIL
                    self._prev[s] = tail
                    self._level[s] = level
                    level.tail = s
                    level.qty += qty
                orders[order_id] = s
                seq = self.sequence + 1
                self.sequence = seq
                return [(EV_ACCEPTED, seq, order_id, side, price, qty)]
            seq = self.sequence + 1
            ev: list[Event] = [(EV_ACCEPTED, seq, order_id, side, price, qty)]
            rem = qty
        else:
            # It crosses: it takes liquidity, or is refused for trying to.
            if post_only:
                return self._reject_new(order_id, side, price, qty, account, R_POST_ONLY_WOULD_TAKE)
            seq = self.sequence + 1
            self.sequence = seq
            ev = [(EV_ACCEPTED, seq, order_id, side, price, qty)]
            if tif == FOK and not self._fillable(opp, -key, qty, account, stp):
                rem = qty
            else:
                rem = self._take(ev, opp, order_id, side, -key, qty, account, stp)
                seq = self.sequence

        if rem == 0:
            end = END_FILLED
        elif rem < 0:
            # STP cancelled the taker (``_take`` answers ~rem).
            rem = ~rem
            seq += 1
            ev.append((EV_CANCELLED, seq, order_id, rem, C_STP))
            end = C_STP
        elif kind == MARKET or tif != GTC:
            end = E_FOK if tif == FOK else E_MARKET if kind == MARKET else E_IOC
            seq += 1
            ev.append((EV_EXPIRED, seq, order_id, rem, end))
        else:
            # A GTC limit with quantity left after taking: it rests. These
            # stores repeat the resting fast path's above on purpose: a shared
            # helper would add an eight-argument call to the commonest
            # operation; change both together (test_engine holds them to the
            # reference model).
            assert price is not None
            free = self._free
            s = free.pop() if free else self._table.grow()
            self._oid[s] = order_id
            self._side[s] = side
            self._price[s] = price
            self._qty[s] = qty
            self._rem[s] = rem
            self._acct[s] = account
            self._stp[s] = stp
            self._post[s] = post_only
            own.append(s, price, key)
            orders[order_id] = s
            self.sequence = seq
            return ev
        # Done without resting: remembered as a tuple, no table slot.
        self.sequence = seq
        self._remember(order_id, (side, price, qty, rem, account, stp, post_only, end))
        return ev

    def cancel(self, order_id: int) -> list[Event]:
        """Cancel a live order: ``cancelled`` (reason ``user``), or ``rejected``
        with ``unknown_order`` or ``order_done`` (it is known but already done).
        """
        s = self._orders[order_id & _ID_MASK].pop(order_id, None)
        if s is None:
            return self._reject_missing(order_id)
        rem = self._rem[s]
        level = self._level[s]
        assert level is not None
        nxt = self._next
        n = nxt[s]
        if level.head == s:
            if n == NIL:
                level.side.drop_level(level.key)
            else:
                level.head = n
                level.qty -= rem
        else:
            p = self._prev[s]
            nxt[p] = n
            if n == NIL:
                level.tail = p
            else:
                self._prev[n] = p
            level.qty -= rem
        self._remember(
            order_id,
            (
                self._side[s],
                level.price,
                self._qty[s],
                rem,
                self._acct[s],
                self._stp[s],
                self._post[s],
                C_USER,
            ),
        )
        self._free.append(s)
        seq = self.sequence + 1
        self.sequence = seq
        return [(EV_CANCELLED, seq, order_id, rem, C_USER)]

    def replace(
        self, order_id: int, price: int | None = None, qty: int | None = None
    ) -> list[Event]:
        """Change a live order's price and/or total quantity (module doc, "Rules").

        Returns ``replaced`` (``kept_priority`` says whether it kept its place),
        then, if the new price crosses, its trades as a taker and possibly a
        ``cancelled`` (STP). Rejections: ``unknown_order``, ``order_done``,
        ``invalid_price`` (not in 1..MAX_PRICE), ``invalid_qty`` (not an
        integer above the filled quantity and at most MAX_QTY),
        ``post_only_would_take``; a rejected replace changes nothing.
        """
        s = self._orders[order_id & _ID_MASK].get(order_id)
        if s is None:
            return self._reject_missing(order_id)
        old_price = self._price[s]
        assert old_price is not None
        new_price = old_price if price is None else price
        if type(new_price) is not int or not 0 < new_price <= MAX_PRICE:
            return self._reject(order_id, R_INVALID_PRICE)
        old_qty = self._qty[s]
        old_rem = self._rem[s]
        filled = old_qty - old_rem
        new_qty = old_qty if qty is None else qty
        if type(new_qty) is not int or not filled < new_qty <= MAX_QTY:
            return self._reject(order_id, R_INVALID_QTY)
        new_rem = new_qty - filled
        if new_price == old_price and new_rem <= old_rem:
            level = self._level[s]
            assert level is not None
            level.qty -= old_rem - new_rem
            self._rem[s] = new_rem
            self._qty[s] = new_qty
            seq = self.sequence + 1
            self.sequence = seq
            return [(EV_REPLACED, seq, order_id, new_price, new_qty, new_rem, True)]

        side = self._side[s]
        own, opp = (self._bids, self._asks) if side == BUY else (self._asks, self._bids)
        key = new_price if side == BUY else -new_price
        okeys = opp.keys
        crosses = bool(okeys) and okeys[-1] + key >= 0
        if crosses and self._post[s]:
            return self._reject(order_id, R_POST_ONLY_WOULD_TAKE)
        own.unlink(s)
        self._price[s] = new_price
        self._qty[s] = new_qty
        self._rem[s] = new_rem
        seq = self.sequence + 1
        self.sequence = seq
        ev: list[Event] = [(EV_REPLACED, seq, order_id, new_price, new_qty, new_rem, False)]
        rem = new_rem
        if crosses:
            rem = self._take(ev, opp, order_id, side, -key, new_rem, self._acct[s], self._stp[s])
            killed = rem < 0
            if killed:
                rem = ~rem
            self._rem[s] = rem
        else:
            killed = False
        if rem and not killed:
            own.append(s, new_price, key)
            return ev
        del self._orders[order_id & _ID_MASK][order_id]
        if killed:
            seq = self.sequence + 1
            self.sequence = seq
            ev.append((EV_CANCELLED, seq, order_id, rem, C_STP))
        self._retire(order_id, s, C_STP if killed else END_FILLED)
        return ev

    # -- matching ------------------------------------------------------------

    def _take(
        self,
        ev: list[Event],
        opp: BookSide,
        taker_id: int,
        side: int,
        limit_key: int,
        rem: int,
        account: int,
        stp: int,
    ) -> int:
        """Match a taker against ``opp`` while its best key is >= ``limit_key``.

        Appends the trades (and STP cancels of makers) to ``ev``, advances the
        sequence and trade counters, retires filled and STP-cancelled makers.
        Returns the taker's remaining quantity, or ``~remaining`` (negative)
        if STP cancelled the taker; the caller emits the taker's own closing
        event. (An int and not a tuple: the crossing path is hot.)
        """
        keys = opp.keys
        levels = opp.levels
        shards = self._orders
        remember = self._remember
        ring = self._ring
        done = self._done
        pos = self._done_pos
        gen_end = self._gen_end
        free = self._free
        oids = self._oid
        rems = self._rem
        nxt = self._next
        qtys = self._qty
        accts = self._acct
        stps = self._stp
        posts = self._post
        maker_side = SELL if side == BUY else BUY
        seq = self.sequence
        tid = self.trade_seq
        killed = False
        while keys:
            key = keys[-1]
            if key < limit_key:
                break
            level = levels[key]
            price = level.price
            lqty = level.qty
            s = level.head
            while s != NIL:
                if stp and accts[s] == account:
                    if stp == STP_CANCEL_TAKER:
                        killed = True
                        break
                    # Cancel the maker (STP_CANCEL_MAKER or STP_CANCEL_BOTH).
                    mrem = rems[s]
                    moid = oids[s]
                    seq += 1
                    ev.append((EV_CANCELLED, seq, moid, mrem, C_STP))
                    lqty -= mrem
                    del shards[moid & _ID_MASK][moid]
                    self._done_pos = pos
                    remember(
                        moid,
                        (maker_side, price, qtys[s], mrem, accts[s], stps[s], posts[s], C_STP),
                    )
                    done = self._done
                    pos = self._done_pos
                    gen_end = self._gen_end
                    free.append(s)  # not handed out again before this call returns
                    s = nxt[s]
                    if stp == STP_CANCEL_BOTH:
                        killed = True
                        break
                    continue
                mrem = rems[s]
                seq += 1
                tid += 1
                if mrem <= rem:
                    moid = oids[s]
                    ev.append((EV_TRADE, seq, tid, moid, taker_id, price, mrem, side))
                    rem -= mrem
                    lqty -= mrem
                    del shards[moid & _ID_MASK][moid]
                    # _remember's stores, on locals: filling a maker is the hottest path.
                    ring[pos] = (
                        maker_side,
                        price,
                        qtys[s],
                        0,
                        accts[s],
                        stps[s],
                        posts[s],
                        END_FILLED,
                    )
                    done[moid] = pos
                    pos += 1
                    if pos == gen_end:
                        self._done_pos = pos
                        self._next_generation()
                        done = self._done
                        pos = self._done_pos
                        gen_end = self._gen_end
                    free.append(s)
                    s = nxt[s]
                    if not rem:
                        break
                else:
                    ev.append((EV_TRADE, seq, tid, oids[s], taker_id, price, rem, side))
                    rems[s] = mrem - rem
                    lqty -= rem
                    rem = 0
                    break
            if s == NIL:
                del levels[key]
                keys.pop()
            else:
                level.head = s  # its prev is stale now: a head's prev is never read
                level.qty = lqty
            if killed or not rem:
                break
        self.sequence = seq
        self.trade_seq = tid
        self._done_pos = pos
        return ~rem if killed else rem

    def _fillable(self, opp: BookSide, limit_key: int, qty: int, account: int, stp: int) -> bool:
        """Whether a FOK taker could fill ``qty`` now (its STP mode counted)."""
        levels = opp.levels
        rems = self._rem
        accts = self._acct
        nxt = self._next
        for key in reversed(opp.keys):
            if key < limit_key:
                return False
            level = levels[key]
            if not stp:
                qty -= level.qty
                if qty <= 0:
                    return True
                continue
            s = level.head
            while s != NIL:
                if accts[s] == account:
                    if stp != STP_CANCEL_MAKER:
                        return False  # the taker would be cancelled here
                else:
                    qty -= rems[s]
                    if qty <= 0:
                        return True
                s = nxt[s]
        return False

    # -- done orders -----------------------------------------------------------

    def _retire(self, order_id: int, s: int, end: str) -> None:
        """Move a rested order that is done from its slot to the done store."""
        # The slot's record without its id, and how it ended (not a hot path:
        # cancels and fills store their records inline).
        self._remember(order_id, (*self._record(s)[1:], end))
        self._free.append(s)

    def _remember(self, order_id: int, record: _Record) -> None:
        """Keep a done order's record in the young generation."""
        pos = self._done_pos
        self._ring[pos] = record
        self._done[order_id] = pos
        pos += 1
        self._done_pos = pos
        if pos == self._gen_end:
            self._next_generation()

    def _next_generation(self) -> None:
        """The young generation of done orders joins the old ones; the oldest
        is forgotten once enough are kept without it, and its ring region is
        the new young generation's."""
        old = self._old
        old.append(self._done)
        self._done = {}
        if len(old) > self._gen_keep:
            old.popleft()
        start = self._gen_end
        ring = self._ring
        if start == len(ring):
            if start < (self._gen_keep + 1) * self._gen_size:
                ring += [_NO_RECORD] * self._gen_size
            else:
                start = 0
        self._done_pos = start
        self._gen_end = start + self._gen_size

    def _done_entry(self, order_id: int) -> _Record | None:
        """A done order's record, or None."""
        pos = self._done.get(order_id)
        if pos is None:
            for gen in reversed(self._old):
                pos = gen.get(order_id)
                if pos is not None:
                    break
            else:
                return None
        return self._ring[pos]

    # -- rejections ------------------------------------------------------------

    def _reject(self, order_id: int, reason: str) -> list[Event]:
        seq = self.sequence + 1
        self.sequence = seq
        return [(EV_REJECTED, seq, order_id, reason)]

    def _reject_missing(self, order_id: int) -> list[Event]:
        known = self._done_entry(order_id) is not None
        return self._reject(order_id, R_ORDER_DONE if known else R_UNKNOWN_ORDER)

    def _reject_new(
        self, order_id: int, side: object, price: object, qty: object, account: object, reason: str
    ) -> list[Event]:
        """Reject a new order and remember it as a rejected order."""
        q = _as_int(qty, 0)
        record = (
            _as_int(side, -1),
            price if type(price) is int else None,
            q,
            q,
            _as_int(account, 0),
            STP_NONE,
            False,
            reason,
        )
        self._remember(order_id, record)
        return self._reject(order_id, reason)

    # -- queries ---------------------------------------------------------------

    def best_bid(self) -> int | None:
        """The highest resting buy price in ticks, or ``None``."""
        keys = self._bids.keys
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        """The lowest resting sell price in ticks, or ``None``."""
        keys = self._asks.keys
        return -keys[-1] if keys else None

    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """``(bids, asks)``: up to ``levels`` ``(price, total_qty)`` each, best first."""
        return self._bids.depth(levels), self._asks.depth(levels)

    @property
    def open_orders(self) -> int:
        """How many orders rest in the book."""
        return sum(map(len, self._orders))

    def order(self, order_id: int) -> OrderState | None:
        """The state of a live or recently done order (module doc), or ``None``."""
        s = self._orders[order_id & _ID_MASK].get(order_id)
        if s is not None:
            qty = self._qty[s]
            rem = self._rem[s]
            status = "partially_filled" if rem < qty else "new"
            return OrderState(
                order_id,
                self.symbol,
                self._side[s],
                self._price[s],
                qty,
                qty - rem,
                rem,
                0,
                status,
                None,
                self._acct[s],
                self._post[s],
            )
        entry = self._done_entry(order_id)
        if entry is None:
            return None
        side, price, qty, rem, account, _stp, post_only, end = entry
        return OrderState(
            order_id,
            self.symbol,
            side,
            price,
            qty,
            qty - rem,
            0,
            rem,
            END_STATUS.get(end, "rejected"),
            None if end == END_FILLED else end,
            account,
            post_only,
        )

    def iter_book(self) -> Iterator[tuple[int, int, int, int]]:
        """Every resting order as ``(side, price, order_id, remaining)``: the bids
        then the asks, each in priority order (best price first, then time)."""
        for side, book in ((BUY, self._bids), (SELL, self._asks)):
            for level in book.iter_levels():
                for s in level.slots(self._next):
                    yield side, level.price, self._oid[s], self._rem[s]

    def check_integrity(self) -> None:
        """Check every internal invariant of the book (slow; for tests).

        Raises:
            AssertionError: with what is wrong.
        """
        table = self._table
        live: set[int] = set()
        for side, book in ((BUY, self._bids), (SELL, self._asks)):
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
                    assert self._orders[oid & _ID_MASK].get(oid) == s, f"slot {s} not live"
                    total += table.rem[s]
                    last = s
                    live.add(s)
                assert level.tail == last, "level tail"
                assert total == level.qty and total > 0, "level qty"
        assert len(live) == self.open_orders, "live orders out of the book"
        bid, ask = self.best_bid(), self.best_ask()
        assert bid is None or ask is None or bid < ask, "book crossed"
        assert self._done_pos < self._gen_end, "young generation not moved on"
        assert self._gen_end % self._gen_size == 0, "generation off its region"
        assert len(self._old) <= self._gen_keep, "too many generations"
        assert all(len(gen) <= self._gen_size for gen in [*self._old, self._done]), "big gen"
        free = set(table.free)
        assert len(free) == len(table.free), "a slot freed twice"
        assert not live & free, "a live slot is free"
        assert len(free) + len(live) == table.size, "a slot is lost"

    # -- state -------------------------------------------------------------------

    def _record(self, s: int) -> list[Any]:
        return [
            self._oid[s],
            self._side[s],
            self._price[s],
            self._qty[s],
            self._rem[s],
            self._acct[s],
            self._stp[s],
            self._post[s],
        ]

    def _book_records(self) -> list[list[Any]]:
        return [self._record(s) for book in (self._bids, self._asks) for s in book.iter_slots()]

    def state_hash(self) -> str:
        """A digest of the book: every resting order in priority order (id, side,
        price, total and remaining quantity, account, STP mode, post-only), the
        sequence and the trade counter. Identical histories give identical
        hashes; done orders (kept only for lookups) are not part of it.
        """
        payload = msgpack.packb(
            [_HASH_VERSION, self.symbol, self.sequence, self.trade_seq, self._book_records()]
        )
        return hashlib.blake2b(payload, digest_size=16).hexdigest()

    def snapshot(self) -> bytes:
        """The whole engine as msgpack bytes: ``restore`` gives it back exactly."""
        gens = [*self._old, self._done]
        data = {
            "v": _SNAPSHOT_VERSION,
            "symbol": self.symbol,
            "sequence": self.sequence,
            "trade_seq": self.trade_seq,
            "done_capacity": self._done_cap,
            "book": self._book_records(),
            # Oldest generation first; in each, the orders as they retired.
            "done": [[[oid, *self._ring[pos]] for oid, pos in gen.items()] for gen in gens],
            # Records the young generation took, reused ids counted: where it
            # closes, so a restored engine moves on to its next one in step.
            "young_used": self._done_pos - (self._gen_end - self._gen_size),
        }
        packed: bytes = msgpack.packb(data)
        return packed

    @classmethod
    def restore(cls, data: bytes, *, reserve: int = 0) -> PriceTimeEngine:
        """Rebuild an engine from ``snapshot()`` bytes (``reserve`` as for a new one).

        Raises:
            SnapshotError: the bytes are not a snapshot this version can read.
        """
        try:
            d = msgpack.unpackb(data)
            if not isinstance(d, dict) or d.get("v") != _SNAPSHOT_VERSION:
                raise SnapshotError("not a price-time engine snapshot (version)")
            engine = cls(d["symbol"], done_capacity=d["done_capacity"], reserve=reserve)
            engine.sequence = d["sequence"]
            engine.trade_seq = d["trade_seq"]
            engine._load(d["book"], d["done"], d.get("young_used"))
        except SnapshotError:
            raise
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise SnapshotError(f"not a price-time engine snapshot: {exc}") from exc
        except msgpack.UnpackException as exc:
            raise SnapshotError(f"not a price-time engine snapshot: {exc}") from exc
        return engine

    def _fill(self, rec: list[Any]) -> int:
        s = self._table.alloc()
        (
            self._oid[s],
            self._side[s],
            self._price[s],
            self._qty[s],
            self._rem[s],
            self._acct[s],
            self._stp[s],
            self._post[s],
        ) = rec[:8]
        return s

    def _load(
        self, book: list[list[Any]], done: list[list[list[Any]]], young_used: int | None
    ) -> None:
        for rec in book:
            s = self._fill(rec)
            oid, side, price = rec[0], rec[1], rec[2]
            if side == BUY:
                self._bids.append(s, price, price)
            else:
                self._asks.append(s, price, -price)
            self._orders[oid & _ID_MASK][oid] = s
        if not done:
            raise ValueError("no done generation")
        for i, recs in enumerate(done):
            for oid, *fields in recs:
                if len(fields) != _RECORD_FIELDS:
                    raise ValueError("bad done record")
                self._remember(oid, tuple(fields))
            # A generation holds fewer ids than records when an id was reused
            # in it: close it where the original did, not where its region is full.
            if i < len(done) - 1 and self._done:
                self._next_generation()
        if young_used is not None:
            start = self._gen_end - self._gen_size
            if not len(self._done) <= young_used < self._gen_size:
                raise ValueError("bad young_used")
            self._done_pos = start + young_used
