"""The built-in price-time priority matching engine, one instance per symbol.

Strategy
--------
Prices are integer ticks and quantities integer lots (``spec.SymbolSpec``
converts from the decimal strings clients send). Orders match best price
first and, at one price, oldest first; a trade always prints at the resting
(maker) order's price. The engine reads no clock and draws no random number:
the same commands give the same events, the same state hash and the same
snapshot bytes (``snapshot`` module), every time, which is what the journal's replay relies on.

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
``order(order_id)`` answers for live orders and for recently done ones: a
done order leaves the order table for a record in the done store
(``done.DoneRing``), which the matching loop fills on locals for the makers it
fills. Persistence (``snapshot``: snapshots, restore and the state hash) and
the invariant check (``integrity``) are modules of their own that read this
class's fields; this module imports neither.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from mypy_extensions import mypyc_attr

from .book import NIL, BookSide, OrderTable
from .done import DEFAULT_DONE_CAPACITY, DoneRing
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

__all__ = ["ID_MASK", "ID_SHARDS", "PriceTimeEngine"]

_STP_MODES = frozenset((STP_CANCEL_TAKER, STP_CANCEL_MAKER, STP_CANCEL_BOTH))

# A market order's limit: crosses every price (keys are +/- prices in ticks).
_NO_LIMIT_KEY = 1 << 127

ID_SHARDS = 256
"""Dicts the live orders' ids are spread over (by ``id & (ID_SHARDS - 1)``)."""
ID_MASK = ID_SHARDS - 1


def _as_int(value: object, default: int) -> int:
    return value if type(value) is int else default


# Compiled (setup.py), a class is closed to Python subclasses unless it says
# otherwise; an engine plugin may build on this one (``sprintd_order_engines``).
@mypyc_attr(allow_interpreted_subclasses=True)
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
        "_free",
        "_level",
        "_next",
        "_oid",
        "_orders",
        "_post",
        "_prev",
        "_price",
        "_qty",
        "_rem",
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
        # Done orders' records. The retire paths call ``self._done.remember``
        # (a slot, then a method: both specialised by CPython 3.11; a bound
        # method cached in a slot is not, and cost the exchange mix ~5%).
        self._done = DoneRing(done_capacity)

    # -- commands ------------------------------------------------------------

    # ``price`` and ``qty`` are ``object``, not ``int``: a value of another type
    # is rejected with an event, and mypyc (setup.py) would turn an ``int``
    # annotation into a TypeError at the call, where the compiled engine must
    # answer as this source does (tests/test_compiled.py).

    def new(
        self,
        order_id: int,
        side: int,
        price: object,
        qty: object,
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
        orders = self._orders[order_id & ID_MASK]
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
        self._done.remember(order_id, (side, price, qty, rem, account, stp, post_only, end))
        return ev

    def cancel(self, order_id: int) -> list[Event]:
        """Cancel a live order: ``cancelled`` (reason ``user``), or ``rejected``
        with ``unknown_order`` or ``order_done`` (it is known but already done).
        """
        s = self._orders[order_id & ID_MASK].pop(order_id, None)
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
        self._done.remember(
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

    def replace(self, order_id: int, price: object = None, qty: object = None) -> list[Event]:
        """Change a live order's price and/or total quantity (module doc, "Rules").

        Returns ``replaced`` (``kept_priority`` says whether it kept its place),
        then, if the new price crosses, its trades as a taker and possibly a
        ``cancelled`` (STP). Rejections: ``unknown_order``, ``order_done``,
        ``invalid_price`` (not in 1..MAX_PRICE), ``invalid_qty`` (not an
        integer above the filled quantity and at most MAX_QTY),
        ``post_only_would_take``; a rejected replace changes nothing.
        """
        s = self._orders[order_id & ID_MASK].get(order_id)
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
        del self._orders[order_id & ID_MASK][order_id]
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
        store = self._done
        remember = store.remember
        ring = store.ring
        done = store.young
        pos = store.pos
        gen_end = store.end
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
                    del shards[moid & ID_MASK][moid]
                    store.pos = pos
                    remember(
                        moid,
                        (maker_side, price, qtys[s], mrem, accts[s], stps[s], posts[s], C_STP),
                    )
                    done = store.young
                    pos = store.pos
                    gen_end = store.end
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
                    del shards[moid & ID_MASK][moid]
                    # DoneRing.remember's stores, on locals: filling a maker is
                    # the hottest path.
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
                        store.pos = pos
                        store.next_generation()
                        done = store.young
                        pos = store.pos
                        gen_end = store.end
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
        store.pos = pos
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
        self._done.remember(order_id, (*self._record(s)[1:], end))
        self._free.append(s)

    # -- rejections ------------------------------------------------------------

    def _reject(self, order_id: int, reason: str) -> list[Event]:
        seq = self.sequence + 1
        self.sequence = seq
        return [(EV_REJECTED, seq, order_id, reason)]

    def _reject_missing(self, order_id: int) -> list[Event]:
        known = self._done.find(order_id) is not None
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
        self._done.remember(order_id, record)
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
        s = self._orders[order_id & ID_MASK].get(order_id)
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
        entry = self._done.find(order_id)
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

    def _record(self, s: int) -> list[Any]:
        """A resting order's fields, its id first (``snapshot`` writes these)."""
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
