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
strings, numbers accepted on input); the snapshots publish them as decimal
text (``decimal_text``): a string as sent, an integer as digits, a float in
its shortest round-trip form without an exponent. A float is checked here
and kept as it is, its text made only when a snapshot is published: a feed
sends many updates of a symbol for each publish, and ``repr`` of a float was
a quarter of the feed's time. Booleans, NaN and infinities are not numbers.
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
    "Number",
    "Update",
    "check_symbol",
    "decimal_text",
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


# A checked number: decimal text, or a float whose text decimal_text makes.
Number = str | float


class Update(NamedTuple):
    """One validated price update, as ``parse_batch`` returns them."""

    symbol: str
    price: Number
    # None: keep the symbol's last value.
    volume: Number | None
    timestamp_ms: int
    change_24h: Number | None


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
        if not 2 <= len(item) <= 5:
            raise InvalidUpdate(
                "invalid_update",
                f"{_where(index)}an array update is [symbol, price, volume?, timestamp_ms?, "
                f"change_24h?]; this one has {len(item)} items",
            )
        # By index: unpacking a padded copy made two tuples per update.
        size = len(item)
        symbol, price = item[0], item[1]
        volume = item[2] if size > 2 else None
        timestamp = item[3] if size > 3 else None
        change = item[4] if size > 4 else None
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
    price = _number(price, "price", index, signed=False)
    if price.strip("0.") == "" if isinstance(price, str) else not price >= _FLOAT_MIN:
        raise InvalidUpdate("invalid_price", f"{_where(index)}price: must be greater than 0")
    # tuple.__new__, not Update(...): a NamedTuple's own __new__ is Python
    # code, and this runs for every update.
    return _new(
        Update,
        (
            symbol,
            price,
            None if volume is None else _number(volume, "volume", index, signed=False),
            now_ms if timestamp is None else _timestamp(timestamp, index),
            None if change is None else _number(change, "change_24h", index, signed=True),
        ),
    )


def _number(value: Any, field: str, index: int | None, *, signed: bool) -> Number:
    """A checked number: a float as it is, else its decimal text."""
    kind = type(value)
    if kind is float:
        # One chained comparison refuses NaN, the infinities and the too large.
        if not -_INT_LIMIT < value < _INT_LIMIT:
            why = "out of range" if math.isfinite(value) else "must be a finite number"
            raise InvalidUpdate(f"invalid_{field}", f"{_where(index)}{field}: {why}")
        if not signed and value < 0:
            raise InvalidUpdate(f"invalid_{field}", f"{_where(index)}{field}: must not be negative")
        return value  # type: ignore[no-any-return]
    if kind is int:
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


def decimal_text(value: Number) -> str:
    """A checked number as the snapshots say it: a float in its shortest
    round-trip form without an exponent, 0 below 1e-18 (what a decimal string
    can say, so no text runs to hundreds of digits), never -0."""
    if isinstance(value, str):
        return value
    text = repr(value)
    if "e" in text:  # 1e-05, 1e+16
        return "0" if -_FLOAT_MIN < value < _FLOAT_MIN else format(Decimal(text), "f")
    return text[1:] if value == 0 and text[0] == "-" else text


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
