"""A symbol's grid: decimal prices and quantities to integer ticks and lots, and back.

Strategy
--------
Clients send decimal strings ("64250.01", "0.0025"); the engine matches
integers. ``SymbolSpec`` is the one place that converts, and it never rounds:
a value off the grid (a price that is not a whole number of ticks, a quantity
that is not a whole number of lots) is refused with ``OffGridError``, whose
``reason`` the API layer can send back as is.

The arithmetic is exact: values and grid sizes are turned into integer ratios
(``Decimal.as_integer_ratio``), so no ``decimal`` context precision or rounding
mode takes part. Inputs are bounded (``MAX_DIGITS`` significant digits, an
exponent within ``MAX_EXPONENT``) before any arithmetic, so "1e999999999"
costs nothing. Sign is not checked here: zero and negative quantities, and
non-positive prices, are the engine's to reject (``invalid_qty``,
``invalid_price``), so there is one source for those reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

__all__ = ["MAX_DIGITS", "MAX_EXPONENT", "OffGridError", "SymbolSpec"]

MAX_DIGITS = 30
"""Most significant digits accepted in one value: far beyond any real price."""

MAX_EXPONENT = 30
"""Values must lie within 1e-30 .. 1e+30 in magnitude (or be zero)."""

_MAX_TEXT = 64
"""Longest decimal string parsed at all."""


class OffGridError(ValueError):
    """A price or quantity the symbol's grid cannot represent.

    ``reason`` is a stable code: ``invalid_number`` (not a decimal number),
    ``out_of_range`` (too many digits or too large/small), ``off_tick`` (price
    not a multiple of the tick size), ``off_lot`` (quantity not a multiple of
    the lot size).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _parse(value: str | Decimal | int | float, what: str) -> Decimal:
    if isinstance(value, bool):
        raise OffGridError("invalid_number", f"{what}: {value!r} is not a number")
    if isinstance(value, Decimal):
        d = value
    elif isinstance(value, int):
        d = Decimal(value)
    elif isinstance(value, float):
        # JSON numbers arrive as floats: their shortest repr is what was written.
        d = _parse(repr(value), what)
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > _MAX_TEXT:
            raise OffGridError("invalid_number", f"{what}: {value!r} is not a decimal number")
        try:
            d = Decimal(text)
        except InvalidOperation:
            raise OffGridError(
                "invalid_number", f"{what}: {value!r} is not a decimal number"
            ) from None
    else:
        raise OffGridError("invalid_number", f"{what}: {value!r} is not a decimal number")
    if not d.is_finite():
        raise OffGridError("invalid_number", f"{what}: {value!r} is not a finite number")
    if d and (
        len(d.as_tuple().digits) > MAX_DIGITS
        or d.adjusted() > MAX_EXPONENT
        or d.adjusted() < -MAX_EXPONENT
    ):
        raise OffGridError("out_of_range", f"{what}: {value!r} is out of range")
    return d


def _grid(value: str | Decimal | int, what: str) -> tuple[Decimal, int, int]:
    d = _parse(value, what)
    if d <= 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    num, den = d.as_integer_ratio()
    return d, num, den


@dataclass(frozen=True, slots=True, init=False)
class SymbolSpec:
    """One symbol's tick size (price grid) and lot size (quantity grid).

    Args:
        symbol: the symbol's name.
        tick_size: the price increment, a positive decimal ("0.01").
        lot_size: the quantity increment, a positive decimal ("0.0001").

    Raises:
        ValueError: a size that is not a positive finite decimal.
    """

    symbol: str
    tick_size: Decimal
    lot_size: Decimal
    _tick: tuple[int, int] = field(repr=False, compare=False)
    _lot: tuple[int, int] = field(repr=False, compare=False)

    def __init__(self, symbol: str, tick_size: str | Decimal, lot_size: str | Decimal) -> None:
        tick, tn, td = _grid(tick_size, "tick_size")
        lot, ln, ld = _grid(lot_size, "lot_size")
        object.__setattr__(self, "symbol", symbol)
        object.__setattr__(self, "tick_size", tick)
        object.__setattr__(self, "lot_size", lot)
        object.__setattr__(self, "_tick", (tn, td))
        object.__setattr__(self, "_lot", (ln, ld))

    @staticmethod
    def _units(
        value: str | Decimal | int | float,
        grid: tuple[int, int],
        what: str,
        size: Decimal,
        reason: str,
    ) -> int:
        num, den = _parse(value, what).as_integer_ratio()
        gn, gd = grid
        # value / grid == (num * gd) / (den * gn): a whole number, or off the grid.
        units, rest = divmod(num * gd, den * gn)
        if rest:
            raise OffGridError(reason, f"{what} {value!r} is not a multiple of {size}")
        return units

    def to_ticks(self, price: str | Decimal | int | float) -> int:
        """A price as a whole number of ticks.

        Raises:
            OffGridError: not a decimal number, out of range, or off the tick grid.
        """
        return self._units(price, self._tick, "price", self.tick_size, "off_tick")

    def to_lots(self, qty: str | Decimal | int | float) -> int:
        """A quantity as a whole number of lots.

        Raises:
            OffGridError: not a decimal number, out of range, or off the lot grid.
        """
        return self._units(qty, self._lot, "qty", self.lot_size, "off_lot")

    @staticmethod
    def _scaled(units: int, size: Decimal) -> Decimal:
        _sign, digits, exp = size.as_tuple()
        assert isinstance(exp, int)
        coeff = units * int("".join(map(str, digits)))
        if exp >= 0:
            return Decimal(coeff * 10**exp)
        # Built from text, so exact whatever the decimal context's precision.
        return Decimal(f"{coeff}E{exp}")

    def from_ticks(self, ticks: int) -> Decimal:
        """A price in ticks as an exact decimal, with the tick size's decimals."""
        return self._scaled(ticks, self.tick_size)

    def from_lots(self, lots: int) -> Decimal:
        """A quantity in lots as an exact decimal, with the lot size's decimals."""
        return self._scaled(lots, self.lot_size)
