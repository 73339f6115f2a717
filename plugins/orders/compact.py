"""The compact order-entry protocol: positional commands, replies and reports.

Strategy
--------
The order-entry port's first protocol (``api.OrdersAPI.entry``) carries a map
per order with decimal strings, and answers a map per order: the per-order
cost is in the field checks, the decimal conversions and the dicts. The
compact protocol carries the same commands as integer arrays: a symbol is an
index into the table the session receives once (``hello``), prices and
quantities are integer ticks and lots, and replies and execution reports are
arrays too. The wire format is in ``README.md`` ("The compact protocol"); the
layouts, as this module reads and writes them::

    request frame = [VERSION, command, ...]
    command       = [HELLO, account, after_seq?]
                  | [NEW, symbol, side, price|nil, qty, tif?, post_only?, stp?,
                     client_order_id?]
                  | [CANCEL, order_id] | [REPLACE, order_id, price|nil, qty|nil]
                  | [GET, order_id] | [MASS_CANCEL, symbol?]
    reply frame   = [REPLIES, reply, ...]   one reply per command, in order
    reply         = [OK, order_id, status, filled, remaining, fills, reason?]
                  | [OK, epoch, last_seq, symbols]      (hello)
                  | [OK, order_ids]                     (mass cancel)
                  | [ERR, code, message]
    fills         = [[trade_id, maker_order_id, price, qty], ...]

A frame is told from the first protocol's by its first element: an integer
(the version) here, a command (an array) there. A new order goes through the
same bounds as a map would (``commands.Parser``: a test holds the two to the
same commands) and then through the same service calls, so both protocols
reach the same books and journal the same records.

The handler here applies commands and returns replies; the session that owns
the connection (``reports.EntryPort``) journals the batch's records before it
sends any of them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sprintd import HTTPError

from .commands import NEW as CMD_NEW
from .commands import InvalidOrder
from .events import EV_TRADE, LIMIT, MARKET, MAX_PRICE, MAX_QTY, STATUS_NAMES, Event, OrderState
from .service import OrderService
from .spec import SymbolSpec

if TYPE_CHECKING:
    from .reports import Session

__all__ = [
    "CANCEL",
    "ERR",
    "GET",
    "HELLO",
    "MASS_CANCEL",
    "NEW",
    "OK",
    "REPLACE",
    "REPLIES",
    "REPORTS",
    "SESSION_ERROR",
    "STATUS_CODES",
    "VERSION",
    "CompactHandler",
    "error",
    "is_compact",
    "parse_new",
    "symbol_table",
]

log = logging.getLogger("sprintd.orders")

VERSION = 2
"""The compact protocol's version: a request frame's first element."""

HELLO, NEW, CANCEL, REPLACE, GET, MASS_CANCEL = range(6)
"""Command codes: a command's first element."""

REPLIES, REPORTS, SESSION_ERROR = range(3)
"""Kinds of the frames the daemon sends: a server frame's first element."""

OK, ERR = 0, 1
"""A reply's first element."""

STATUS_CODES = {name: code for code, name in enumerate(STATUS_NAMES)}
"""An order's status as its code: new 0, partially_filled 1, filled 2,
cancelled 3, expired 4, rejected 5."""

_MAX_ID_LENGTH = 64  # as commands.Parser: ids are journaled with each order
_MAX_TIF, _MAX_STP = 2, 3


def is_compact(frame: list[Any]) -> bool:
    """Whether a decoded frame is the compact protocol's (module doc)."""
    return bool(frame) and type(frame[0]) is int


def error(code: str, message: str) -> list[Any]:
    """An error reply: ``[ERR, code, message]``."""
    return [ERR, code, message]


def symbol_table(specs: Mapping[str, SymbolSpec]) -> list[list[str]]:
    """``[[name, tick_size, lot_size], ...]``: a symbol's index is its place here."""
    return [[name, str(spec.tick_size), str(spec.lot_size)] for name, spec in specs.items()]


def _bad(message: str) -> InvalidOrder:
    return InvalidOrder("bad_command", message)


def _units(value: Any, field: str, limit: int) -> int:
    if type(value) is not int or not 0 < value <= limit:
        raise InvalidOrder(f"invalid_{field}", f"{field} must be an integer from 1 to {limit}")
    return value


def _code(value: Any, field: str, top: int) -> int:
    if type(value) is not int or not 0 <= value <= top:
        raise InvalidOrder(f"invalid_{field}", f"{field} must be an integer from 0 to {top}")
    return value


def parse_new(command: list[Any], symbols: list[str], account: str) -> list[Any]:
    """A compact NEW as the service's NEW command (``commands`` module), for
    ``account``; order id and time 0, the service's to fill.

    Raises:
        InvalidOrder: 400 with the first problem found, as ``Parser.new``
            words it where the two protocols share a field.
    """
    n = len(command)
    if not 5 <= n <= 9:
        raise _bad(f"new takes 4 to 8 fields, not {n - 1}")
    index = command[1]
    if type(index) is not int or not 0 <= index < len(symbols):
        raise InvalidOrder("unknown_symbol", f"symbol must be an index below {len(symbols)}")
    # The common case checked in line, the helpers called only to word a
    # refusal: a call costs more than its checks.
    side = command[2]
    if type(side) is not int or not 0 <= side <= 1:
        _code(side, "side", 1)
    price = command[3]
    if price is None:
        kind = MARKET
    else:
        kind = LIMIT
        if type(price) is not int or not 0 < price <= MAX_PRICE:
            _units(price, "price", MAX_PRICE)
    qty = command[4]
    if type(qty) is not int or not 0 < qty <= MAX_QTY:
        _units(qty, "qty", MAX_QTY)
    tif = _code(command[5], "tif", _MAX_TIF) if n > 5 else 0
    post_only = command[6] if n > 6 else False
    if type(post_only) is not bool:
        raise InvalidOrder("invalid_post_only", "post_only must be true or false")
    stp = _code(command[7], "stp", _MAX_STP) if n > 7 else 0
    client_id = command[8] if n > 8 else None
    if client_id is not None and (type(client_id) is not str or len(client_id) > _MAX_ID_LENGTH):
        raise InvalidOrder(
            "invalid_client_order_id", f"client_order_id must be a string of <= {_MAX_ID_LENGTH}"
        )
    return [
        CMD_NEW, 0, symbols[index], side, kind, price, qty, tif, post_only, account, stp,
        client_id, 0,
    ]  # fmt: skip


