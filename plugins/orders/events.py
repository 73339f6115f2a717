"""The orders plugin's vocabulary: sides, order kinds, time in force, STP modes,
the engine's events and what an order's state looks like.

Events
------
Every operation returns a list of plain tuples (the fastest thing CPython can
build); element 0 is the event kind, element 1 the event's sequence number.
Sequence numbers are per engine (per symbol), start at 1 and are gapless
across all kinds, rejections included: every command given to the engine
consumes at least one number, so a journal must replay every command the
engine saw, rejected ones too, to reach the same ``sequence``.

======================  =====================================================
kind                    layout
======================  =====================================================
``EV_ACCEPTED``         ``(EV_ACCEPTED, seq, order_id, side, price, qty)``
``EV_REJECTED``         ``(EV_REJECTED, seq, order_id, reason)``
``EV_TRADE``            ``(EV_TRADE, seq, trade_id, maker_order_id,
                        taker_order_id, price, qty, taker_side)``
``EV_CANCELLED``        ``(EV_CANCELLED, seq, order_id, qty, reason)``
``EV_REPLACED``         ``(EV_REPLACED, seq, order_id, price, qty, remaining,
                        kept_priority)``
``EV_EXPIRED``          ``(EV_EXPIRED, seq, order_id, qty, reason)``
======================  =====================================================

``qty`` in a cancelled or expired event is the quantity that left the book or
the order (its unfilled remainder). ``trade_id`` counts trades per engine from
1. The ``*Event`` NamedTuples below have the same fields in the same order, for
code that prefers names (``TradeEvent(*e)``, ``named_event(e)``); a NamedTuple compares equal to the
plain tuple. Trades are counted with ``sum(1 for e in events if e[0] ==
EV_TRADE)``.

A new order produces ``accepted``, then its trades (and any STP cancels) in
matching order, then at most one closing event for itself: ``cancelled``
(reason ``stp``) or ``expired`` (reason ``ioc``, ``market`` or ``fok``); if
nothing closes it and it has quantity left, it rests. A rejected command
produces only ``rejected``.

"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "BUY",
    "C_STP",
    "C_USER",
    "END_FILLED",
    "END_STATUS",
    "EVENT_NAMES",
    "EV_ACCEPTED",
    "EV_CANCELLED",
    "EV_EXPIRED",
    "EV_REJECTED",
    "EV_REPLACED",
    "EV_TRADE",
    "E_FOK",
    "E_IOC",
    "E_MARKET",
    "FOK",
    "GTC",
    "IOC",
    "LIMIT",
    "MARKET",
    "MAX_PRICE",
    "MAX_QTY",
    "R_DUPLICATE_ORDER_ID",
    "R_INVALID_POST_ONLY",
    "R_INVALID_PRICE",
    "R_INVALID_QTY",
    "R_INVALID_SIDE",
    "R_INVALID_STP",
    "R_INVALID_TIF",
    "R_INVALID_TYPE",
    "R_ORDER_DONE",
    "R_POST_ONLY_WOULD_TAKE",
    "R_UNKNOWN_ORDER",
    "SELL",
    "SIDE_NAMES",
    "STATUS_NAMES",
    "STP_CANCEL_BOTH",
    "STP_CANCEL_MAKER",
    "STP_CANCEL_TAKER",
    "STP_NAMES",
    "STP_NONE",
    "TIF_NAMES",
    "TYPE_NAMES",
    "AcceptedEvent",
    "CancelledEvent",
    "Event",
    "ExpiredEvent",
    "OrderState",
    "RejectedEvent",
    "ReplacedEvent",
    "TradeEvent",
    "named_event",
]

# -- command constants ------------------------------------------------------

BUY = 0
SELL = 1
SIDE_NAMES = ("buy", "sell")

LIMIT = 0
MARKET = 1
TYPE_NAMES = ("limit", "market")

GTC = 0
IOC = 1
FOK = 2
TIF_NAMES = ("GTC", "IOC", "FOK")

STP_NONE = 0
STP_CANCEL_TAKER = 1
STP_CANCEL_MAKER = 2
STP_CANCEL_BOTH = 3
STP_NAMES = ("none", "cancel_taker", "cancel_maker", "cancel_both")

# -- events -----------------------------------------------------------------

EV_ACCEPTED = 1
EV_REJECTED = 2
EV_TRADE = 3
EV_CANCELLED = 4
EV_REPLACED = 5
EV_EXPIRED = 6
EVENT_NAMES = {
    EV_ACCEPTED: "accepted",
    EV_REJECTED: "rejected",
    EV_TRADE: "trade",
    EV_CANCELLED: "cancelled",
    EV_REPLACED: "replaced",
    EV_EXPIRED: "expired",
}

Event = tuple[Any, ...]
"""One event: a plain tuple whose layout depends on ``event[0]`` (module doc)."""

# Rejection reasons (EV_REJECTED).
R_DUPLICATE_ORDER_ID = "duplicate_order_id"
R_INVALID_SIDE = "invalid_side"
R_INVALID_TYPE = "invalid_type"
R_INVALID_PRICE = "invalid_price"
R_INVALID_QTY = "invalid_qty"
R_INVALID_TIF = "invalid_tif"
R_INVALID_STP = "invalid_stp"
R_INVALID_POST_ONLY = "invalid_post_only"
R_POST_ONLY_WOULD_TAKE = "post_only_would_take"
R_UNKNOWN_ORDER = "unknown_order"
R_ORDER_DONE = "order_done"

# Cancel reasons (EV_CANCELLED).
C_USER = "user"
C_STP = "stp"

# Expiry reasons (EV_EXPIRED).
E_IOC = "ioc"
E_MARKET = "market"
E_FOK = "fok"

# -- order status -----------------------------------------------------------

STATUS_NAMES = ("new", "partially_filled", "filled", "cancelled", "expired", "rejected")

# How a done order ended: END_FILLED, or the reason it was cancelled (C_*),
# expired (E_*) or rejected (R_*). The last field of a done order's record.
END_FILLED = "filled"
END_STATUS = {
    END_FILLED: "filled",
    C_USER: "cancelled",
    C_STP: "cancelled",
    E_IOC: "expired",
    E_MARKET: "expired",
    E_FOK: "expired",
}  # anything else is a rejection reason

MAX_PRICE = 10**9
"""Highest price in ticks (10,000,000.00 on a 0.01 tick); ``MAX_QTY`` is the
highest quantity in lots (100,000 BTC on a 0.0001 lot). Every integer a
command, a snapshot or the state hash carries is one order's price, quantity
or part of it, so all fit the journal's msgpack ints (64 bits) with room to
spare, and a notional in tick-lots (price * qty <= 10**18) fits a signed
64-bit integer for whoever prices a fill downstream. A level's total and an
order's filled total are Python ints here (no overflow) and are only ever
reported as decimal strings; even a 64-bit engine would need 9 billion
maximal orders on one level to overflow one. A symbol that needs more picks
a coarser tick or lot."""
MAX_QTY = 10**9
"""Highest quantity in lots (``MAX_PRICE``)."""


class AcceptedEvent(NamedTuple):
    """An order entered the book or began to match."""

    kind: int
    seq: int
    order_id: int
    side: int
    price: int | None
    qty: int


class RejectedEvent(NamedTuple):
    """A command refused, with the reason."""

    kind: int
    seq: int
    order_id: int
    reason: str


class TradeEvent(NamedTuple):
    """A fill: maker and taker, at the maker's price."""

    kind: int
    seq: int
    trade_id: int
    maker_order_id: int
    taker_order_id: int
    price: int
    qty: int
    taker_side: int


