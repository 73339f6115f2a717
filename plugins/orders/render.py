"""Orders, trades and books as the API answers them (JSON or msgpack values).

Strategy
--------
The engines work in integer ticks and lots; clients read decimal strings
(DESIGN: "Decimals travel as strings"). Every answer goes through one
``Renderer``, which turns a symbol's units into text through a cache:
``Decimal`` arithmetic costs more than the rest of a book snapshot, and a
busy book repeats the same few prices and sizes. The renderer reads no
state of its own but that cache: it is given an order's state, a trade or a
book's levels, and answers plain dicts and lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from .events import EV_TRADE, SIDE_NAMES, Event, OrderState
from .spec import SymbolSpec

__all__ = ["Renderer"]

_TEXT_CACHE_LIMIT = 100_000
"""Decimal strings cached at most; past it the cache starts over (a bound on
memory, not an eviction policy: the prices in play come back at once)."""


class Renderer:
    """Answers for the configured symbols.

    Args:
        specs: each symbol's tick and lot sizes.
    """

    def __init__(self, specs: Mapping[str, SymbolSpec]) -> None:
        self.specs = specs
        self._text: dict[tuple[str, int, bool], str] = {}

    def text(self, symbol: str, units: int, price: bool) -> str:
        """A price (ticks) or quantity (lots) as its decimal string, cached."""
        key = (symbol, units, price)
        found = self._text.get(key)
        if found is None:
            if len(self._text) > _TEXT_CACHE_LIMIT:
                self._text.clear()
            spec = self.specs[symbol]
            value: Decimal = spec.from_ticks(units) if price else spec.from_lots(units)
            found = self._text[key] = str(value)
        return found

    def order(self, state: OrderState, events: Iterable[Event] = ()) -> dict[str, Any]:
        """An order as it stands, with the fills among ``events`` (its command's)."""
        symbol = state.symbol
        # DESIGN's statuses have no "expired": an IOC or market remainder is a
        # cancel, and its reason says why.
        status = "cancelled" if state.status == "expired" else state.status
        answer: dict[str, Any] = {
            "order_id": state.order_id,
            "symbol": symbol,
            "side": SIDE_NAMES[state.side],
            "price": None if state.price is None else self.text(symbol, state.price, True),
            "qty": self.text(symbol, state.qty, False),
            "status": status,
            "filled_qty": self.text(symbol, state.filled_qty, False),
            "remaining_qty": self.text(symbol, state.remaining_qty, False),
            "fills": [self.trade(symbol, e[2:8]) for e in events if e[0] == EV_TRADE],
        }
        if state.reason is not None:
            key = "reject_reason" if state.status == "rejected" else "reason"
            answer[key] = state.reason
        return answer

    def trade(self, symbol: str, trade: tuple[int, ...]) -> dict[str, Any]:
        """A trade: ``(trade_id, maker, taker, price, qty, taker_side)``."""
        trade_id, maker, taker, price, qty, taker_side = trade
        return {
            "trade_id": trade_id,
            "price": self.text(symbol, price, True),
            "qty": self.text(symbol, qty, False),
            "maker_order_id": maker,
            "taker_order_id": taker,
            "taker_side": SIDE_NAMES[taker_side],
        }

    def book(
        self,
        symbol: str,
        sequence: int,
        bids: list[tuple[int, int]],
        asks: list[tuple[int, int]],
    ) -> dict[str, Any]:
        """A book's levels, ``(price, qty)`` best first, at event ``sequence``."""
        text = self.text
        return {
            "symbol": symbol,
            "sequence": sequence,
            "bids": [[text(symbol, p, True), text(symbol, q, False)] for p, q in bids],
            "asks": [[text(symbol, p, True), text(symbol, q, False)] for p, q in asks],
        }
