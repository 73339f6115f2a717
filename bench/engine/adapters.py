"""One adapter per engine: how the bench drives it, and how it reads its trades.

An adapter opens a fresh book and returns a ``Bound``: the ``new`` and
``cancel`` callables the timed loop calls with a command's fields, and a
``translate`` that turns a neutral command (bench.engine.loads) into the
engine's own constants, applied to the whole stream before the clock starts.
Where an engine's own call already takes those fields (sprintd), ``new`` is the
engine's bound method itself; the peers need a thin function of the kind any
Python caller would write, and its cost is part of their figures (the harness
floor in the report shows what a call through such a function costs).

Engines are imported here, in the subprocess that measures them, and never in
the parent: each engine's import and heap stay in its own process.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib.machinery import ExtensionFileLoader
from pathlib import Path
from typing import Any

from bench.engine.loads import BUY, CANCEL, IOC, MARKET, NEW, Command

__all__ = ["ADAPTERS", "SPRINTD_BUILDS", "SPRINTD_MODULE", "Bound", "open_engine"]

SYMBOL = "BTC-USD"
SPRINTD_MODULE = "sprintd.plugins.orders.engine"
# Its vocabulary: sides, kinds, time in force, events and their layouts.
SPRINTD_EVENTS = "sprintd.plugins.orders.events"
# The adapters of sprintd's two builds, and the name its source is loaded as.
SPRINTD_BUILDS = ("sprintd", "sprintd-compiled")
PURE_PACKAGE = "_sprintd_pure_orders"

New = Callable[[int, int, int, int, int, int], object]
Translate = Callable[[Command], Command]


@dataclass
class Bound:
    """One engine with one empty book, ready for a stream."""

    new: New
    cancel: Callable[[int], object]
    # The stream in the engine's own constants, made before the clock starts.
    prepare: Callable[[Sequence[Command]], list[Command]]
    # The quantity a new()'s result says the order took from the book. Engines
    # that only say whether it traded give 1 or 0, and ``exact`` is False.
    tally: Callable[[object], int]
    exact: bool
    # Checks after a run that the engine agreed with the bench's assumptions.
    finish: Callable[[], list[str]] = field(default=lambda: [])
    # Whether a new()'s or cancel()'s result says the engine refused the
    # command; engines that do not say answer False.
    refused: Callable[[object], bool] = field(default=lambda _: False)


def open_engine(name: str, *, keep_all: bool = False, reserve: int = 0) -> Bound:
    """A fresh book of engine ``name``.

    ``reserve`` is the resting orders sprintd's engine makes room for at once,
    as the daemon's ``[orders] reserve_orders`` does; the peers have no such
    setting and ignore it.

    An adapter that must keep orders by id for cancels (liquibook's) keeps the
    ones its stream cancels and no others: without a listener it cannot learn
    that an order filled, and a map of every order ever sent would grow
    through the run and stall single commands on its resizes (10 ms at 350,000
    entries here). Kept this way, it never holds more than the resting book,
    as a caller that drops filled orders would. ``keep_all`` keeps every order
    (the memory pass: what a caller who may cancel any of them holds).
    """
    if name in SPRINTD_BUILDS:
        return _sprintd(keep_all, reserve, compiled=name == "sprintd-compiled")
    return ADAPTERS[name](keep_all)


def _each(translate: Translate) -> Callable[[Sequence[Command]], list[Command]]:
    return lambda commands: [translate(c) for c in commands]


def _sprintd(keep_all: bool, reserve: int = 0, *, compiled: bool = False) -> Bound:
    mod, ev = _sprintd_modules(compiled)
    engine = mod.PriceTimeEngine(SYMBOL, reserve=reserve)
    sides, kinds, tifs = (ev.BUY, ev.SELL), (ev.LIMIT, ev.MARKET), (ev.GTC, ev.IOC)
    trade, rejected = ev.EV_TRADE, ev.EV_REJECTED
    layout = getattr(getattr(ev, "TradeEvent", None), "_fields", ())
    # Without a documented trade layout, the bench can only count trades.
    qty_at = layout.index("qty") if "qty" in layout else None

    def translate(c: Command) -> Command:
        if c[0] != NEW:
            return c
        return (c[0], c[1], sides[c[2]], c[3], c[4], kinds[c[5]], tifs[c[6]])

    def tally(events: object) -> int:
        assert isinstance(events, list)
        if qty_at is None:
            return sum(1 for e in events if e[0] == trade)
        return sum(e[qty_at] for e in events if e[0] == trade)

    def refused(events: object) -> bool:
        assert isinstance(events, list)
        return any(e[0] == rejected for e in events)

    return Bound(
        engine.new,
        engine.cancel,
        _each(translate),
        tally,
        exact=qty_at is not None,
        refused=refused,
    )


def _sprintd_modules(compiled: bool) -> tuple[Any, Any]:
    """The engine and its events module: the installed build's, which must be
    the compiled one (setup.py); or the pure-Python source, loaded from the
    installed .py files whatever the build, as the pure reference."""
    mod: Any = importlib.import_module(SPRINTD_MODULE)
    if compiled:
        if not isinstance(mod.__spec__.loader, ExtensionFileLoader):
            raise RuntimeError(
                "the installed sprintd is the pure-Python build: `SPRINTD_COMPILE=1 pip "
                "install .` with a C compiler compiles the engine"
            )
        return mod, importlib.import_module(SPRINTD_EVENTS)
    version: Any = importlib.import_module("sprintd.version")
    pure = version.load_source(PURE_PACKAGE, Path(mod.__file__).parent, ["engine", "events"])
    return pure.engine, pure.events


def _liquibook(keep_all: bool, *, fills: bool = False) -> Bound:
    lb: Any = importlib.import_module("liquibook")
    # DepthOrderBook is the book liquibook's Python README builds, and the one
    # the "wrapper: about 1.45M inserts/s" describes; it keeps five
    # levels of depth as it goes.
    book = lb.DepthOrderBook()
    book.set_symbol(SYMBOL)
    add, remove, simple_order = book.add, book.cancel, lb.SimpleOrder
    ioc = lb.oc_immediate_or_cancel
    orders: dict[int, Any] = {}
    taken = _FillCounter(lb) if fills else None
    if taken is not None:
        book.set_order_listener(taken.listener)

    def prepare(commands: Sequence[Command]) -> list[Command]:
        cancelled = {c[1] for c in commands if c[0] == CANCEL}
        return [translate(c, keep_all or c[1] in cancelled) for c in commands]

    def translate(c: Command, keep: bool) -> Command:
        if c[0] != NEW:
            return c
        # liquibook's market order is a limit at price 0; it would rest its
        # remainder, so it goes in as immediate-or-cancel, as on an exchange.
        price = 0 if c[5] == MARKET else c[3]
        # A bool is an int, and the form SimpleOrder takes without a conversion.
        return (c[0], c[1], c[2] == BUY, price, c[4], ioc if c[6] == IOC else 0, keep)

    # liquibook cancels by order object, not by id: the caller keeps the
    # objects of the orders it will cancel (flagged in the command's last field).
    def new(oid: int, is_buy: int, price: int, qty: int, cond: int, keep: int) -> object:
        order = simple_order(is_buy, price, qty, 0, cond)
        if keep:
            orders[oid] = order
        return add(order, cond)

    def cancel(oid: int) -> object:
        return remove(orders.pop(oid))

    if taken is None:
        # add() says whether the order traded, not how much.
        return Bound(
            new,
            cancel,
            prepare,
            lambda matched: int(bool(matched)),
            exact=False,
        )
    counter = taken
    return Bound(
        new,
        cancel,
        prepare,
        lambda _: counter.take(),
        exact=True,
    )


class _FillCounter:
    """An order listener that counts traded quantity: what a caller must install
    to learn its fills from liquibook, each one a call from C++ into Python."""

    def __init__(self, lb: Any) -> None:
        self.qty = 0
        self.listener = _listener_class(lb)(self)

    def take(self) -> int:
        qty, self.qty = self.qty, 0
        return qty


def _listener_class(lb: Any) -> type[Any]:
    class Listener(lb.OrderListener):  # type: ignore[misc]
        # Every method is pure virtual in C++: each must exist, or the first
        # callback raises inside add().
        def __init__(self, counter: _FillCounter) -> None:
            lb.OrderListener.__init__(self)
            self.counter = counter

        def on_fill(self, passive: Any, aggressive: Any, qty: int, cost: int) -> None:
            self.counter.qty += qty

        def on_accept(self, order: Any) -> None:
            pass

        def on_reject(self, order: Any, reason: str) -> None:
            pass

        def on_cancel(self, order: Any) -> None:
            pass

        def on_cancel_reject(self, order: Any, reason: str) -> None:
            pass

        def on_replace(self, order: Any, size_delta: int, new_price: int) -> None:
            pass

        def on_replace_reject(self, order: Any, reason: str) -> None:
            pass

        def on_trigger_stop(self, order: Any) -> None:
            pass

    return Listener


def _liquibook_fills(keep_all: bool) -> Bound:
    return _liquibook(keep_all, fills=True)


def _lme(keep_all: bool) -> Bound:
    mod: Any = importlib.import_module("lightmatchingengine.lightmatchingengine")
    engine = mod.LightMatchingEngine()
    add_order, cancel_order = engine.add_order, engine.cancel_order
    sides = (mod.Side.BUY, mod.Side.SELL)
    news = 0

    def translate(c: Command) -> Command:
        nonlocal news
        if c[0] != NEW:
            return c
        news += 1
        # No order types: price 0 is a market order; no IOC either, so the
        # adapter cancels what an IOC order leaves, as a caller would.
        price = 0 if c[5] == MARKET else c[3]
        return (c[0], c[1], sides[c[2]], price, c[4], 0, int(c[6] == IOC))

    def new(oid: int, side: int, price: int, qty: int, _: int, ioc: int) -> object:
        result = add_order(SYMBOL, price, qty, side)
        if ioc and result[0].leaves_qty:
            cancel_order(result[0].order_id, SYMBOL)
        return result

    def cancel(oid: int) -> object:
        return cancel_order(oid, SYMBOL)

    def tally(result: object) -> int:
        assert isinstance(result, tuple)
        return int(result[0].cum_qty)

    def finish() -> list[str]:
        # Cancels name lightmatchingengine's own ids, which are the stream's only
        # if both count new orders from 1 in the same order.
        if engine.curr_order_id != news:
            return [f"lightmatchingengine numbered {engine.curr_order_id} orders, not {news}"]
        return []

    # cancel_order() answers None for an order it does not hold.
    return Bound(
        new, cancel, _each(translate), tally, exact=True, finish=finish, refused=lambda r: r is None
    )


def _floor(keep_all: bool) -> Bound:
    """No engine: what the loop and one Python call per command cost by themselves."""

    def new(_oid: int, _side: int, _price: int, _qty: int, _kind: int, _tif: int) -> object:
        return None

    def cancel(_oid: int) -> object:
        return None

    return Bound(new, cancel, list, lambda _: 0, exact=False)


ADAPTERS: dict[str, Callable[[bool], Bound]] = {
    "sprintd": _sprintd,
    "sprintd-compiled": lambda keep_all: _sprintd(keep_all, compiled=True),
    "liquibook": _liquibook,
    "liquibook-fills": _liquibook_fills,
    "lme": _lme,
    "floor": _floor,
}
