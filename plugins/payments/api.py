"""The payments HTTP API: the Rinha de Backend 2025 routes.

``POST /payments`` is the hot path and does only this: decode and validate
the body, choose its first processor, have the store keep it committed
there (the journal's append, or one Redis round trip), queue it for the
dispatcher and answer 202. A duplicate
correlationId with the same amount gets 200 and is not queued again; with
another amount, 409. The processors are never called while a client waits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from sprintd import HTTPError, Request, Response, Route

from .contract import parse_bound, parse_payment, summary_body
from .dispatcher import Dispatcher
from .store import Accepted, Store, StoreError

__all__ = ["PaymentsAPI"]

# Answers that never change, built once.
_ACCEPTED = Response(202, b'{"status":"accepted"}')
_DUPLICATE = Response(200, b'{"status":"duplicate"}')
_PURGED = Response(200, b'{"status":"purged"}')


def _unavailable(exc: StoreError) -> HTTPError:
    message = f"the payment store cannot take it now: {exc}"
    return HTTPError(503, exc.code, message, retry_after=exc.retry_after)


class PaymentsAPI:
    """The payments HTTP routes: accept a payment, summarize, purge."""

    # Method, path, and the scope a key needs with [auth] on: paying is a
    # trading key's, purging an admin's.
    PATHS: tuple[tuple[str, str, Literal["read", "trade", "admin"]], ...] = (
        ("POST", "/payments", "trade"),
        ("GET", "/payments-summary", "read"),
        ("POST", "/purge-payments", "admin"),
    )

    def __init__(self, store: Store, dispatcher: Dispatcher) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.accepted = 0  # 202s, for /metrics

    def routes(self) -> Sequence[Route]:
        handlers = (self.post_payment, self.get_summary, self.purge)
        return [
            Route(method, path, handler, scope=scope)
            for (method, path, scope), handler in zip(self.PATHS, handlers, strict=True)
        ]

    async def post_payment(self, request: Request) -> Response:
        cid, amount = parse_payment(request.data())
        try:
            outcome, payment = await self.store.accept(cid, amount, *self.dispatcher.route())
        except StoreError as exc:
            raise _unavailable(exc) from None
        if payment is not None:
            self.dispatcher.submit(payment)
            self.accepted += 1
            return _ACCEPTED
        if outcome is Accepted.SAME:
            return _DUPLICATE
        raise HTTPError(
            409, "duplicate_correlation_id", f"{cid} was accepted before with another amount"
        )

    async def get_summary(self, request: Request) -> Response:
        query = request.query_params()
        low = parse_bound(query.get("from"), "from")
        high = parse_bound(query.get("to"), "to")
        if low is not None and high is not None and low > high:
            raise HTTPError(400, "invalid_range", "from is after to")
        try:
            totals = await self.store.summary(low, high)
        except StoreError as exc:
            raise _unavailable(exc) from None
        return Response(200, summary_body(totals))

    async def purge(self, request: Request) -> Response:
        try:
            await self.store.purge()
        except StoreError as exc:
            raise _unavailable(exc) from None
        return _PURGED
