"""A naive price-time book: the yardstick the command streams are built on.

The generator needs to know, at every step, which orders still rest (cancels
must name one) and how much the stream trades (the engines are checked against
it). This book favours being obviously right over being fast: a dict of price
levels, each a FIFO of ``[order_id, qty]``, the best price found with max() or
min() over the levels every time.

Semantics every engine under test shares: a trade is at the maker's price; a
limit order takes what crosses and rests the rest (GTC) or drops it (IOC); a
market order takes what there is and never rests.
"""

from __future__ import annotations

import random
from collections import deque

__all__ = ["ReferenceBook"]


class ReferenceBook:
    def __init__(self) -> None:
        self.bids: dict[int, deque[list[int]]] = {}
        self.asks: dict[int, deque[list[int]]] = {}
        # order_id -> (is_buy, price, entry) for every resting order.
        self.resting: dict[int, tuple[bool, int, list[int]]] = {}
        # The same ids in a list, so a random one costs O(1) (swap-remove).
        self._ids: list[int] = []
        self._slot: dict[int, int] = {}
        self.bid_qty = 0
        self.ask_qty = 0

    def new(
        self, order_id: int, is_buy: bool, price: int, qty: int, *, market: bool, ioc: bool
    ) -> int:
        """Match an order, rest what is left if it may; return the quantity traded."""
        book = self.asks if is_buy else self.bids
        left = qty
        while left and book:
            best = min(book) if is_buy else max(book)
            if not market and (best > price if is_buy else best < price):
                break
            level = book[best]
            while left and level:
                maker = level[0]
                take = min(left, maker[1])
                left -= take
                maker[1] -= take
                if is_buy:
                    self.ask_qty -= take
                else:
                    self.bid_qty -= take
                if maker[1] == 0:
                    level.popleft()
                    self._forget(maker[0])
            if not level:
                del book[best]
        if left and not market and not ioc:
            self._rest(order_id, is_buy, price, left)
        return qty - left

    def cancel(self, order_id: int) -> bool:
        found = self.resting.get(order_id)
        if found is None:
            return False
        is_buy, price, entry = found
        book = self.bids if is_buy else self.asks
        level = book[price]
        level.remove(entry)
        if not level:
            del book[price]
        if is_buy:
            self.bid_qty -= entry[1]
        else:
            self.ask_qty -= entry[1]
        self._forget(order_id)
        return True

    def random_resting(self, rng: random.Random) -> int:
        return self._ids[rng.randrange(len(self._ids))]

    def best_bid(self) -> int | None:
        return max(self.bids) if self.bids else None

    def best_ask(self) -> int | None:
        return min(self.asks) if self.asks else None

    def _rest(self, order_id: int, is_buy: bool, price: int, qty: int) -> None:
        entry = [order_id, qty]
        (self.bids if is_buy else self.asks).setdefault(price, deque()).append(entry)
        if is_buy:
            self.bid_qty += qty
        else:
            self.ask_qty += qty
        self.resting[order_id] = (is_buy, price, entry)
        self._slot[order_id] = len(self._ids)
        self._ids.append(order_id)

    def _forget(self, order_id: int) -> None:
        del self.resting[order_id]
        slot = self._slot.pop(order_id)
        last = self._ids.pop()
        if last != order_id:
            self._ids[slot] = last
            self._slot[last] = slot
