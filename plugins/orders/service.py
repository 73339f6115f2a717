"""The order service: validation, ids, idempotency and state around the engines.

Everything that changes state is a *command*, a small msgpack array, applied
by ``_apply`` both live and on replay, so the journal's records and the live
path cannot drift apart:

    [NEW, order_id, symbol, side, kind, price, qty, tif, post_only, account, stp,
     client_order_id, time_ms]
    [CANCEL, order_id, symbol, time_ms]
    [REPLACE, order_id, symbol, price, qty, time_ms]

Prices and quantities are integer ticks and lots, within the engine's
``MAX_PRICE`` and ``MAX_QTY``; ``account`` and ``client_order_id`` are the
client's strings (accounts get engine numbers in order of first use, which
replay reproduces). ``time_ms`` is the service's clock when the command was
accepted (never behind an earlier command's): the engine reads no clock, and
the client ids' retention is measured in these times, so replay forgets the
same ids at the same commands. (Records journaled before it existed have no
``time_ms``; they count as the time of the command before.)

Order of work, for durability (the plugin's handlers do it): validate (a bad
request changes nothing and is not journaled), encode the record (so nothing
that can fail is left once the book changes), apply, then ``await`` the
journal append, then answer. An exception while applying is a bug that may
have changed a book half way: the service *halts* (``halted``), answering
every later command ``orders_halted`` (503) so that nothing is acknowledged
on top of a state the journal does not hold; reads go on, and a restart
replays the journal to the last good command. The append takes its sequence number before it
first waits, so records are in the order commands were applied, whatever the
interleaving of requests; an answer only leaves once the record is durable
per the tier's fsync policy. A command applied but not yet durable when the
process dies was never acknowledged: after replay it is either there or not,
and a client retrying with the same ``client_order_id`` gets the order it
already has, never a second one.

Cancels and replaces of an unknown or finished order are answered without
reaching the engine (an engine numbers every command it sees, so a rejected
one would have to be journaled to replay to the same sequence).

Client order ids are per account. A live order's id is kept as long as it
rests; a done order's for ``client_id_retention`` from the command that ended
it, and at most ``client_id_capacity`` of them (oldest forgotten first), with
the order's final state, so a retry is answered even after the engine has
forgotten the order. Rejected orders keep no id: a retry is judged again.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

import msgpack

from .config import OrdersSection
from .events import (
    EV_CANCELLED,
    EV_REJECTED,
    EV_TRADE,
    GTC,
    LIMIT,
    MAX_PRICE,
    MAX_QTY,
    SIDE_NAMES,
    STP_NAMES,
    TIF_NAMES,
    TYPE_NAMES,
    Event,
    OrderState,
)
from .spec import OffGridError, SymbolSpec

__all__ = ["CANCEL", "NEW", "REPLACE", "Engine", "InvalidOrder", "OrderService", "Outcome"]

NEW, CANCEL, REPLACE = 1, 2, 3
# Each command's length with its time_ms, by op (records without it are shorter).
_TIMED_LENGTH = {NEW: 13, CANCEL: 4, REPLACE: 6}
_SNAPSHOT_VERSION = 2
# The engine's statuses of an order still in the book.
_LIVE = frozenset({"new", "partially_filled"})


class Engine(Protocol):
    """What the service needs of an engine (``sprintd_order_engines``)."""

    sequence: int

    def new(
        self,
        order_id: int,
        side: int,
        price: int | None,
        qty: int,
        kind: int = ...,
        tif: int = ...,
        post_only: bool = ...,
        account: int = ...,
        stp: int = ...,
    ) -> list[Event]: ...
    def cancel(self, order_id: int) -> list[Event]: ...
    def replace(
        self, order_id: int, price: int | None = ..., qty: int | None = ...
    ) -> list[Event]: ...
    def order(self, order_id: int) -> OrderState | None: ...
    def depth(self, levels: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]: ...
    def state_hash(self) -> str: ...
    def snapshot(self) -> bytes: ...


EngineFactory = Callable[[str], Engine]
EngineRestore = Callable[[bytes], Engine]


class InvalidOrder(ValueError):
    """A request that cannot become a command; ``code`` is stable for clients.

    ``status``: 400 for a malformed request, 404 for an unknown order, 409 for
    one already done, 503 when the service has halted.
    """

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Outcome:
    """A command's result: the order as it stands, and the events it caused."""

    __slots__ = ("created", "events", "state")

    def __init__(self, state: OrderState, events: list[Event], created: bool) -> None:
        self.state = state
        self.events = events
        self.created = created


