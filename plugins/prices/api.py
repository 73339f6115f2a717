"""The prices HTTP API and the feed port's frame handler.

Both hand decoded updates to the engine with the time their bytes were read
(``Request.received_ns`` on HTTP, the read's time on the feed), so the
engine's figures run from the wire to the published snapshot. The route's
work is ``post_prices``, a function of an engine and a request, so the
performance test runs exactly it on a scratch engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter_ns
from typing import Any

from sprintd import HTTPError, Recorder, Request, Response, Route, SnapshotTable

from . import perftest
from .config import PricesSection
from .engine import PriceEngine, Register
from .updates import InvalidUpdate

__all__ = ["DEFAULT_TEST_UPDATES", "PricesAPI", "make_engine", "post_prices"]

DEFAULT_TEST_UPDATES = 10_000


def make_engine(section: PricesSection, register: Register) -> PriceEngine:
    return PriceEngine(
        register,
        max_symbols=section.max_symbols,
        max_batch=section.max_batch,
        allowed=frozenset(section.symbols) if section.symbols else None,
    )


def post_prices(engine: PriceEngine, request: Request) -> Response:
    """``POST /v1/prices``: one update or a list, applied and published, or a 4xx."""
    received = request.received_ns or perf_counter_ns()
    try:
        data = request.data()
    except HTTPError:
        engine.reject()
        raise
    try:
        applied, sequence = engine.ingest(data, received)
    except InvalidUpdate as exc:
        raise HTTPError(400, exc.code, exc.message) from None
    if request.wants_msgpack():
        return Response.data({"applied": applied, "sequence": sequence}, msgpack_=True)
    return Response(200, b'{"applied":%d,"sequence":%d}' % (applied, sequence))


class PricesAPI:
    """The prices HTTP routes: post updates, read a symbol, the engine's metrics,
    reset and performance test."""

    def __init__(self, section: PricesSection, engine: PriceEngine) -> None:
        self.section = section
        self.engine = engine
        self.testing = False

    def routes(self) -> Sequence[Route]:
        return [
            # Setting prices is a trading key's job: "admin" would write an
            # audit line per update.
            Route("POST", "/v1/prices", self.post_prices, scope="trade"),
            # Known symbols are fast-path snapshots; this answers the others
            # (404), and a GET with a query string, which the snapshot leaves
            # to the route.
            Route("GET", "/v1/prices/{symbol}", self.get_price, name="/v1/prices/{symbol}"),
            Route("GET", "/v1/price-engine/metrics", self.get_metrics),
            Route(
                "POST", "/v1/price-engine/performance-test", self.performance_test, scope="admin"
            ),
            Route("POST", "/v1/price-engine/reset", self.reset, scope="admin"),
        ]

    # --- HTTP --------------------------------------------------------------------

    def post_prices(self, request: Request) -> Response:
        return post_prices(self.engine, request)

    def get_price(self, request: Request) -> Response:
        symbol = request.params["symbol"]
        quote = self.engine.quotes.get(symbol)
        if quote is None:
            raise HTTPError(404, "unknown_symbol", f"no price for {symbol[:40]!r} yet")
        return Response(200, quote.snapshot.body)

    def get_metrics(self, request: Request) -> Response:
        figures = self.engine.figures()
        figures["history"] = list(self.engine.history)
        return Response.data(figures, msgpack_=request.wants_msgpack())

    def reset(self, request: Request) -> Response:
        self.engine.reset()
        return Response.data(self.engine.figures(), msgpack_=request.wants_msgpack())

    async def performance_test(self, request: Request) -> Response:
        count = self._test_size(request.data() if request.body else {})
        if self.testing:
            raise HTTPError(409, "test_running", "a performance test is running; try again")
        self.testing = True
        try:
            table = SnapshotTable()
            reads = Recorder("performance-test")
            scratch = make_engine(
                self.section, lambda path, body: table.register(path, body, reads)
            )
            figures = await perftest.run(count, scratch, post_prices)
        finally:
            self.testing = False
        return Response.data(figures, msgpack_=request.wants_msgpack())

    def _test_size(self, data: Any) -> int:
        if type(data) is not dict:
            raise HTTPError(400, "invalid_body", 'send {"num_updates": N}')
        unknown = sorted(str(k) for k in data if k != "num_updates")
        if unknown:
            raise HTTPError(400, "unknown_field", f"unknown field {unknown[0]!r}")
        count = data.get("num_updates", DEFAULT_TEST_UPDATES)
        upper = self.section.max_test_updates
        if type(count) is not int or not 1 <= count <= upper:
            raise HTTPError(
                400,
                "invalid_num_updates",
                f"num_updates must be an integer from 1 to {upper} (prices.max_test_updates), "
                f"not {count!r:.40}",
            )
        return count

    # --- the feed port -------------------------------------------------------------

    async def feed(self, batch: list[list[Any]], received_ns: int) -> list[Any]:
        """Answer one read's frames (README.md): each frame is a list of updates,
        applied whole or refused whole, answered ``["ok", applied, sequence]`` or
        ``["error", code, message]``; all of them are published together."""
        engine = self.engine
        replies: list[Any] = []
        for frame in batch:
            try:
                applied = engine.submit(frame)
            except InvalidUpdate as exc:
                replies.append(["error", exc.code, exc.message])
            else:
                replies.append(["ok", applied, engine.sequence])
        engine.publish(received_ns)
        return replies