class CancelledEvent(NamedTuple):
    """Quantity that left the book: by the user or by STP."""

    kind: int
    seq: int
    order_id: int
    qty: int
    reason: str


class ReplacedEvent(NamedTuple):
    """An order's new price or quantity, and whether it kept its priority."""

    kind: int
    seq: int
    order_id: int
    price: int
    qty: int
    remaining: int
    kept_priority: bool


class ExpiredEvent(NamedTuple):
    """An IOC, FOK or market remainder that did not rest."""

    kind: int
    seq: int
    order_id: int
    qty: int
    reason: str


_EVENT_TYPES: dict[int, Any] = {
    EV_ACCEPTED: AcceptedEvent,
    EV_REJECTED: RejectedEvent,
    EV_TRADE: TradeEvent,
    EV_CANCELLED: CancelledEvent,
    EV_REPLACED: ReplacedEvent,
    EV_EXPIRED: ExpiredEvent,
}


def named_event(event: Event) -> Any:
    """The event as its NamedTuple (``TradeEvent`` ...), for slow paths and tests."""
    return _EVENT_TYPES[event[0]](*event)


class OrderState(NamedTuple):
    """What ``PriceTimeEngine.order`` answers.

    ``qty == filled_qty + remaining_qty + cancelled_qty``. ``remaining_qty`` is
    what rests in the book (0 once the order is done); ``cancelled_qty`` is what
    was cancelled, expired or rejected. ``price`` is ``None`` for market orders.
    """

    order_id: int
    symbol: str
    side: int
    price: int | None
    qty: int
    filled_qty: int
    remaining_qty: int
    cancelled_qty: int
    status: str
    reason: str | None
    account: int
    post_only: bool
