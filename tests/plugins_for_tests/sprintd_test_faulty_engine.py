"""An order engine with a bug: ``faulty``, the built-in price-time engine that
raises after entering any order of exactly ``FAULT_LOTS`` lots, so the book
has changed when the exception leaves it (what a real bug would do)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sprintd import App, hookimpl
from sprintd.plugins.orders import snapshot as persistence
from sprintd.plugins.orders.engine import PriceTimeEngine
from sprintd.plugins.orders.events import Event

FAULT_LOTS = 13


class FaultyEngine(PriceTimeEngine):
    __slots__ = ()

    def new(self, order_id: int, side: int, price: int | None, qty: int, *rest: Any) -> list[Event]:
        events = super().new(order_id, side, price, qty, *rest)
        if qty == FAULT_LOTS:
            raise RuntimeError(f"faulty engine: order {order_id} of {FAULT_LOTS} lots")
        return events


class _Kind:
    def create(self, symbol: str) -> FaultyEngine:
        return FaultyEngine(symbol)

    def restore(self, data: bytes) -> PriceTimeEngine:
        return persistence.restore(data, engine_class=FaultyEngine)

    def snapshot(self, engine: PriceTimeEngine) -> bytes:
        return persistence.snapshot(engine)

    def state_hash(self, engine: PriceTimeEngine) -> str:
        return persistence.state_hash(engine)


@hookimpl
def sprintd_order_engines(app: App) -> Mapping[str, Any]:
    return {"faulty": _Kind()}