def _choice(value: Any, names: tuple[str, ...], field: str, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, str):
        for index, name in enumerate(names):
            if value == name or value.lower() == name.lower():
                return index
    raise InvalidOrder(f"invalid_{field}", f"{field} must be one of {', '.join(names)}")


ClientKey = tuple[int, str]
"""(account number, client_order_id)."""


class OrderService:
    """The books, their ids and client ids (module doc).

    ``clock`` gives seconds since the epoch (``time.time``); tests pass their own.
    """

    def __init__(
        self,
        section: OrdersSection,
        factories: Mapping[str, EngineFactory],
        restorers: Mapping[str, EngineRestore],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.section = section
        self.specs = {
            symbol: SymbolSpec(symbol, cfg.tick_size, cfg.lot_size)
            for symbol, cfg in section.symbols.items()
        }
        self._engine_kind = {symbol: cfg.engine for symbol, cfg in section.symbols.items()}
        self._factories = factories
        self._restorers = restorers
        self.engines: dict[str, Engine] = {
            symbol: factories[kind](symbol) for symbol, kind in self._engine_kind.items()
        }
        self.next_id = 1
        self.accounts: dict[str, int] = {"": 0}
        self._clock = clock
        #: The latest command's time_ms: the clock as the journal knows it.
        self.time_ms = 0
        # Live orders' client ids, both ways; bounded by the books.
        self._live_ids: dict[ClientKey, int] = {}
        self._live_keys: dict[int, ClientKey] = {}
        # Done orders' client ids -> their final state, and the ids in the
        # order they were done, with that time (so the oldest is at the left).
        self._done_ids: dict[ClientKey, tuple[int, OrderState | None]] = {}
        self._done_order: deque[tuple[int, ClientKey]] = deque()
        self._retention_ms = int(section.client_id_retention * 1000)
        #: Why the service halted (module doc), or None while it takes commands.
        self.halted: str | None = None
        #: Called once, with the reason, when the service halts.
        self.on_halt: Callable[[str], None] = lambda reason: None
        self.trades: dict[str, deque[tuple[int, int, int, int, int, int]]] = {
            symbol: deque(maxlen=section.trades_kept) for symbol in self.engines
        }
        self.dirty: set[str] = set()
        self.journal_seq = 0
        self._text: dict[tuple[str, int, bool], str] = {}

    # --- reading requests (no state changes) -------------------------------

    def _spec(self, symbol: Any) -> SymbolSpec:
        spec = self.specs.get(symbol) if isinstance(symbol, str) else None
        if spec is None:
            raise InvalidOrder("unknown_symbol", f"symbol must be one of {', '.join(self.specs)}")
        return spec

    @staticmethod
    def _units(spec: SymbolSpec, value: Any, field: str) -> int:
        """A price or quantity on the symbol's grid, in ticks or lots, positive
        and within the engine's bounds.

        Raises:
            InvalidOrder: ``invalid_price`` or ``invalid_qty`` with the reason.
        """
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

    def new_command(self, body: Any) -> tuple[list[Any], int, str | None]:
        """A NEW command (without its order id yet) from a request body.

        Returns the command, the account number and the client order id.

        Raises:
            InvalidOrder: with the first problem found.
        """
        if not isinstance(body, dict):
            raise InvalidOrder("invalid_body", "the body must be an object")
        allowed = {
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
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise InvalidOrder("unknown_field", f"unknown field {unknown[0]!r}")
        symbol = body.get("symbol")
        spec = self._spec(symbol)
        side = _choice(body.get("side"), SIDE_NAMES, "side")
        kind = _choice(body.get("type"), TYPE_NAMES, "type", LIMIT)
        tif = _choice(body.get("tif"), TIF_NAMES, "tif", GTC)
        stp = _choice(body.get("stp"), STP_NAMES, "stp", 0)
        if "qty" not in body:
            raise InvalidOrder("invalid_qty", "qty is required")
        qty = self._units(spec, body["qty"], "qty")
        price = None
        if kind == LIMIT:
            if body.get("price") is None:
                raise InvalidOrder("invalid_price", "a limit order needs a price")
            price = self._units(spec, body["price"], "price")
        post_only = body.get("post_only", False)
        if not isinstance(post_only, bool):
            raise InvalidOrder("invalid_post_only", "post_only must be true or false")
        account = body.get("account") or ""
        client_id = body.get("client_order_id")
        for name, value in (("account", account), ("client_order_id", client_id)):
            if value is not None and (not isinstance(value, str) or len(value) > 64):
                raise InvalidOrder(f"invalid_{name}", f"{name} must be a string of <= 64")
        number = self.accounts.get(account, len(self.accounts))
        command = [
            NEW,
            0,
            symbol,
            side,
            kind,
            price,
            qty,
            tif,
            post_only,
            account,
            stp,
            client_id,
            0,
        ]
        return command, number, client_id

    def find(self, order_id: Any) -> tuple[str, OrderState]:
        """The symbol and state of an order the engines still know.

        Raises:
            InvalidOrder: 404 ``unknown_order``.
        """
        if isinstance(order_id, int) and not isinstance(order_id, bool):
            for symbol, engine in self.engines.items():
                state = engine.order(order_id)
                if state is not None:
                    return symbol, state
        raise InvalidOrder("unknown_order", f"no order {order_id!r}", 404)

    def _is_live(self, order_id: int) -> bool:
        return any(
            (state := engine.order(order_id)) is not None and state.status in _LIVE
            for engine in self.engines.values()
        )

    def client_id_counts(self) -> dict[str, int]:
        """Client ids kept: of live orders, and of done ones (``client_id_capacity``)."""
        return {"live": len(self._live_ids), "done": len(self._done_ids)}

    def _live(self, order_id: Any) -> tuple[str, OrderState]:
        symbol, state = self.find(order_id)
        if state.status not in _LIVE:
            raise InvalidOrder("order_done", f"order {order_id} is {state.status}", 409)
        return symbol, state

    # --- changing state ----------------------------------------------------

    def check_running(self) -> None:
        """Raises: InvalidOrder: 503 ``orders_halted`` once the service halted."""
        if self.halted is not None:
            raise InvalidOrder(
                "orders_halted",
                f"order entry is halted until a restart: {self.halted}",
                503,
            )

    def submit(
        self, command: list[Any], account: int, client_id: str | None
    ) -> tuple[bytes | None, Outcome]:
        """Apply a NEW command; the payload to journal (None: nothing new happened)."""
        self.check_running()
        if client_id is not None:
            key = (account, client_id)
            known = self._live_ids.get(key)
            if known is not None:
                # A retry: the order already exists, nothing is entered twice.
                return None, Outcome(self.find(known)[1], [], created=False)
            done = self._done_ids.get(key)
            if done is not None:
                if done[1] is None:
                    raise InvalidOrder(
                        "duplicate_client_order_id",
                        f"order {done[0]} has client_order_id {client_id!r} and is done",
                        409,
                    )
                return None, Outcome(done[1], [], created=False)
        command[1] = self.next_id
        payload, events = self._commit(command)
        return payload, Outcome(self.find(command[1])[1], events, True)

    def cancel(self, order_id: Any) -> tuple[bytes, Outcome]:
        self.check_running()
        symbol, _ = self._live(order_id)
        payload, events = self._commit([CANCEL, order_id, symbol, 0])
        return payload, Outcome(self.find(order_id)[1], events, False)

    def replace(self, order_id: Any, body: Any) -> tuple[bytes, Outcome]:
        self.check_running()
        symbol, _ = self._live(order_id)
        if not isinstance(body, dict) or not set(body) <= {"price", "qty"} or not body:
            raise InvalidOrder("invalid_body", "send price, qty or both")
        spec = self.specs[symbol]
        price = body.get("price")
        qty = body.get("qty")
        if price is not None:
            price = self._units(spec, price, "price")
        if qty is not None:
            qty = self._units(spec, qty, "qty")
        payload, events = self._commit([REPLACE, order_id, symbol, price, qty, 0])
        return payload, Outcome(self.find(order_id)[1], events, False)

    def _commit(self, command: list[Any]) -> tuple[bytes, list[Event]]:
        """Time, encode, then apply a valid command: all of it or nothing.

        Raises:
            InvalidOrder: the record cannot be encoded (nothing changed).
            Exception: whatever applying raised; the service has halted.
        """
        command[-1] = max(self.time_ms, int(self._clock() * 1000))
        try:
            payload: bytes = msgpack.packb(command, use_bin_type=True)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidOrder("invalid_body", f"the order cannot be recorded: {exc}") from None
        try:
            events = self._apply(command)
        except Exception as exc:
            self.halted = f"applying {command[:3]} raised {type(exc).__name__}: {exc}"
            self.on_halt(self.halted)
            raise
        return payload, events

    def replay(self, payload: bytes) -> None:
        """Apply a journaled command, as it was applied live."""
        self._apply(msgpack.unpackb(payload, raw=False))

    def _apply(self, command: list[Any]) -> list[Event]:
        op, order_id, symbol = command[0], command[1], command[2]
        if len(command) == _TIMED_LENGTH[op]:
            self.time_ms = command[-1]
        engine = self.engines[symbol]
        if op == NEW:
            side, kind, price, qty, tif, post_only, account, stp, client_id = command[3:12]
            number = self.accounts.setdefault(account, len(self.accounts))
            events = engine.new(order_id, side, price, qty, kind, tif, post_only, number, stp)
            self.next_id = max(self.next_id, order_id + 1)
            if client_id is not None and events[-1][0] != EV_REJECTED:
                self._live_ids[(number, client_id)] = order_id
                self._live_keys[order_id] = (number, client_id)
        elif op == CANCEL:
            events = engine.cancel(order_id)
        else:
            events = engine.replace(order_id, command[3], command[4])
        trades = self.trades[symbol]
        live_keys = self._live_keys
        for event in events:
            kind = event[0]
            if kind == EV_TRADE:
                trades.append(event[2:8])
                if event[3] in live_keys:
                    self._settle(engine, event[3])
            elif kind == EV_CANCELLED and event[2] != order_id and event[2] in live_keys:
                self._settle(engine, event[2])  # a maker cancelled by STP
        if order_id in live_keys:
            self._settle(engine, order_id)
        self._expire()
        self.dirty.add(symbol)
        return events

    def _settle(self, engine: Engine, order_id: int) -> None:
        """Move a client id from the live ones to the done ones if its order is
        done. Its state is None only when one command ended more orders than
        the engine keeps done ones (``done_capacity``)."""
        state = engine.order(order_id)
        if state is None or state.status not in _LIVE:
            key = self._live_keys.pop(order_id)
            del self._live_ids[key]
            self._done_ids[key] = (order_id, state)
            self._done_order.append((self.time_ms, key))

    def _expire(self) -> None:
        """Forget done orders' client ids past their retention or the capacity."""
        done = self._done_order
        if done:
            horizon = self.time_ms - self._retention_ms
            capacity = self.section.client_id_capacity
            while done and (done[0][0] <= horizon or len(done) > capacity):
                del self._done_ids[done.popleft()[1]]

    # --- reading state -----------------------------------------------------

    def text(self, symbol: str, units: int, price: bool) -> str:
        """A price (ticks) or quantity (lots) as its decimal string, cached:
        Decimal arithmetic costs more than the rest of a book snapshot."""
        key = (symbol, units, price)
        found = self._text.get(key)
        if found is None:
            if len(self._text) > 100_000:
                self._text.clear()
            spec = self.specs[symbol]
            value: Decimal = spec.from_ticks(units) if price else spec.from_lots(units)
            found = self._text[key] = str(value)
        return found

    def order_json(self, state: OrderState, events: Iterable[Event] = ()) -> dict[str, Any]:
        symbol = state.symbol
        # DESIGN's statuses have no "expired": an IOC or market remainder is a
        # cancel, and its reason says why.
        status = "cancelled" if state.status == "expired" else state.status
        answer: dict[str, Any] = {
            "order_id": state.order_id,
            "symbol": symbol,
            "side": SIDE_NAMES[state.side],
            "price": None if state.price is None else self.text(symbol, state.price, True),
            "qty": self.text(symbol, state.qty, False),
            "status": status,
            "filled_qty": self.text(symbol, state.filled_qty, False),
            "remaining_qty": self.text(symbol, state.remaining_qty, False),
            "fills": [self.trade_json(symbol, e[2:8]) for e in events if e[0] == EV_TRADE],
        }
        if state.reason is not None:
            key = "reject_reason" if state.status == "rejected" else "reason"
            answer[key] = state.reason
        return answer

    def trade_json(self, symbol: str, trade: tuple[int, ...]) -> dict[str, Any]:
        trade_id, maker, taker, price, qty, taker_side = trade
        return {
            "trade_id": trade_id,
            "price": self.text(symbol, price, True),
            "qty": self.text(symbol, qty, False),
            "maker_order_id": maker,
            "taker_order_id": taker,
            "taker_side": SIDE_NAMES[taker_side],
        }

    def book_json(self, symbol: str, depth: int) -> dict[str, Any]:
        engine = self.engines[symbol]
        bids, asks = engine.depth(depth)
        text = self.text
        return {
            "symbol": symbol,
            "sequence": engine.sequence,
            "bids": [[text(symbol, p, True), text(symbol, q, False)] for p, q in bids],
            "asks": [[text(symbol, p, True), text(symbol, q, False)] for p, q in asks],
        }

    def state_hash(self) -> str:
        """One digest of every engine's state and the id counter."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(str(self.next_id).encode())
        for symbol in sorted(self.engines):
            digest.update(symbol.encode() + b"=" + self.engines[symbol].state_hash().encode())
        return digest.hexdigest()

    # --- snapshots -----------------------------------------------------------

    def snapshot(self) -> bytes:
        """Everything ``restore`` needs.

        Raises:
            RuntimeError: the service halted: its state may not be the journal's.
        """
        if self.halted is not None:
            raise RuntimeError(f"no snapshot of a halted order service: {self.halted}")
        data: bytes = msgpack.packb(
            {
                "version": _SNAPSHOT_VERSION,
                "next_id": self.next_id,
                "accounts": self.accounts,
                "time_ms": self.time_ms,
                "live_ids": [[a, c, o] for (a, c), o in self._live_ids.items()],
                # In the order they were done, each with its final state.
                "done_ids": [
                    [t, a, c, self._done_ids[a, c][0], self._done_ids[a, c][1]]
                    for t, (a, c) in self._done_order
                ],
                "trades": {s: [list(t) for t in d] for s, d in self.trades.items()},
                "engines": {s: e.snapshot() for s, e in self.engines.items()},
            },
            use_bin_type=True,
        )
        return data

    def restore(self, data: bytes) -> None:
        """Take a snapshot's state; symbols no longer configured are an error."""
        state = msgpack.unpackb(data, raw=False, strict_map_key=False)
        version = state.get("version")
        if version not in (1, _SNAPSHOT_VERSION):
            raise ValueError(f"orders snapshot version {version!r}")
        missing = sorted(set(state["engines"]) - set(self.engines))
        if missing:
            raise ValueError(f"the snapshot has books for unconfigured symbols: {missing}")
        for symbol, blob in state["engines"].items():
            self.engines[symbol] = self._restorers[self._engine_kind[symbol]](blob)
        self.next_id = state["next_id"]
        self.accounts = dict(state["accounts"])
        if version == 1:
            # Client ids without the time their orders were done: the live
            # orders' are kept, the done ones' cannot be timed and are not.
            old = [*state["client_ids_old"], *state["client_ids"]]
            state |= {
                "time_ms": 0,
                "done_ids": [],
                "live_ids": [i for i in old if self._is_live(i[2])],
            }
        self.time_ms = state["time_ms"]
        self._live_ids = {(a, c): o for a, c, o in state["live_ids"]}
        self._live_keys = {o: key for key, o in self._live_ids.items()}
        for t, a, c, o, final in state["done_ids"]:
            self._done_ids[a, c] = (o, None if final is None else OrderState(*final))
            self._done_order.append((t, (a, c)))
        for symbol, trades in state["trades"].items():
            self.trades[symbol].extend(tuple(t) for t in trades)
