"""The Rinha de Backend 2025 wire format: what clients send and what they get back.

The field names are the challenge's, exactly. Amounts are decimals kept exact
end to end: read from the client's number (the shortest text that
round-trips its float, which is what the client wrote for any amount of up
to 15 significant digits) or string, sent to the processor and summed as
decimals, and written back as JSON numbers from their decimal text, because
the challenge's clients read ``totalAmount`` as a number.

Instants: ``requestedAt`` is sent as ISO-8601 UTC with milliseconds
(``2025-07-15T12:34:56.789Z``) and kept as integer milliseconds; summary
bounds are read to the microsecond and compared inclusively.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, cast

from sprintd import HTTPError

__all__ = [
    "MAX_AMOUNT_DIGITS",
    "PROCESSORS",
    "Totals",
    "amount_text",
    "bound_ms",
    "instant_ms",
    "iso_ms",
    "parse_bound",
    "parse_payment",
    "summary_body",
]

PROCESSORS = ("default", "fallback")
# Decimal's default context holds 28 digits: sums of amounts this long stay exact.
MAX_AMOUNT_DIGITS = 20
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _invalid(code: str, message: str) -> HTTPError:
    return HTTPError(400, code, message)


def parse_payment(data: Any) -> tuple[str, Decimal]:
    """``{"correlationId": uuid, "amount": decimal}`` as (lower-case id, amount).

    Raises:
        HTTPError: 400 naming the field at fault.
    """
    if not isinstance(data, dict):
        raise _invalid("invalid_body", "the body must be a JSON object")
    cid = data.get("correlationId")
    if not isinstance(cid, str) or _UUID.fullmatch(cid) is None:
        raise _invalid("invalid_correlation_id", "correlationId must be a UUID string")
    amount = data.get("amount")
    kind = type(amount)
    try:
        if kind is float:
            value = Decimal(repr(amount))
        elif kind is int or kind is str:
            value = Decimal(cast(int | str, amount))
        else:
            raise InvalidOperation
    except (InvalidOperation, ValueError):
        raise _invalid("invalid_amount", "amount must be a positive decimal number") from None
    if not value.is_finite() or value <= 0:
        raise _invalid("invalid_amount", "amount must be a positive decimal number")
    if len(value.as_tuple().digits) > MAX_AMOUNT_DIGITS:
        raise _invalid("invalid_amount", f"amount has more than {MAX_AMOUNT_DIGITS} digits")
    return cid.lower(), value


def amount_text(value: Decimal) -> str:
    """An amount as a JSON number literal: exact, never an exponent."""
    return format(value, "f")


# The last second formatted, and its text: payments come many to a second.
_last_second: list[Any] = [None, ""]


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ``."""
    seconds, millis = divmod(ms, 1000)
    if _last_second[0] != seconds:
        _last_second[:] = [seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))]
    return f"{_last_second[1]}.{millis:03d}Z"


def instant_ms() -> int:
    """Now, as milliseconds since the epoch (the wall clock: clients compare it to theirs)."""
    return time.time_ns() // 1_000_000


def parse_bound(text: str | None, name: str) -> int | None:
    """A summary bound (``from``/``to``) as microseconds since the epoch; None when absent.

    Naive instants are UTC.

    Raises:
        HTTPError: 400 for text that is not an ISO-8601 date-time.
    """
    if text is None or text == "":
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(f"invalid_{name}", f"{name} must be an ISO-8601 date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def bound_ms(us: int | None, *, low: bool) -> int | None:
    """An inclusive microsecond bound as the inclusive millisecond bound of a
    requestedAt (which has milliseconds): rounded inwards."""
    if us is None:
        return None
    return -(-us // 1000) if low else us // 1000


# processor name -> (totalRequests, totalAmount)
Totals = dict[str, tuple[int, Decimal]]


def summary_body(totals: Totals) -> bytes:
    """``{"default": {totalRequests, totalAmount}, "fallback": {...}}``, amounts as numbers."""
    parts = []
    for name in PROCESSORS:
        count, total = totals[name]
        parts.append(f'"{name}":{{"totalRequests":{count},"totalAmount":{amount_text(total)}}}')
    return ("{" + ",".join(parts) + "}").encode()
