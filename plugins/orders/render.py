"""Orders, trades and books as the API answers them (JSON or msgpack values).

Strategy
--------
The engines work in integer ticks and lots; clients read decimal strings
(DESIGN: "Decimals travel as strings"). Every answer goes through one
``Renderer``, which turns a symbol's units into text through a cache:
``Decimal`` arithmetic costs more than the rest of a book snapshot, and a
busy book repeats the same few prices and sizes. The renderer reads no
state of its own but that cache: it is given an order's state, a trade or a
book's levels, and answers plain dicts and lists, or, for the answer every
order command gets over HTTP, its JSON text (``order_json``) made in one
formatting call, without the dict and the encoder: byte for byte what
``json.dumps`` makes of ``order`` (tests/test_orders_render.py holds them
together).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

from .events import EV_TRADE, SIDE_NAMES, Event, OrderState
from .spec import SymbolSpec

__all__ = ["Renderer"]

_TEXT_CACHE_LIMIT = 100_000
"""Decimal strings cached at most, per symbol and kind (prices, quantities);
past it that cache starts over (a bound on
memory, not an eviction policy: the prices in play come back at once)."""
# ``order`` and ``trade`` as JSON, with the decimal texts' quotes in place
# (they are digits, a point, an exponent: nothing JSON escapes) and every
# other string quoted by ``_quoted``.
_ORDER_JSON = (
    '{"order_id":%d,"symbol":%s,"side":"%s","price":%s,"qty":"%s","status":%s,'
    '"filled_qty":"%s","remaining_qty":"%s","fills":[%s]%s}'
)
_TRADE_JSON = (
    '{"trade_id":%d,"price":"%s","qty":"%s","maker_order_id":%d,"taker_order_id":%d,'
    '"taker_side":"%s"}'
)


class Renderer:
    """Answers for the configured symbols.

    Args:
        specs: each symbol's tick and lot sizes.
    """

    def __init__(self, specs: Mapping[str, SymbolSpec]) -> None:
        self.specs = specs
        # Per symbol, its prices' and its quantities' texts by units: looked
        # up without a key built per value.
        self._prices: dict[str, dict[int, str]] = {symbol: {} for symbol in specs}
        self._sizes: dict[str, dict[int, str]] = {symbol: {} for symbol in specs}
        self._json: dict[str, str] = {}

    def text(self, symbol: str, units: int, price: bool) -> str:
        """A price (ticks) or quantity (lots) as its decimal string, cached."""
        found = (self._prices if price else self._sizes)[symbol].get(units)
        return self._convert(symbol, units, price) if found is None else found

    def _convert(self, symbol: str, units: int, price: bool) -> str:
        cache = (self._prices if price else self._sizes)[symbol]
        if len(cache) > _TEXT_CACHE_LIMIT:
            cache.clear()
        spec = self.specs[symbol]
        value: Decimal = spec.from_ticks(units) if price else spec.from_lots(units)
        found = cache[units] = str(value)
        return found

    def _quoted(self, text: str) -> str:
        """A string as JSON (symbols, statuses, reasons: a few, cached)."""
        found = self._json.get(text)
        if found is None:
            if len(self._json) > _TEXT_CACHE_LIMIT:
                self._json.clear()
            found = self._json[text] = json.dumps(text)
        return found

    def order_json(self, state: OrderState, events: Iterable[Event] = ()) -> bytes:
        """``order`` as its JSON text (module doc)."""
        symbol = state.symbol
        prices, sizes, convert = self._prices[symbol], self._sizes[symbol], self._convert
        quoted = self._json
        status = "cancelled" if state.status == "expired" else state.status
        price = state.price
        qty, filled, remaining = state.qty, state.filled_qty, state.remaining_qty
        reason = ""
        if state.reason is not None:
            key = "reject_reason" if state.status == "rejected" else "reason"
            reason = f',"{key}":{self._quoted(state.reason)}'
        return (
            _ORDER_JSON
            % (
                state.order_id,
                quoted.get(symbol) or self._quoted(symbol),
                SIDE_NAMES[state.side],
                "null"
                if price is None
                else f'"{prices.get(price) or convert(symbol, price, True)}"',
                sizes.get(qty) or convert(symbol, qty, False),
                quoted.get(status) or self._quoted(status),
                sizes.get(filled) or convert(symbol, filled, False),
                sizes.get(remaining) or convert(symbol, remaining, False),
                ",".join(
                    [_TRADE_JSON % self._trade(symbol, e) for e in events if e[0] == EV_TRADE]
                ),
                reason,
            )
        ).encode()

    def _trade(self, symbol: str, event: Event) -> tuple[Any, ...]:
        """A trade event's ``_TRADE_JSON`` values."""
        price, qty = event[5], event[6]
        return (
            event[2],
            self._prices[symbol].get(price) or self._convert(symbol, price, True),
            self._sizes[symbol].get(qty) or self._convert(symbol, qty, False),
            event[3],
            event[4],
            SIDE_NAMES[event[7]],
        )

    def order(self, state: OrderState, events: Iterable[Event] = ()) -> dict[str, Any]:
        """An order as it stands, with the fills among ``events`` (its command's)."""
        symbol = state.symbol
        prices, sizes, convert = self._prices[symbol], self._sizes[symbol], self._convert
        price = state.price
        qty, filled, remaining = state.qty, state.filled_qty, state.remaining_qty
        # DESIGN's statuses have no "expired": an IOC or market remainder is a
        # cancel, and its reason says why.
        status = "cancelled" if state.status == "expired" else state.status
        answer: dict[str, Any] = {
            "order_id": state.order_id,
            "symbol": symbol,
            "side": SIDE_NAMES[state.side],
            "price": None if price is None else prices.get(price) or convert(symbol, price, True),
            "qty": sizes.get(qty) or convert(symbol, qty, False),
            "status": status,
            "filled_qty": sizes.get(filled) or convert(symbol, filled, False),
            "remaining_qty": sizes.get(remaining) or convert(symbol, remaining, False),
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
