"""Order requests into commands: the command vocabulary and its validation.

Strategy
--------
Everything that changes the books is a *command*, a small msgpack array that
the service (``service.py``) applies both live and on replay, so the
journal's records and the live path cannot drift apart:

    [NEW, order_id, symbol, side, kind, price, qty, tif, post_only, account, stp,
     client_order_id, time_ms]
    [CANCEL, order_id, symbol, time_ms]
    [REPLACE, order_id, symbol, price, qty, time_ms]

Prices and quantities are integer ticks and lots, within the engine's
``MAX_PRICE`` and ``MAX_QTY``; ``account`` and ``client_order_id`` are the
client's strings. ``order_id`` and ``time_ms`` are the service's to fill.

A journal record is one command, or a *batch*: an array of commands,
``[[NEW, ...], [CANCEL, ...], ...]``, applied in order (told apart by its
first element, an array, not an op). The order-entry port journals each
read's commands as one batch (``service.batch_records``); a record of one
command, as every record before batches and every HTTP change, replays as
it always did.

This module reads request bodies (HTTP JSON or msgpack, and the order-entry
port's maps: the same checks for both) into commands, knowing the symbols'
grids and nothing of the books' state: a body it refuses changes nothing.
Its error, ``InvalidOrder``, is the orders plugin's only one: an
``HTTPError`` that carries its status and code from where it is raised (as
h11's ``error_status_hint`` does), so the HTTP dispatch answers it as it is
and the order-entry port maps it to ``["error", code, message]`` in one
place; nothing catches it to raise it again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sprintd import HTTPError

from .events import (
    GTC,
    LIMIT,
    MAX_PRICE,
    MAX_QTY,
    SIDE_NAMES,
    STP_NAMES,
    TIF_NAMES,
    TYPE_NAMES,
)
from .spec import OffGridError, SymbolSpec

__all__ = ["CANCEL", "NEW", "REPLACE", "TIMED_LENGTH", "InvalidOrder", "Parser"]

NEW, CANCEL, REPLACE = 1, 2, 3
TIMED_LENGTH = {NEW: 13, CANCEL: 4, REPLACE: 6}
"""Each command's length with its time_ms, by op (records journaled before
``time_ms`` existed are one shorter)."""
_NEW_FIELDS = frozenset(
    {
        "symbol",
        "side",
        "type",
        "price",
        "qty",
        "tif",
        "post_only",
        "client_order_id",
        "account",
        "stp",
    }
)
_REPLACE_FIELDS = frozenset({"price", "qty"})
_MAX_ID_LENGTH = 64
"""An account or client order id's characters at most: both are journaled
with every order and kept with its client id."""
_UNITS_CACHE_LIMIT = 100_000
"""Decimal strings' units cached at most; past it the cache starts over (as
``render``'s text cache: the prices in play come back at once)."""


class InvalidOrder(HTTPError):
    """A request refused, unchanged state; ``code`` is stable for clients.

    ``status``: 400 for a malformed request, 404 for an unknown order, 409 for
    one already done, 503 (with ``retry_after``) when the service has halted.
    """

    def __init__(
        self, code: str, message: str, status: int = 400, *, retry_after: float | None = None
    ) -> None:
        super().__init__(status, code, message, retry_after=retry_after)


class _Choice:
    """One of a field's names, in any case, as its index; an absent field
    (None) as ``default`` when there is one."""

    __slots__ = ("default", "field", "index", "names")

    def __init__(self, names: tuple[str, ...], field: str, default: int | None = None) -> None:
        self.names = names
        self.field = field
        self.default = default
        # Lowered: a name's case never matters. The first of equal names wins.
        self.index = {name.lower(): i for i, name in reversed(list(enumerate(names)))}

    def __call__(self, value: Any) -> int:
        if value is None and self.default is not None:
            return self.default
        if isinstance(value, str):
            # The exact name first: one lookup where lower() costs a call.
            index = self.index.get(value)
            if index is None:
                index = self.index.get(value.lower())
            if index is not None:
                return index
        names, field = self.names, self.field
        raise InvalidOrder(f"invalid_{field}", f"{field} must be one of {', '.join(names)}")


_SIDE = _Choice(SIDE_NAMES, "side")
_TYPE = _Choice(TYPE_NAMES, "type", LIMIT)
_TIF = _Choice(TIF_NAMES, "tif", GTC)
_STP = _Choice(STP_NAMES, "stp", 0)


