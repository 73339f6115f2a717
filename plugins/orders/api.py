"""The orders HTTP API and the order-entry port's command handler.

Strategy
--------
Both ports read top to bottom in the service's order of work (``service``
module): parse (``commands.Parser``: a bad request changes nothing), apply
(``service.OrderService``), journal, render (``render.Renderer``); and both
republish the changed books' fast-path snapshots after the journal has the
records and before the answer, once per journal batch (``journaled``).
Every refusal is an ``HTTPError`` (``commands.InvalidOrder`` is one) raised
where it is found, with its status, code and Retry-After: the core's
dispatch answers it over HTTP, and ``_command`` maps it to ``["error", code, message]`` on the
order-entry port, the one place either port handles errors. When the
service halts, /readyz turns 503 and every change is refused with
``orders_halted`` (503, with Retry-After over HTTP).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from sprintd import (
    App,
    HTTPError,
    Journal,
    JournalError,
    Request,
    Response,
    Route,
    Snapshot,
    error_reply,
)

from .commands import InvalidOrder, Parser
from .feed import Feed
from .remote import OwnerUnavailable, RemoteOwner, reply_status
from .render import Renderer
from .reports import ReportHub
from .service import OrderService, Outcome, batch_records

__all__ = ["STREAM", "OrdersAPI"]

log = logging.getLogger("sprintd.orders")
STREAM = "orders"
MAX_LIMIT = 1000
# The order-id commands of the order-entry port, by their length without the
# trailing symbol that routes them (README.md, "Symbols on other instances").
_ARITY = {"cancel": 2, "get": 2, "replace": 3}


def _int(text: str | None, name: str, default: int, upper: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 0 < int(text) <= upper:
        raise HTTPError(400, f"invalid_{name}", f"{name} must be an integer from 1 to {upper}")
    return int(text)


def journal_unavailable(message: str, retry_s: float) -> HTTPError:
    """503 ``journal_unavailable``: the command was not applied (or not acknowledged)."""
    return HTTPError(
        503,
        "journal_unavailable",
        f"the journal cannot take commands now: {message}",
        retry_after=retry_s,
    )


def _order_id(request: Request) -> int:
    text = request.params["order_id"]
    if not text.isdigit():
        raise HTTPError(404, "unknown_order", f"no order {text!r}")
    return int(text)


class OrdersAPI:
    """The orders plugin's two ports over one service (module doc).

    ``remote``: the symbols other instances own, and the link to each one's
    owner. With none, the routes and ``entry`` are the local ones as they
    are, so a symbol's owner pays nothing for routing; with some, each
    command is looked up by its symbol first.
    """

    def __init__(
        self,
        app: App,
        service: OrderService,
        journal: Journal,
        remote: Mapping[str, RemoteOwner] | None = None,
    ) -> None:
        self.app = app
        self.service = service
        self.journal = journal
        self.remote = dict(remote or {})
        self.entry: Callable[[list[list[Any]]], Awaitable[list[Any]]] = (
            self._entry_routed if self.remote else self._entry_here
        )
        self.parse = Parser(service.specs)
        self.render = Renderer(service.specs)
        self.books: dict[str, Snapshot] = {}
        # The service's ``changes`` when the books were last published.
        self.published = service.changes
        self.reports = ReportHub(service, service.section.report_ring)
        service.on_halt = self._halted
        server = app.settings.server
        self.feed = Feed(
            service,
            self.render,
            self.books,
            app.snapshots,
            first_message_timeout=server.header_timeout,
            send_timeout=server.body_timeout,
            max_pending=service.section.feed_max_pending,
        )

    def _halted(self, reason: str) -> None:
        log.critical("orders: halted, changes refused until a restart: %s", reason)
        self.app.set_unready("orders_halted", reason)

    # --- shared by both ports ----------------------------------------------

    def book_body(self, symbol: str, depth: int) -> bytes:
        engine = self.service.engines[symbol]
        bids, asks = engine.depth(depth)
        return json.dumps(self.render.book(symbol, engine.sequence, bids, asks)).encode()

    def _new(self, body: Any) -> tuple[bytes | None, Outcome]:
        """Parse a new order, then enter it."""
        return self.service.submit(self.parse.new(body))

    def _replace(self, order_id: Any, body: Any) -> tuple[bytes, Outcome]:
        """Replace an order: it must be live (503, 404, 409) before its body
        is judged (400), as clients have always been answered."""
        symbol = self.service.live_symbol(order_id)
        price, qty = self.parse.change(symbol, body)
        return self.service.replace(order_id, symbol, price, qty)

    def publish(self) -> None:
        """Republish the snapshots of the books that changed (never once the
        service halted: a book may hold what the journal does not)."""
        service = self.service
        if service.halted is not None:
            return
        depth = service.section.book_depth
        for symbol in service.dirty:
            self.books[symbol].publish(self.book_body(symbol, depth))
            self.feed.changed(symbol)
        service.dirty.clear()
        self.published = service.changes

    def writable(self) -> None:
        """Refuse a write before anything is applied while the journal cannot take it."""
        if self.journal.unavailable is not None:
            raise journal_unavailable(self.journal.unavailable, self.journal.probe_interval)

    def refuse(self, batch: list[list[Any]]) -> list[Any]:
        """The order port's replies while the journal is unavailable: reads answered,
        every other command refused unapplied."""
        refused = error_reply("journal_unavailable", str(self.journal.unavailable))
        return [
            [
                self._command(command, [])
                if isinstance(command, list) and command[:1] == ["get"]
                else refused
                for command in frame
            ]
            for frame in batch
        ]

    async def journaled(self, payloads: list[bytes]) -> None:
        """Make the commands just applied durable, then the books' snapshots
        at least as current as they are: an answer never leaves before the
        book it changed shows it, on any connection.

        The books are rendered by the first answer that finds them older
        than its commands: the journal wakes a whole batch's answers at
        once, and the first publishes every command applied by then, so the
        rest (and later ones already applied) publish nothing, and a busy
        book is rendered once per batch, not once per order.

        Checkpoints are the journal's (``register`` in the plugin). A failed
        journal answers 503: the commands were applied but are not durable,
        so they are not acknowledged (and readiness fails with the reason).
        """
        applied = self.service.changes
        if payloads:
            # The fills reported once these records are durable: those of the
            # commands applied so far, whose records precede or are these.
            durable = self.reports.mark()
            try:
                if len(payloads) == 1:
                    await self.journal.append(STREAM, payloads[0])
                else:
                    await self.journal.append_many(STREAM, batch_records(payloads))
            except JournalError as exc:
                self.reports.drop(durable)
                raise journal_unavailable(str(exc), self.journal.probe_interval) from None
            self.reports.flush(durable)
        if self.published < applied:
            self.publish()

    # --- HTTP ------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        # With [auth] enabled: reads need a key with "read", changes "trade".
        routed = bool(self.remote)
        return [
            Route("POST", "/v1/orders", self.post_order, scope="trade"),
            Route(
                "GET",
                "/v1/orders/{order_id}",
                self.get_order_routed if routed else self.get_order,
                scope="read",
            ),
            Route(
                "DELETE",
                "/v1/orders/{order_id}",
                self.delete_order_routed if routed else self.delete_order,
                scope="trade",
            ),
            Route(
                "PATCH",
                "/v1/orders/{order_id}",
                self.patch_order_routed if routed else self.patch_order,
                scope="trade",
            ),
            Route("GET", "/v1/book/{symbol}", self.get_book, scope="read"),
            Route("GET", "/v1/trades/{symbol}", self.get_trades, scope="read"),
            Route("GET", "/v1/ws", self.feed.upgrade, scope="read"),
        ]

    def _answer(self, request: Request, outcome: Outcome, status: int) -> Response:
        self.feed.answered(request.key, outcome)
        if request.wants_msgpack():
            return Response.data(
                self.render.order(outcome.state, outcome.events), status, msgpack_=True
            )
        return Response(status, self.render.order_json(outcome.state, outcome.events))

    async def post_order(self, request: Request) -> Response:
        body = request.data()
        if self.remote:
            symbol = body.get("symbol") if type(body) is dict else None
            if type(symbol) is str and symbol in self.remote:
                return await self._forward(request, self.remote[symbol], ["new", body, True])
        self.writable()
        payload, outcome = self._new(body)
        await self.journaled([] if payload is None else [payload])
        return self._answer(request, outcome, 201 if outcome.created else 200)

    def get_order(self, request: Request) -> Response:
        _, state = self.service.find(_order_id(request))
        if request.wants_msgpack():
            return Response.data(self.render.order(state), msgpack_=True)
        return Response(200, self.render.order_json(state))

    async def delete_order(self, request: Request) -> Response:
        self.writable()
        payload, outcome = self.service.cancel(_order_id(request))
        await self.journaled([payload])
        return self._answer(request, outcome, 200)

    async def patch_order(self, request: Request) -> Response:
        self.writable()
        payload, outcome = self._replace(_order_id(request), request.data())
        await self.journaled([payload])
        return self._answer(request, outcome, 200)

    def _symbol(self, request: Request) -> str:
        symbol = request.params["symbol"]
        if symbol not in self.service.engines:
            link = self.remote.get(symbol)
            if link is not None:
                raise HTTPError(
                    404,
                    "remote_symbol",
                    f"{symbol} is traded by another instance (order entry at {link.owner}): "
                    "read it there",
                )
            raise HTTPError(404, "unknown_symbol", f"no symbol {symbol!r}")
        return symbol

    # --- symbols other instances own (remote.py) --------------------------------

    def _link(self, request: Request) -> RemoteOwner | None:
        """The owner an order-id request names with ``?symbol=``, if another instance."""
        if not request.query:
            return None
        symbol = request.query_params().get("symbol")
        return None if symbol is None else self.remote.get(symbol)

    async def _forward(self, request: Request, link: RemoteOwner, command: list[Any]) -> Response:
        """The owner's answer to one command, as its own HTTP API gives it."""
        [reply] = await link.request([command])
        if reply[0] != "ok":
            status, retry_after = reply_status(reply[1])
            raise HTTPError(status, reply[1], reply[2], retry_after=retry_after)
        # A new order carries whether the owner entered it (201) or found it
        # by its client_order_id (200).
        status = 201 if len(reply) == 3 and reply[2] else 200
        return Response.data(reply[1], status, msgpack_=request.wants_msgpack())

    def _order_command(self, request: Request, op: str) -> list[Any]:
        text = request.params["order_id"]
        return [op, int(text) if text.isdigit() else text]

    async def get_order_routed(self, request: Request) -> Response:
        link = self._link(request)
        if link is None:
            return self.get_order(request)
        return await self._forward(request, link, self._order_command(request, "get"))

    async def delete_order_routed(self, request: Request) -> Response:
        link = self._link(request)
        if link is None:
            return await self.delete_order(request)
        return await self._forward(request, link, self._order_command(request, "cancel"))

    async def patch_order_routed(self, request: Request) -> Response:
        link = self._link(request)
        if link is None:
            return await self.patch_order(request)
        return await self._forward(
            request, link, [*self._order_command(request, "replace"), request.data()]
        )

    def _route(self, command: Any) -> tuple[RemoteOwner, list[Any]] | None:
        """The owner of an order-entry command for another instance's symbol,
        and the command as it is sent there; None for this instance's."""
        if type(command) is not list or len(command) < 2:
            return None
        op = command[0]
        if op == "new" and len(command) == 2:
            body = command[1]
            symbol = body.get("symbol") if type(body) is dict else None
            if type(symbol) is str and symbol in self.remote:
                # As a forwarded new: never forwarded again (one hop at most).
                return self.remote[symbol], ["new", body, True]
        elif op in _ARITY and len(command) == _ARITY[op] + 1:
            symbol = command[-1]
            if type(symbol) is str and symbol in self.remote:
                return self.remote[symbol], command[:-1]
        return None

    async def _entry_routed(self, batch: list[list[Any]]) -> list[Any]:
        """``entry`` with remote symbols: each owner's commands of the batch go
        out in one frame before this instance's are applied and journaled
        (``_entry_here``); the replies are put back in each frame's order."""
        here: list[list[Any]] = []
        places: list[list[int]] = []  # per frame, where its local replies go
        forwards: dict[RemoteOwner, list[tuple[int, int, list[Any]]]] = {}
        for f, frame in enumerate(batch):
            local, at = [], []
            for c, command in enumerate(frame):
                routed = self._route(command)
                if routed is None:
                    local.append(command)
                    at.append(c)
                else:
                    forwards.setdefault(routed[0], []).append((f, c, routed[1]))
            here.append(local)
            places.append(at)
        out: list[list[Any]] = [[None] * len(frame) for frame in batch]
        sent = []
        for link, items in forwards.items():
            try:
                sent.append((link, link.send([item[2] for item in items]), items))
            except OwnerUnavailable as exc:
                for f, c, _ in items:
                    out[f][c] = error_reply(exc.code, exc.message)
        for f, replies in enumerate(await self._entry_here(here)):
            for c, reply in zip(places[f], replies, strict=True):
                out[f][c] = reply
        for link, waiting, items in sent:
            try:
                answers = await link.wait(waiting, len(items))
            except OwnerUnavailable as exc:
                answers = [error_reply(exc.code, exc.message)] * len(items)
            for (f, c, _), answer in zip(items, answers, strict=False):
                # Without a forwarded new's "created": not in this protocol's reply.
                out[f][c] = answer[:2] if answer[0] == "ok" else answer
        return out

    def get_book(self, request: Request) -> Response:
        symbol = self._symbol(request)
        depth = _int(
            request.query_params().get("depth"), "depth", self.service.section.book_depth, 10_000
        )
        return Response(200, self.book_body(symbol, depth))

    def get_trades(self, request: Request) -> Response:
        symbol = self._symbol(request)
        limit = _int(request.query_params().get("limit"), "limit", 100, MAX_LIMIT)
        trades = list(self.service.trades[symbol])[-limit:]
        trades.reverse()
        body = [self.render.trade(symbol, t) for t in trades]
        return Response.data({"symbol": symbol, "trades": body}, msgpack_=request.wants_msgpack())

    # --- the order-entry port ----------------------------------------------------

    async def _entry_here(self, batch: list[list[Any]]) -> list[Any]:
        """``entry`` for this instance's own symbols: answer a batch of frames
        (README.md, "The binary order-entry port"), each a list of commands,
        by a list of replies in the same order."""
        if self.journal.unavailable is not None:
            return self.refuse(batch)
        payloads: list[bytes] = []
        replies = [[self._command(command, payloads) for command in frame] for frame in batch]
        await self.journaled(payloads)
        return replies

    def _command(self, command: Any, payloads: list[bytes]) -> list[Any]:
        service = self.service
        try:
            if not isinstance(command, list) or not command:
                raise InvalidOrder("bad_command", "a command is a non-empty array")
            op = command[0]
            if op == "new" and len(command) == 2:
                payload, outcome = self._new(command[1])
            elif op == "cancel" and len(command) == 2:
                payload, outcome = service.cancel(command[1])
            elif op == "replace" and len(command) == 3:
                payload, outcome = self._replace(command[1], command[2])
            elif op == "get" and len(command) == 2:
                return ["ok", self.render.order(service.find(command[1])[1])]
            elif op == "new" and len(command) == 3 and command[2] is True:
                # A forwarding instance's new (remote.py): the reply says
                # whether the order was entered, for its 201 or 200. Never
                # routed on (``_route``): a symbol this instance does not
                # trade is unknown_symbol, not a second hop.
                payload, outcome = self._new(command[1])
                if payload is not None:
                    payloads.append(payload)
                return ["ok", self.render.order(outcome.state, outcome.events), outcome.created]
            elif (
                op in _ARITY
                and len(command) == _ARITY[op] + 1
                and type(command[-1]) is str
                and command[-1] in service.engines
            ):
                # A trailing symbol routes the command; here it is this
                # instance's, and the order id alone says which order.
                return self._command(command[:-1], payloads)
            else:
                raise InvalidOrder("bad_command", f"unknown command {op!r} of {len(command)}")
        except HTTPError as exc:
            return error_reply(exc.code, exc.message)
        except Exception:
            # A bug; if it struck while applying, the service has halted. The
            # frame's earlier commands are journaled and answered as usual.
            log.exception("orders: command %r failed", command)
            return error_reply("internal_error", "the command failed; see the daemon's log")
        if payload is not None:
            payloads.append(payload)
        return ["ok", self.render.order(outcome.state, outcome.events)]