def order_reply(state: OrderState, events: Sequence[Event] = ()) -> list[Any]:
    """``[OK, order_id, status, filled, remaining, fills, reason?]``."""
    reply = [
        OK,
        state.order_id,
        STATUS_CODES[state.status],
        state.filled_qty,
        state.remaining_qty,
        # A command's own event comes first, a trade after it: one event, no
        # fills (and no comprehension's frame for most orders).
        [[e[2], e[3], e[5], e[6]] for e in events if e[0] == EV_TRADE] if len(events) > 1 else [],
    ]
    if state.reason is not None:
        reply.append(state.reason)
    return reply


class CompactHandler:
    """Applies compact frames to the service and answers them.

    Args:
        service: the books.
    """

    def __init__(self, service: OrderService) -> None:
        self.service = service
        self.symbols = list(service.specs)

    def frame(
        self, session: Session, frame: list[Any], payloads: list[bytes], writable: bool
    ) -> list[Any]:
        """The reply frame to one compact request frame; the records to journal
        are appended to ``payloads``. ``writable``: the journal takes changes."""
        if frame[0] != VERSION:
            return [REPLIES, error("unsupported_version", f"version {frame[0]}; this is {VERSION}")]
        command = self.command
        return [REPLIES, *[command(session, c, payloads, writable) for c in frame[1:]]]

    def command(
        self, session: Session, command: Any, payloads: list[bytes], writable: bool
    ) -> list[Any]:
        service = self.service
        try:
            if type(command) is not list or not command:
                raise _bad("a command is a non-empty array")
            op = command[0]
            if type(op) is not int:
                raise _bad("a command begins with its integer code")
            account = session.account
            if account is None:
                if op == HELLO:
                    return session.hello(command)
                raise InvalidOrder("hello_required", "a session begins with hello")
            if op == GET and len(command) == 2:
                return order_reply(service.find(command[1])[1])
            if not writable:
                raise InvalidOrder("journal_unavailable", "the journal cannot take commands now")
            if op == NEW:
                payload, outcome = service.submit(parse_new(command, self.symbols, account))
                if payload is not None:
                    payloads.append(payload)
                return order_reply(outcome.state, outcome.events)
            if op == CANCEL and len(command) == 2:
                payload, outcome = service.cancel(command[1])
            elif op == REPLACE and len(command) == 4:
                payload, outcome = self._replace(command[1], command[2], command[3])
            elif op == MASS_CANCEL and len(command) <= 2:
                return [OK, self._mass_cancel(account, command[1:], payloads)]
            elif op == HELLO:
                raise InvalidOrder("already_bound", f"this session is account {account!r}'s")
            else:
                raise _bad(f"unknown command {op!r} of {len(command)}")
        except HTTPError as exc:
            return error(exc.code, exc.message)
        except Exception:
            # A bug; if it struck while applying, the service has halted.
            log.exception("orders: compact command %r failed", command)
            return error("internal_error", "the command failed; see the daemon's log")
        payloads.append(payload)
        return order_reply(outcome.state, outcome.events)

    def _replace(self, order_id: Any, price: Any, qty: Any) -> Any:
        symbol = self.service.live_symbol(order_id)
        if price is None and qty is None:
            raise InvalidOrder("invalid_body", "send price, qty or both")
        return self.service.replace(
            order_id,
            symbol,
            None if price is None else _units(price, "price", MAX_PRICE),
            None if qty is None else _units(qty, "qty", MAX_QTY),
        )

    def _mass_cancel(self, account: str, which: list[Any], payloads: list[bytes]) -> list[int]:
        """Cancel the account's live orders, on one symbol or all; their ids.

        Each is journaled as the plain cancel it is, so replay needs nothing new.
        """
        service = self.service
        service.check_running()
        if which and which[0] is not None:
            index = which[0]
            if type(index) is not int or not 0 <= index < len(self.symbols):
                raise InvalidOrder("unknown_symbol", "no such symbol index")
            symbols = [self.symbols[index]]
        else:
            symbols = self.symbols
        number = service.accounts.get(account)
        if number is None:
            return []
        ids = []
        for symbol in symbols:
            engine: Any = service.engines[symbol]
            book = getattr(engine, "iter_book", None)
            if book is None:
                raise InvalidOrder("unsupported", f"{symbol}'s engine cannot list its orders")
            ids += [oid for _, _, oid, _ in book() if engine.order(oid).account == number]
        payloads.extend(service.cancel(order_id)[0] for order_id in ids)
        return ids
