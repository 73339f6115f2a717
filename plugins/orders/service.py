"""The order service: the books' state machine, around the engines.

Strategy
--------
The service holds the state that the journal makes durable: one engine per
symbol, the order id counter, the accounts' numbers, client order ids and the
recent trades. It applies *commands* (``commands`` module: their layouts, and
the validation that turns a request into one) through ``_apply``, both live
and on replay, so the journal's records and the live path cannot drift apart.
Accounts get engine numbers in order of first use, which replay reproduces.
``time_ms`` is the service's clock when a command was accepted (never behind
an earlier command's): the engine reads no clock, and the client ids'
retention is measured in these times, so replay forgets the same ids at the
same commands. (Records journaled before it existed have no ``time_ms``; they
count as the time of the command before.)

Order of work, for durability (the plugin's handlers, ``api``, do it):
validate (a bad request changes nothing and is not journaled), encode the
record (so nothing that can fail is left once the book changes), apply, then
``await`` the journal append, then answer. An exception while applying is a
bug that may have changed a book half way: the service *halts* (``halted``),
answering every later command ``orders_halted`` (503) so that nothing is
acknowledged on top of a state the journal does not hold; reads go on, and a
restart replays the journal to the last good command. The append takes its
sequence number before it first waits, so records are in the order commands
were applied, whatever the interleaving of requests; an answer only leaves
once the record is durable per the tier's fsync policy. A command applied but
not yet durable when the process dies was never acknowledged: after replay it
is either there or not, and a client retrying with the same
``client_order_id`` gets the order it already has, never a second one.

Cancels and replaces of an unknown or finished order are answered without
reaching the engine (an engine numbers every command it sees, so a rejected
one would have to be journaled to replay to the same sequence).

Client order ids are per account. A live order's id is kept as long as it
rests; a done order's for ``client_id_retention`` from the command that ended
it, and at most ``client_id_capacity`` of them (oldest forgotten first), with
the order's final state, so a retry is answered even after the engine has
forgotten the order. Rejected orders keep no id: a retry is judged again.

The snapshot (``snapshot``/``restore``) stays in this module: it is this
state's persistence, field by field, so a field added to the state and
forgotten in the snapshot is one screen apart, not one module.
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Callable, Mapping
from time import perf_counter_ns
from typing import Any, Protocol

import msgpack

from sprintd import Recorder

from .commands import CANCEL, NEW, REPLACE, TIMED_LENGTH, InvalidOrder
from .config import OrdersSection
from .events import EV_CANCELLED, EV_REJECTED, EV_TRADE, Event, OrderState
from .spec import SymbolSpec

__all__ = [
    "HALTED_RETRY_AFTER_S",
    "Engine",
    "EngineKind",
    "OrderService",
    "Outcome",
    "batch_records",
    "record_commands",
]

_SNAPSHOT_VERSION = 2
# The engine's statuses of an order still in the book.
_LIVE = frozenset({"new", "partially_filled"})
HALTED_RETRY_AFTER_S = 30
"""Retry-After of ``orders_halted``: a halted service stays halted until a
restart, so let clients go elsewhere."""
_BATCH_BYTES = 1 << 20
"""A batch record's commands' bytes at most (``batch_records``): far below the
journal's ``MAX_PAYLOAD``, whatever one read of the order port brings."""


def batch_records(payloads: list[bytes]) -> list[bytes]:
    """Commands' records (``submit``, ``cancel``, ``replace``) as batch records.

    A batch record is a msgpack array of the commands, built from their packed
    bytes with an array header in front (``commands`` module): one journal
    record for a read's orders costs one record's framing and checksum, not
    one per order. Consecutive commands share a record up to ``_BATCH_BYTES``.
    """
    records = []
    start = size = 0
    for end, payload in enumerate(payloads):
        if size and size + len(payload) > _BATCH_BYTES:
            records.append(_batch(payloads[start:end]))
            start, size = end, 0
        size += len(payload)
    records.append(_batch(payloads[start:]))
    return records


def _batch(payloads: list[bytes]) -> bytes:
    n = len(payloads)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(payloads)


def record_commands(payload: bytes) -> list[list[Any]]:
    """The commands of a journaled record, in order: a batch's, or the one."""
    record: list[Any] = msgpack.unpackb(payload, raw=False)
    return record if type(record[0]) is list else [record]


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


