"""Price updates: from decoded JSON or msgpack to checked values, or a reason.

Strategy: sans-IO and total. ``parse_batch`` takes whatever a body or a frame
decoded to and returns the updates it holds, every field checked, or raises
``InvalidUpdate`` naming the first bad one; it never raises anything else, so
a client can send any bytes and get a 4xx with a reason (the hypothesis
tests in tests/test_prices_updates.py hold it to that). A batch is checked
whole before any of it is applied: one bad update rejects its whole request
or frame.

An update is an object, or the same fields as a positional array (the
compact form the binary feed's clients send)::

    {"symbol": "BTC-USD", "price": 64000.5, "volume": 12.5,
     "timestamp_ms": 1700000000000, "change_24h": -1.25}
    ["BTC-USD", 64000.5, 12.5, 1700000000000, -1.25]

- ``symbol`` (required): upper-case letters and digits in up to four parts
  joined by ``-``, ``_`` or ``.``, at most 32 characters (``BTC-USD``,
  ``ES.Z25``); it becomes a URL path segment as it is.
- ``price`` (required): greater than zero.
- ``volume`` (optional, not negative) and ``change_24h`` (optional, signed):
  left out (or null), the symbol keeps its last value.
- ``timestamp_ms`` (optional): an integer, milliseconds since the epoch; left
  out, the daemon's clock when the batch arrived.

Numbers come as JSON numbers or decimal strings (DESIGN: decimals travel as
strings, numbers accepted on input) and are kept as the decimal text the
snapshots publish: a float as its shortest round-trip form, a string as sent.
Booleans, NaN and infinities are not numbers here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Container
from decimal import Decimal
from typing import Any, NamedTuple

__all__ = [
    "FIELDS",
    "MAX_TIMESTAMP_MS",
    "SYMBOL",
    "InvalidUpdate",
    "Update",
    "check_symbol",
    "parse_batch",
]

FIELDS = ("symbol", "price", "volume", "timestamp_ms", "change_24h")
_FIELD_SET = frozenset(FIELDS)
SYMBOL = re.compile(r"(?=[A-Z0-9._-]{1,32}\Z)[A-Z0-9]+(?:[-_.][A-Z0-9]+){0,3}\Z")
# A decimal string: at most 20 digits before the point and 18 after it.
_DECIMAL = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,18})?\Z")
# Integers beyond what a decimal string may say are refused the same way.
_INT_LIMIT = 10**20
_FLOAT_MIN = 1e-18
# The largest integer a JSON client (a double) holds exactly: year 287,396.
MAX_TIMESTAMP_MS = 2**53


class InvalidUpdate(ValueError):
    """A batch that cannot be applied; ``code`` is stable for clients."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Update(NamedTuple):
    symbol: str
    price: str
    # None: keep the symbol's last value.
    volume: str | None
    timestamp_ms: int
    change_24h: str | None


_new = tuple.__new__


def check_symbol(symbol: object) -> str | None:
    """Why ``symbol`` cannot be a symbol, or None when it can."""
    if type(symbol) is not str:
        return f"must be a string, not {_kind(symbol)}"
    if SYMBOL.match(symbol) is None:
        return (
            f"{symbol[:40]!r} is not a symbol: upper-case letters and digits, "
            "parts joined by '-', '_' or '.', at most 32 characters"
        )
    return None


def parse_batch(data: Any, now_ms: int, max_batch: int, known: Container[str] = ()) -> list[Update]:
    """The updates in a decoded body or frame: one update, or a list of them.

    Args:
        data: what the JSON body or msgpack payload decoded to.
        now_ms: the timestamp of an update that has none.
        max_batch: the most updates one batch may hold.
        known: symbols already checked (the engine's map): their pattern is
            not matched again.

    Raises:
        InvalidUpdate: the first reason the batch cannot be applied.
    """
    if type(data) is list:
        if not data:
            raise InvalidUpdate("empty_batch", "the list holds no updates")
        if len(data) > max_batch:
            raise InvalidUpdate(
                "too_many_updates", f"{len(data)} updates in one batch; at most {max_batch}"
            )
        return [_update(item, now_ms, index, known) for index, item in enumerate(data)]
    return [_update(data, now_ms, None, known)]


