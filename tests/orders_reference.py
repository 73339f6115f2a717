"""A small, obviously correct model of the price-time engine, for the property tests.

It implements the rules of ``sprintd.plugins.orders.engine`` (see its module
docstring) in the plainest way: the resting book is one Python list of orders,
sorted on demand by (price, arrival); every command walks that list. It is
slow on purpose: nothing here is clever, so when the engine and the model
disagree, the engine is the suspect.

It emits the same event tuples as the engine (the constants are imported from
it: the layout is the contract under test, not the values). It keeps every
order it ever saw, so the tests give the engine a ``done_capacity`` larger
than any stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sprintd.plugins.orders.events import (
    BUY,
    C_STP,
    C_USER,
    E_FOK,
    E_IOC,
    E_MARKET,
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
)

Event = tuple[Any, ...]


@dataclass
class RefOrder:
    oid: int
    side: int
    price: int | None
    qty: int
    rem: int
    account: int
    stp: int
    post_only: bool
    arrival: int
    # "new" while it rests (partially filled or not), then how it ended.
    status: str = "new"
    reason: str | None = None

    @property
    def live(self) -> bool:
        return self.status == "new"


class ReferenceBook:
    def __init__(self) -> None:
        self.seq = 0
        self.trade_seq = 0
        self.clock = 0
        self.resting: list[RefOrder] = []
        # The latest order seen under each id.
        self.orders: dict[int, RefOrder] = {}

    # -- helpers -------------------------------------------------------------

    def _event(self, kind: int, *fields: Any) -> Event:
        self.seq += 1
        return (kind, self.seq, *fields)

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def side_in_priority(self, side: int) -> list[RefOrder]:
        """Resting orders of one side: best price first, then oldest first."""
        mine = [o for o in self.resting if o.side == side]
        if side == BUY:
            return sorted(mine, key=lambda o: (-(o.price or 0), o.arrival))
        return sorted(mine, key=lambda o: (o.price or 0, o.arrival))

    def book(self) -> list[tuple[int, int, int, int]]:
        """(side, price, order_id, remaining): bids then asks, in priority."""
        out = []
        for side in (BUY, SELL):
            for o in self.side_in_priority(side):
                assert o.price is not None
                out.append((side, o.price, o.oid, o.rem))
        return out

    @staticmethod
    def _crosses(taker_side: int, limit: int | None, maker: RefOrder) -> bool:
        assert maker.price is not None
        if limit is None:
            return True
        return maker.price <= limit if taker_side == BUY else maker.price >= limit

    def _makers(self, side: int, limit: int | None) -> list[RefOrder]:
        other = SELL if side == BUY else BUY
        return [m for m in self.side_in_priority(other) if self._crosses(side, limit, m)]

    def _can_fill(self, side: int, limit: int | None, qty: int, account: int, stp: int) -> bool:
        available = 0
        for m in self._makers(side, limit):
            if stp != STP_NONE and m.account == account:
                if stp == STP_CANCEL_MAKER:
                    continue
                return available >= qty
            available += m.rem
            if available >= qty:
                return True
        return available >= qty

    def _match(self, taker: RefOrder, events: list[Event]) -> bool:
        """Take liquidity for ``taker``; True if STP killed it."""
        for m in self._makers(taker.side, taker.price):
            if taker.rem == 0:
                break
            if taker.stp != STP_NONE and m.account == taker.account:
                if taker.stp == STP_CANCEL_TAKER:
                    return True
                self.resting.remove(m)
                m.status, m.reason = "cancelled", C_STP
                events.append(self._event(EV_CANCELLED, m.oid, m.rem, C_STP))
                if taker.stp == STP_CANCEL_BOTH:
                    return True
                continue
            q = min(taker.rem, m.rem)
            self.trade_seq += 1
            assert m.price is not None
            events.append(
                self._event(EV_TRADE, self.trade_seq, m.oid, taker.oid, m.price, q, taker.side)
            )
            m.rem -= q
            taker.rem -= q
            if m.rem == 0:
                self.resting.remove(m)
                m.status = "filled"
        return False

    def _reject_new(
        self, oid: int, side: Any, price: Any, qty: Any, account: Any, reason: str
    ) -> list[Event]:
        def as_int(v: Any, default: int) -> int:
            return v if type(v) is int else default

        q = as_int(qty, 0)
        self.orders[oid] = RefOrder(
            oid,
            as_int(side, -1),
            price if type(price) is int else None,
            q,
            q,
            as_int(account, 0),
            STP_NONE,
            False,
            self._tick(),
            "rejected",
            reason,
        )
        return [self._event(EV_REJECTED, oid, reason)]

    # -- commands ------------------------------------------------------------

    def new(
        self,
        oid: int,
        side: Any,
        price: Any,
        qty: Any,
        kind: Any = LIMIT,
        tif: Any = GTC,
        post_only: bool = False,
        account: int = 0,
        stp: Any = STP_NONE,
    ) -> list[Event]:
        known = self.orders.get(oid)
        if known is not None and known.live:
            return [self._event(EV_REJECTED, oid, R_DUPLICATE_ORDER_ID)]
        if side not in (BUY, SELL):
            return self._reject_new(oid, side, price, qty, account, R_INVALID_SIDE)
        if kind not in (LIMIT, MARKET):
            return self._reject_new(oid, side, price, qty, account, R_INVALID_TYPE)
        if kind == MARKET:
            price = None
        elif type(price) is not int or not 0 < price <= MAX_PRICE:
            return self._reject_new(oid, side, price, qty, account, R_INVALID_PRICE)
        reason = None
        if type(qty) is not int or not 0 < qty <= MAX_QTY:
            reason = R_INVALID_QTY
        elif tif not in (GTC, IOC, FOK):
            reason = R_INVALID_TIF
        elif stp not in (STP_NONE, STP_CANCEL_TAKER, STP_CANCEL_MAKER, STP_CANCEL_BOTH):
            reason = R_INVALID_STP
        elif post_only and (kind != LIMIT or tif != GTC):
            reason = R_INVALID_POST_ONLY
        elif post_only and self._makers(side, price):
            reason = R_POST_ONLY_WOULD_TAKE
        if reason is not None:
            return self._reject_new(oid, side, price, qty, account, reason)

        taker = RefOrder(oid, side, price, qty, qty, account, stp, post_only, self._tick())
        self.orders[oid] = taker
        events = [self._event(EV_ACCEPTED, oid, side, price, qty)]
        if tif == FOK and not self._can_fill(side, price, qty, account, stp):
            killed = False
        else:
            killed = self._match(taker, events)
        if taker.rem == 0:
            taker.status = "filled"
        elif killed:
            taker.status, taker.reason = "cancelled", C_STP
            events.append(self._event(EV_CANCELLED, oid, taker.rem, C_STP))
        elif kind == MARKET or tif != GTC:
            why = E_FOK if tif == FOK else E_MARKET if kind == MARKET else E_IOC
            taker.status, taker.reason = "expired", why
            events.append(self._event(EV_EXPIRED, oid, taker.rem, why))
        else:
            self.resting.append(taker)
        return events

    def _missing(self, oid: int) -> list[Event]:
        why = R_ORDER_DONE if oid in self.orders else R_UNKNOWN_ORDER
        return [self._event(EV_REJECTED, oid, why)]

    def cancel(self, oid: int) -> list[Event]:
        o = self.orders.get(oid)
        if o is None or not o.live:
            return self._missing(oid)
        self.resting.remove(o)
        o.status, o.reason = "cancelled", C_USER
        return [self._event(EV_CANCELLED, oid, o.rem, C_USER)]

    def replace(self, oid: int, price: Any = None, qty: Any = None) -> list[Event]:
        o = self.orders.get(oid)
        if o is None or not o.live:
            return self._missing(oid)
        new_price = o.price if price is None else price
        if type(new_price) is not int or not 0 < new_price <= MAX_PRICE:
            return [self._event(EV_REJECTED, oid, R_INVALID_PRICE)]
        filled = o.qty - o.rem
        new_qty = o.qty if qty is None else qty
        if type(new_qty) is not int or not filled < new_qty <= MAX_QTY:
            return [self._event(EV_REJECTED, oid, R_INVALID_QTY)]
        new_rem = new_qty - filled
        if new_price == o.price and new_rem <= o.rem:
            o.qty, o.rem = new_qty, new_rem
            return [self._event(EV_REPLACED, oid, new_price, new_qty, new_rem, True)]
        if o.post_only and self._makers(o.side, new_price):
            return [self._event(EV_REJECTED, oid, R_POST_ONLY_WOULD_TAKE)]
        self.resting.remove(o)
        o.price, o.qty, o.rem = new_price, new_qty, new_rem
        o.arrival = self._tick()
        events = [self._event(EV_REPLACED, oid, new_price, new_qty, new_rem, False)]
        killed = self._match(o, events)
        if killed:
            o.status, o.reason = "cancelled", C_STP
            events.append(self._event(EV_CANCELLED, oid, o.rem, C_STP))
        elif o.rem == 0:
            o.status = "filled"
        else:
            self.resting.append(o)
        return events

    # -- queries ---------------------------------------------------------------

    def state(self, oid: int) -> tuple[Any, ...] | None:
        """What the engine's ``order()`` should say, as a comparable tuple:
        (side, price, qty, filled, remaining, cancelled, status, reason)."""
        o = self.orders.get(oid)
        if o is None:
            return None
        if o.live:
            status = "partially_filled" if o.rem < o.qty else "new"
            return (o.side, o.price, o.qty, o.qty - o.rem, o.rem, 0, status, None)
        cancelled = 0 if o.status == "filled" else o.rem
        return (o.side, o.price, o.qty, o.qty - cancelled, 0, cancelled, o.status, o.reason)