class Parser:
    """Request bodies into commands, for the configured symbols.

    Args:
        specs: each symbol's tick and lot sizes.
    """

    def __init__(self, specs: Mapping[str, SymbolSpec]) -> None:
        self.specs = specs
        # (symbol, text, is price) -> units, for text that passed ``units``:
        # the exact decimal arithmetic costs more than the rest of an order,
        # and a busy book is sent the same few prices and sizes.
        self._units: dict[tuple[str, str, bool], int] = {}

    def _spec(self, symbol: Any) -> SymbolSpec:
        spec = self.specs.get(symbol) if isinstance(symbol, str) else None
        if spec is None:
            raise InvalidOrder("unknown_symbol", f"symbol must be one of {', '.join(self.specs)}")
        return spec

    def units(self, spec: SymbolSpec, value: Any, field: str) -> int:
        """A price or quantity on the symbol's grid, in ticks or lots, positive
        and within the engine's bounds.

        Raises:
            InvalidOrder: ``invalid_price`` or ``invalid_qty`` with the reason.
        """
        if type(value) is not str:
            # Only text is cached: 1, 1.0 and True are equal keys, and True
            # is refused where 1 is not.
            return self._convert(spec, value, field)
        key = (spec.symbol, value, field == "price")
        units = self._units.get(key)
        if units is None:
            units = self._convert(spec, value, field)
            if len(self._units) >= _UNITS_CACHE_LIMIT:
                self._units.clear()
            self._units[key] = units
        return units

    @staticmethod
    def _convert(spec: SymbolSpec, value: Any, field: str) -> int:
        convert: Callable[[Any], int]
        if field == "price":
            convert, limit = spec.to_ticks, MAX_PRICE
        else:
            convert, limit = spec.to_lots, MAX_QTY
        try:
            units = convert(value)
        except OffGridError as exc:
            if exc.reason != "out_of_range":
                raise InvalidOrder(f"invalid_{field}", f"{field}: {exc}") from None
            units = limit + 1
        except (ValueError, TypeError) as exc:
            raise InvalidOrder(f"invalid_{field}", f"{field}: {exc}") from None
        if units <= 0:
            raise InvalidOrder(f"invalid_{field}", f"{field} must be positive")
        if units > limit:
            if field == "price":
                bound = f"{spec.from_ticks(limit)} ({limit} ticks of {spec.tick_size})"
            else:
                bound = f"{spec.from_lots(limit)} ({limit} lots of {spec.lot_size})"
            raise InvalidOrder(f"invalid_{field}", f"{field} must be at most {bound}")
        return units

    def new(self, body: Any) -> list[Any]:
        """A NEW command from a request body, its order id and time 0 (the
        service's to fill).

        Raises:
            InvalidOrder: 400 with the first problem found.
        """
        if not isinstance(body, dict):
            raise InvalidOrder("invalid_body", "the body must be an object")
        if not _NEW_FIELDS.issuperset(body):
            unknown = min(key for key in body if key not in _NEW_FIELDS)
            raise InvalidOrder("unknown_field", f"unknown field {unknown!r}")
        symbol = body.get("symbol")
        spec = self._spec(symbol)
        side = _SIDE(body.get("side"))
        # Absent fields (most orders leave these out) without a call.
        value = body.get("type")
        kind = LIMIT if value is None else _TYPE(value)
        value = body.get("tif")
        tif = GTC if value is None else _TIF(value)
        value = body.get("stp")
        stp = 0 if value is None else _STP(value)
        if "qty" not in body:
            raise InvalidOrder("invalid_qty", "qty is required")
        qty = self.units(spec, body["qty"], "qty")
        price = None
        if kind == LIMIT:
            if body.get("price") is None:
                raise InvalidOrder("invalid_price", "a limit order needs a price")
            price = self.units(spec, body["price"], "price")
        post_only = body.get("post_only", False)
        if not isinstance(post_only, bool):
            raise InvalidOrder("invalid_post_only", "post_only must be true or false")
        account = body.get("account") or ""
        client_id = body.get("client_order_id")
        for name, value in (("account", account), ("client_order_id", client_id)):
            if value is not None and (not isinstance(value, str) or len(value) > _MAX_ID_LENGTH):
                raise InvalidOrder(
                    f"invalid_{name}", f"{name} must be a string of <= {_MAX_ID_LENGTH}"
                )
        return [NEW, 0, symbol, side, kind, price, qty, tif, post_only, account, stp, client_id, 0]

    def change(self, symbol: str, body: Any) -> tuple[int | None, int | None]:
        """A replace's new price and total quantity (None: unchanged), in
        ``symbol``'s ticks and lots.

        Raises:
            InvalidOrder: 400 ``invalid_body``, ``invalid_price`` or ``invalid_qty``.
        """
        if not isinstance(body, dict) or not body or not _REPLACE_FIELDS.issuperset(body):
            raise InvalidOrder("invalid_body", "send price, qty or both")
        spec = self.specs[symbol]
        price = body.get("price")
        qty = body.get("qty")
        return (
            None if price is None else self.units(spec, price, "price"),
            None if qty is None else self.units(spec, qty, "qty"),
        )
