"""The GC bench's sprintd plugin: a heap shaped like a resting order book.

At start-up it builds ``resting`` orders (GC-tracked objects in a dict, as a
book holds them). Each ``POST /gc/order`` rests a new order and removes the
oldest, so the heap keeps its size while objects keep moving through the
generations, and leaves ``garbage_cycles`` reference cycles behind, the kind
that only the collector frees. That is what makes CPython's own full
collections fire, and what a tier's GC policy has to absorb.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sprintd import PluginSection
from sprintd.app import App, Route
from sprintd.hookspecs import hookimpl
from sprintd.http import Request, Response

__all__ = ["GCLoadSection"]

ANSWER = b'{"ok":1}'


class GCLoadSection(PluginSection):
    resting: int = 300_000
    garbage_cycles: int = 1


class _Order:
    __slots__ = ("id", "price", "qty", "side")

    def __init__(self, order_id: int) -> None:
        self.id = order_id
        self.price = 1880 + order_id % 16
        self.qty = 100 + order_id % 900
        self.side = [order_id & 1]


class _Book:
    def __init__(self, section: GCLoadSection) -> None:
        self.cycles = section.garbage_cycles
        self.orders = {i: _Order(i) for i in range(section.resting)}
        self.oldest = 0
        self.next_id = section.resting

    def order(self, request: Request) -> Response:
        self.orders[self.next_id] = _Order(self.next_id)
        self.next_id += 1
        del self.orders[self.oldest]
        self.oldest += 1
        for _ in range(self.cycles):
            cycle: dict[str, object] = {}
            cycle["self"] = cycle
        return Response(201, ANSWER)


@hookimpl
def sprintd_settings_sections() -> Mapping[str, type[PluginSection]]:
    return {"gcload": GCLoadSection}


@hookimpl
def sprintd_routes(app: App) -> Sequence[Route]:
    book = _Book(app.settings.section("gcload", GCLoadSection))
    return [Route("POST", "/gc/order", book.order)]