class EngineKind(Protocol):
    """An engine as the ``sprintd_order_engines`` hook offers it: made,
    restored, snapshotted and hashed (persistence is the kind's, so an
    engine's hot core carries none of it)."""

    def create(self, symbol: str) -> Engine: ...
    def restore(self, data: bytes) -> Engine: ...
    def snapshot(self, engine: Any) -> bytes: ...
    def state_hash(self, engine: Any) -> str: ...


class Outcome:
    """A command's result: the order as it stands, and the events it caused."""

    __slots__ = ("created", "events", "state")

    def __init__(self, state: OrderState, events: list[Event], created: bool) -> None:
        self.state = state
        self.events = events
        self.created = created


ClientKey = tuple[int, str]
"""(account number, client_order_id)."""


class OrderService:
    """The books and the state around them; applies commands, live and replayed.

    The live path is ``submit``, ``cancel`` and ``replace`` (each refuses
    with an ``InvalidOrder`` and changes nothing, or applies the command and
    returns the record to journal with the ``Outcome``); ``replay`` applies a
    journaled record. ``snapshot`` and ``restore`` are the state's
    checkpoints. Reads (``find``, ``engines``, ``trades``) never change state.

    Args:
        section: the ``[orders]`` settings: symbols, their engines, retention.
        kinds: the engine kinds by name (the ``sprintd_order_engines`` hook's
            values); each symbol's engine is made, restored, snapshotted and
            hashed by the kind its settings name.
        clock: seconds since the epoch (``time.time``); tests pass their own.

    Attributes:
        engines: symbol -> engine.
        specs: symbol -> tick and lot sizes.
        trades: symbol -> the latest ``trades_kept`` trades, oldest first, as
            ``(trade_id, maker, taker, price, qty, taker_side)``.
        dirty: symbols whose books changed since the API last published them.
        changes: commands applied so far (live and replayed): the API's mark
            of how far a published book is current.
        halted: why the service halted (module doc), or None.
        on_halt: called once, with the reason, when the service halts.
        on_events: given each live command's symbol and events once they are
            applied (the execution reports, ``reports``); never on replay.
    """

    def __init__(
        self,
        section: OrdersSection,
        kinds: Mapping[str, EngineKind],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.section = section
        self.specs = {
            symbol: SymbolSpec(symbol, cfg.tick_size, cfg.lot_size)
            for symbol, cfg in section.symbols.items()
        }
        self._kinds = {symbol: kinds[cfg.engine] for symbol, cfg in section.symbols.items()}
        self.engines: dict[str, Engine] = {
            symbol: kind.create(symbol) for symbol, kind in self._kinds.items()
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
        self.halted: str | None = None
        self.on_halt: Callable[[str], None] = lambda reason: None
        self.on_events: Callable[[str, list[Event]], None] | None = None
        self.trades: dict[str, deque[tuple[int, int, int, int, int, int]]] = {
            symbol: deque(maxlen=section.trades_kept) for symbol in self.engines
        }
        self.dirty: set[str] = set()
        #: Live commands applied, and those the engine rejected, by op
        #: (NEW, CANCEL, REPLACE index them), and the engines' time applying
        #: them: for /metrics (``metrics``), never replayed ones.
        self.applied = [0, 0, 0, 0]
        self.rejected = [0, 0, 0, 0]
        self.latency = Recorder("orders_engine")
        self.changes = 0
        # One packer for every record: ``msgpack.packb`` makes one per call,
        # which costs four times the packing. (It empties itself when a
        # value fails, so a refused command leaves nothing behind.)
        self._pack = msgpack.Packer(use_bin_type=True).pack

    # --- reading state -------------------------------------------------------

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

    # --- changing state ----------------------------------------------------

    def check_running(self) -> None:
        """Raises: InvalidOrder: 503 ``orders_halted`` once the service halted."""
        if self.halted is not None:
            raise InvalidOrder(
                "orders_halted",
                f"order entry is halted until a restart: {self.halted}",
                503,
                retry_after=HALTED_RETRY_AFTER_S,
            )

    def live_symbol(self, order_id: Any) -> str:
        """The symbol of a live order that a command may change.

        Raises:
            InvalidOrder: 503 ``orders_halted``, 404 ``unknown_order``, 409
                ``order_done``.
        """
        self.check_running()
        symbol, state = self.find(order_id)
        if state.status not in _LIVE:
            raise InvalidOrder("order_done", f"order {order_id} is {state.status}", 409)
        return symbol

    def submit(self, command: list[Any]) -> tuple[bytes | None, Outcome]:
        """Apply a NEW command (``Parser.new``); the payload to journal (None:
        a retry of a client order id, nothing new happened).

        Raises:
            InvalidOrder: 503 ``orders_halted``; 409 ``duplicate_client_order_id``.
        """
        if self.halted is not None:
            self.check_running()
        client_id = command[11]
        if client_id is not None:
            key = (self.accounts.get(command[9], len(self.accounts)), client_id)
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
        command[1] = order_id = self.next_id
        payload, events = self._commit(command)
        return payload, Outcome(self._state(command[2], order_id), events, True)

    def cancel(self, order_id: Any) -> tuple[bytes, Outcome]:
        """Cancel a live order; the payload to journal.

        Raises:
            InvalidOrder: as ``live_symbol``.
        """
        symbol = self.live_symbol(order_id)
        payload, events = self._commit([CANCEL, order_id, symbol, 0])
        return payload, Outcome(self._state(symbol, order_id), events, False)

    def replace(
        self, order_id: int, symbol: str, price: int | None, qty: int | None
    ) -> tuple[bytes, Outcome]:
        """Replace a live order of ``symbol`` (``live_symbol``, then
        ``Parser.change``, with no await between); the payload to journal.

        Raises:
            InvalidOrder: 503 ``orders_halted``.
        """
        self.check_running()
        payload, events = self._commit([REPLACE, order_id, symbol, price, qty, 0])
        return payload, Outcome(self._state(symbol, order_id), events, False)

    def _state(self, symbol: str, order_id: int) -> OrderState:
        """The state of an order just commanded: its engine knows it (the
        engine keeps the order a command ended), so no other is asked."""
        state = self.engines[symbol].order(order_id)
        assert state is not None, f"{symbol} forgot order {order_id} it was just given"
        return state

    def _commit(self, command: list[Any]) -> tuple[bytes, list[Event]]:
        """Time, encode, then apply a valid command: all of it or nothing.

        Raises:
            InvalidOrder: the record cannot be encoded (nothing changed).
            Exception: whatever applying raised; the service has halted.
        """
        now = int(self._clock() * 1000)
        # A comparison, not max(): a builtin call costs more on this path.
        command[-1] = now if now > self.time_ms else self.time_ms
        try:
            payload: bytes = self._pack(command)
        except (ValueError, TypeError, OverflowError) as exc:
            raise InvalidOrder("invalid_body", f"the order cannot be recorded: {exc}") from None
        began = perf_counter_ns()
        try:
            events = self._apply(command)
        except Exception as exc:
            self.halted = f"applying {command[:3]} raised {type(exc).__name__}: {exc}"
            self.on_halt(self.halted)
            raise
        self.latency.record(perf_counter_ns() - began)
        op = command[0]
        self.applied[op] += 1
        if events and events[-1][0] == EV_REJECTED:
            self.rejected[op] += 1
        if self.on_events is not None:
            self.on_events(command[2], events)
        return payload, events

    def replay(self, payload: bytes) -> None:
        """Apply a journaled record's commands (``record_commands``), as they
        were applied live."""
        apply = self._apply
        for command in record_commands(payload):
            apply(command)

    def replay_command(self, command: list[Any]) -> list[Event]:
        """Apply one of a journaled record's commands; its events (the history
        projector's rows come from them)."""
        return self._apply(command)

    def _apply(self, command: list[Any]) -> list[Event]:
        op, order_id, symbol = command[0], command[1], command[2]
        if len(command) == TIMED_LENGTH[op]:
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
        if self._done_order:
            self._expire()
        self.dirty.add(symbol)
        self.changes += 1
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
        """Forget done orders' client ids past their retention or the capacity
        (``_apply`` calls it only when some are kept)."""
        done = self._done_order
        horizon = self.time_ms - self._retention_ms
        capacity = self.section.client_id_capacity
        while done and (done[0][0] <= horizon or len(done) > capacity):
            del self._done_ids[done.popleft()[1]]

    def state_hash(self) -> str:
        """One digest of every engine's state and the id counter."""
        digest = hashlib.blake2b(digest_size=16)
        digest.update(str(self.next_id).encode())
        for symbol in sorted(self.engines):
            engine_hash = self._kinds[symbol].state_hash(self.engines[symbol])
            digest.update(symbol.encode() + b"=" + engine_hash.encode())
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
                "engines": {s: self._kinds[s].snapshot(e) for s, e in self.engines.items()},
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
            self.engines[symbol] = self._kinds[symbol].restore(blob)
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
