"""Each stateful plugin's journal records as history rows.

A decoder reads the records of one journal stream with the owning plugin's
own code, so the two cannot drift apart:

- ``orders`` records are *commands*; their trades and outcomes exist only once
  a book has applied them. ``OrdersDecoder`` keeps a shadow ``OrderService``
  (the orders plugin's, with the same symbols and engine kinds) and turns
  the events its ``replay`` returns into rows, prices and quantities rendered
  by the orders plugin's ``Renderer``. The engine is deterministic (no clock,
  no randomness), so the shadow books are the live ones as of the same seq.
  Its state (``state``/``load``, the service's snapshot) is committed with the
  rows now and then, so that a restart rebuilds it without the whole journal.
- ``payments`` records are the payment store's steps (``plugins/payments/store``
  names their kinds); ``PaymentsDecoder`` needs no state.

Rows are tuples in ``schema.COLUMNS`` order, collected per table in ``Rows``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import msgpack

from sprintd.plugins.orders.api import STREAM as ORDERS_STREAM
from sprintd.plugins.orders.commands import NEW, TIMED_LENGTH
from sprintd.plugins.orders.events import (
    EV_ACCEPTED,
    EV_REJECTED,
    EV_REPLACED,
    EV_TRADE,
    EVENT_NAMES,
    SIDE_NAMES,
    STP_NAMES,
    TIF_NAMES,
    TYPE_NAMES,
)
from sprintd.plugins.orders.render import Renderer
from sprintd.plugins.orders.service import OrderService, record_commands
from sprintd.plugins.payments.store import ACCEPT, COMMIT, DONE, PURGE, RELEASE
from sprintd.plugins.payments.store import STREAM as PAYMENTS_STREAM

from .schema import COLUMNS

__all__ = ["Decoder", "OrdersDecoder", "PaymentsDecoder", "Rows"]

# The payment store's steps after ACCEPT, as payment_events.kind says them.
_PAYMENT_EVENTS = {COMMIT: "commit", RELEASE: "release", DONE: "done", PURGE: "purge"}

Rows = dict[str, list[tuple[Any, ...]]]
"""Rows to write, per table."""


def new_rows() -> Rows:
    return {table: [] for table in COLUMNS}


class Decoder(Protocol):
    """One journal stream's records as rows."""

    stream: str
    # Whether it keeps state (``state``/``load``) that a restart must rebuild.
    stateful: bool

    def apply(self, seq: int, payload: bytes, rows: Rows) -> None:
        """Add the record's rows (a stateful decoder also applies it)."""

    def state(self) -> bytes | None:
        """What ``load`` needs to resume after the last record applied; None: stateless."""

    def load(self, data: bytes) -> None:
        """Take a state ``state`` returned."""


class OrdersDecoder:
    """``orders`` commands through a shadow order service, as orders, trades and events."""

    stream = ORDERS_STREAM
    stateful = True

    def __init__(self, service: OrderService) -> None:
        self.service = service
        self.render = Renderer(service.specs)

    def apply(self, seq: int, payload: bytes, rows: Rows) -> None:
        # A batch record's commands share its seq; their events are numbered
        # on through the record, so (seq, n) stays one event's.
        n = 0
        for command in record_commands(payload):
            n = self._command(seq, command, n, rows)

    def _command(self, seq: int, command: list[Any], first: int, rows: Rows) -> int:
        """Apply one command, add its rows (its events' ``n`` from ``first``);
        the next command's first ``n``."""
        events = self.service.replay_command(command)
        op, order_id, symbol = command[0], command[1], command[2]
        time_ms = command[-1] if len(command) == TIMED_LENGTH[op] else None
        text = self.render.text
        if op == NEW:
            side, kind, price, qty, tif, post_only, account, stp, client_id = command[3:12]
            rejected = events[0][0] == EV_REJECTED
            rows["orders"].append(
                (
                    order_id,
                    seq,
                    symbol,
                    SIDE_NAMES[side],
                    TYPE_NAMES[kind],
                    None if price is None else text(symbol, price, True),
                    text(symbol, qty, False),
                    TIF_NAMES[tif],
                    bool(post_only),
                    account,
                    client_id,
                    STP_NAMES[stp],
                    not rejected,
                    events[0][3] if rejected else None,
                    time_ms,
                )
            )
        for n, event in enumerate(events, first):
            kind = event[0]
            if kind == EV_TRADE:
                _, _, trade_id, maker, taker, price, qty, taker_side = event
                rows["trades"].append(
                    (
                        symbol,
                        trade_id,
                        seq,
                        maker,
                        taker,
                        text(symbol, price, True),
                        text(symbol, qty, False),
                        SIDE_NAMES[taker_side],
                        time_ms,
                    )
                )
            elif kind == EV_ACCEPTED or (op == NEW and kind == EV_REJECTED):
                continue  # the order's own row says it
            else:
                rows["order_events"].append(_order_event(seq, n, symbol, event, text, time_ms))
        return first + len(events)

    def state(self) -> bytes | None:
        return self.service.snapshot()

    def load(self, data: bytes) -> None:
        self.service.restore(data)


def _order_event(
    seq: int,
    n: int,
    symbol: str,
    event: tuple[Any, ...],
    text: Callable[[str, int, bool], str],
    time_ms: int | None,
) -> tuple[Any, ...]:
    """A cancel, expiry, replace or rejection as an ``order_events`` row (``events`` layouts)."""
    kind = event[0]
    order_id = event[2]
    price = qty = reason = None
    if kind == EV_REJECTED:
        reason = event[3]
    elif kind == EV_REPLACED:
        price, qty = text(symbol, event[3], True), text(symbol, event[4], False)
    else:  # cancelled, expired: the quantity that left, and why
        qty, reason = text(symbol, event[3], False), event[4]
    return (seq, n, order_id, symbol, EVENT_NAMES[kind], price, qty, reason, time_ms)


class PaymentsDecoder:
    """The payment store's steps (``payments.store``) as payments and their events."""

    stream = PAYMENTS_STREAM
    stateful = False

    def apply(self, seq: int, payload: bytes, rows: Rows) -> None:
        record = msgpack.unpackb(payload, raw=False)
        kind = record[0]
        if kind == ACCEPT:
            # [ACCEPT, cid, amount] is a duplicate's durability barrier: no row.
            if len(record) == 5:
                rows["payments"].append((seq, *record[1:5]))
            return
        name = _PAYMENT_EVENTS.get(kind)
        if name is None:
            raise ValueError(f"payments journal record of unknown kind {kind!r}")
        cid = record[1] if len(record) > 1 else None
        processor, at = (record[2], record[3]) if len(record) > 3 else (None, None)
        rows["payment_events"].append((seq, name, cid, processor, at))

    def state(self) -> bytes | None:
        return None

    def load(self, data: bytes) -> None:
        raise AssertionError("the payments decoder has no state")