def _update(item: Any, now_ms: int, index: int | None, known: Container[str]) -> Update:
    kind = type(item)
    if kind is dict:
        if not item.keys() <= _FIELD_SET:
            unknown = sorted(str(k) for k in item.keys() - _FIELD_SET)
            raise InvalidUpdate(
                "unknown_field",
                f"{_where(index)}unknown field {unknown[0]!r}; fields are {', '.join(FIELDS)}",
            )
        symbol = item.get("symbol")
        price = item.get("price")
        volume = item.get("volume")
        timestamp = item.get("timestamp_ms")
        change = item.get("change_24h")
    elif kind is list:
        if not 2 <= len(item) <= len(FIELDS):
            raise InvalidUpdate(
                "invalid_update",
                f"{_where(index)}an array update is [symbol, price, volume?, timestamp_ms?, "
                f"change_24h?]; this one has {len(item)} items",
            )
        symbol, price, volume, timestamp, change = (*item, None, None, None)[:5]
    else:
        raise InvalidUpdate(
            "invalid_update", f"{_where(index)}an update is an object, not {_kind(item)}"
        )
    if symbol is None:
        raise InvalidUpdate("missing_field", f"{_where(index)}symbol is required")
    if type(symbol) is not str or symbol not in known:
        why = check_symbol(symbol)
        if why is not None:
            raise InvalidUpdate("invalid_symbol", f"{_where(index)}symbol: {why}")
    if price is None:
        raise InvalidUpdate("missing_field", f"{_where(index)}price is required")
    price_text = _decimal(price, "price", index, signed=False)
    if price_text.strip("0.") == "":
        raise InvalidUpdate("invalid_price", f"{_where(index)}price: must be greater than 0")
    # tuple.__new__, not Update(...): a NamedTuple's own __new__ is Python
    # code, and this runs for every update.
    return _new(
        Update,
        (
            symbol,
            price_text,
            None if volume is None else _decimal(volume, "volume", index, signed=False),
            now_ms if timestamp is None else _timestamp(timestamp, index),
            None if change is None else _decimal(change, "change_24h", index, signed=True),
        ),
    )


def _decimal(value: Any, field: str, index: int | None, *, signed: bool) -> str:
    """The decimal text of a number, checked; a float's shortest round trip."""
    kind = type(value)
    if kind is float:
        text = repr(value)
        # nan, inf, 1e-05, 1e+16: repr says them with an n or an e, and only
        # then is there more to check (the common float costs one repr).
        if "e" in text or "n" in text:
            text = _odd_float(value, text, field, index)
    elif kind is int:
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise InvalidUpdate(f"invalid_{field}", f"{_where(index)}{field}: out of range")
        text = str(value)
    elif kind is str:
        if _DECIMAL.match(value) is None:
            raise InvalidUpdate(
                f"invalid_{field}",
                f"{_where(index)}{field}: {value[:40]!r} is not a decimal number",
            )
        text = value
    else:
        raise InvalidUpdate(
            f"invalid_{field}",
            f"{_where(index)}{field}: must be a number or a decimal string, not {_kind(value)}",
        )
    if not signed and text.startswith("-"):  # -0 too: a sign is not for these fields
        raise InvalidUpdate(f"invalid_{field}", f"{_where(index)}{field}: must not be negative")
    return text


def _odd_float(value: float, text: str, field: str, index: int | None) -> str:
    """A float that repr writes with an exponent, or not a finite one: its
    shortest decimal text without the exponent; below 1e-18 (what a decimal
    string can say) it is 0, so no text runs to hundreds of digits."""
    if not math.isfinite(value):
        raise InvalidUpdate(f"invalid_{field}", f"{_where(index)}{field}: must be a finite number")
    if abs(value) >= _INT_LIMIT:
        raise InvalidUpdate(f"invalid_{field}", f"{_where(index)}{field}: out of range")
    if abs(value) < _FLOAT_MIN:
        return "0"
    return format(Decimal(text), "f")


def _timestamp(value: Any, index: int | None) -> int:
    if type(value) is not int:
        raise InvalidUpdate(
            "invalid_timestamp_ms",
            f"{_where(index)}timestamp_ms: must be an integer (ms since the epoch), "
            f"not {_kind(value)}",
        )
    if not 0 <= value <= MAX_TIMESTAMP_MS:
        raise InvalidUpdate(
            "invalid_timestamp_ms", f"{_where(index)}timestamp_ms: out of range 0..2**53"
        )
    return value


def _where(index: int | None) -> str:
    return "" if index is None else f"updates[{index}]."


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__
