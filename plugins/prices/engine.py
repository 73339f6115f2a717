"""The price engine: the price map, its snapshots, and its own latency figures.

Order of work, for a request or for one read of the feed: every update is
checked (``updates.parse_batch``, then the symbol limits here) before any is
applied; the updates are applied to the map in arrival order, each taking the
next sequence number; then each symbol that changed is republished once, and
``/v1/prices`` once, as fast-path snapshots; then every update applied is
timed, from ``received_ns`` (when the server read its bytes) to that moment,
into the engine's recorder (the core's ``latency.Recorder``: a ring of the
last 10,000 samples, from which the figures are exact, beside an all-time
histogram). Nothing awaits between applying and publishing, so a reader sees
an update either nowhere or everywhere, and a GET after a POST's answer sees
what the POST applied.

Prices are not journaled: a feed sends them again, and a restart starts with
an empty map.

The engine's samples are kept apart from the routes' recorders, so its
figures (per update, from the wire to the snapshot) and the routes' (per
request, from the wire to the response sent) do not blur.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

from sprintd import RING_SIZE, Recorder, Snapshot, Summary, summarize

from .updates import InvalidUpdate, Number, Update, decimal_text, parse_batch

__all__ = [
    "HISTORY_POINTS",
    "SLA_P95_US",
    "PriceEngine",
    "Register",
]

# The promise of the seed's price engine: p95 under 1 ms from wire to snapshot.
SLA_P95_US = 1000.0
# One point a second: five minutes of history for the dashboard's chart.
HISTORY_POINTS = 300
ALL_PATH = "/v1/prices"

# Makes the snapshot at a path with a first body: app.snapshots.register, or
# a private table for the performance test.
Register = Callable[[str, bytes], Snapshot]


class Quote:
    """The last update of one symbol, and where it is published."""

    __slots__ = (
        "change_24h",
        "dirty",
        "index",
        "key",
        "price",
        "sequence",
        "snapshot",
        "symbol",
        "timestamp_ms",
        "volume",
    )

    def __init__(self, symbol: str, index: int, snapshot: Snapshot) -> None:
        self.symbol = symbol
        self.index = index
        # The symbol's member in the /v1/prices object, before its body.
        self.key = f'"{symbol}":'.encode("ascii")
        self.snapshot = snapshot
        self.price: Number = ""
        self.volume: Number | None = None
        self.timestamp_ms = 0
        self.change_24h: Number | None = None
        self.sequence = 0
        self.dirty = False

    def encode(self) -> bytes:
        # Formatted by hand, not json.dumps: every value was checked to be a
        # symbol or a number, none needs escaping, and this runs per symbol
        # per batch.
        volume = "null" if self.volume is None else f'"{decimal_text(self.volume)}"'
        change = "null" if self.change_24h is None else f'"{decimal_text(self.change_24h)}"'
        return (
            f'{{"symbol":"{self.symbol}","price":"{decimal_text(self.price)}",'
            f'"volume":{volume},'
            f'"timestamp_ms":{self.timestamp_ms},"change_24h":{change},'
            f'"sequence":{self.sequence}}}'
        ).encode("ascii")


class PriceEngine:
    """The price map of one worker and its counters; see the module's docstring."""

    def __init__(
        self,
        register: Register,
        *,
        max_symbols: int,
        max_batch: int,
        allowed: frozenset[str] | None = None,
    ) -> None:
        self.register = register
        self.max_symbols = max_symbols
        self.max_batch = max_batch
        self.allowed = allowed
        self.quotes: dict[str, Quote] = {}
        self.recorder = Recorder("price_engine")
        self.sequence = 0
        self.received = 0
        self.processed = 0
        self.errors = 0
        # Applied, not yet published and timed.
        self.pending = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_POINTS)
        self.started_s = time.time()
        self.reset_ns = perf_counter_ns()
        self._ticked = 0
        self._dirty: list[Quote] = []
        # The /v1/prices body in parts joined once per publish: the opening
        # (with the count), each symbol's member with commas between, the close.
        self._parts: list[bytes] = [b'{"count":0,"prices":{', b"}}"]
        self._all = register(ALL_PATH, b"".join(self._parts))

    # --- updates ---------------------------------------------------------------

    def ingest(self, data: Any, received_ns: int) -> tuple[int, int]:
        """Check, apply and publish one decoded batch; (updates applied, last sequence).

        Raises:
            InvalidUpdate: nothing was applied; the reason.
        """
        applied = self.submit(data)
        self.publish(received_ns)
        return applied, self.sequence

    def submit(self, data: Any) -> int:
        """Check and apply one batch, unpublished (``publish`` follows); how many.

        Raises:
            InvalidUpdate: nothing was applied; the reason.
        """
        try:
            updates = parse_batch(data, time.time_ns() // 1_000_000, self.max_batch, self.quotes)
            self._admit(updates)
        except InvalidUpdate:
            # Every update of the batch is refused with it.
            count = len(data) if type(data) is list and data else 1
            self.received += count
            self.errors += count
            raise
        self.received += len(updates)
        self._apply(updates)
        return len(updates)

    def reject(self, count: int = 1) -> None:
        """Count updates refused before they could be read (a body that does not decode)."""
        self.received += count
        self.errors += count

    def _admit(self, updates: list[Update]) -> None:
        """Refuse the batch if a new symbol is not allowed or would pass the limit."""
        quotes = self.quotes
        new: set[str] | None = None
        for update in updates:
            symbol = update[0]
            if symbol in quotes:
                continue
            if self.allowed is not None and symbol not in self.allowed:
                raise InvalidUpdate("unknown_symbol", f"symbol {symbol!r} is not in prices.symbols")
            if new is None:
                new = set()
            new.add(symbol)
        if new is not None and len(quotes) + len(new) > self.max_symbols:
            raise InvalidUpdate(
                "symbol_limit",
                f"{len(new)} new symbols would pass prices.max_symbols = {self.max_symbols}",
            )

    def _apply(self, updates: list[Update]) -> None:
        quotes = self.quotes
        dirty = self._dirty
        sequence = self.sequence
        for symbol, price, volume, timestamp_ms, change in updates:
            quote = quotes.get(symbol)
            if quote is None:
                quote = self._add(symbol)
            quote.price = price
            if volume is not None:
                quote.volume = volume
            quote.timestamp_ms = timestamp_ms
            if change is not None:
                quote.change_24h = change
            sequence += 1
            quote.sequence = sequence
            if not quote.dirty:
                quote.dirty = True
                dirty.append(quote)
        self.sequence = sequence
        self.pending += len(updates)

    def _add(self, symbol: str) -> Quote:
        parts = self._parts
        if self.quotes:
            parts.insert(-1, b",")
        # Its member is filled in by the publish that follows, before any read.
        parts.insert(-1, b"")
        quote = Quote(symbol, len(parts) - 2, self.register(f"{ALL_PATH}/{symbol}", b"{}"))
        self.quotes[symbol] = quote
        parts[0] = b'{"count":%d,"prices":{' % len(self.quotes)
        return quote

    def publish(self, received_ns: int) -> None:
        """Republish what changed, then time every update applied since the last publish."""
        pending = self.pending
        if not pending:
            return
        parts = self._parts
        for quote in self._dirty:
            quote.dirty = False
            body = quote.encode()
            parts[quote.index] = quote.key + body
            quote.snapshot.publish(body)
        self._dirty.clear()
        self._all.publish(b"".join(parts))
        self.pending = 0
        self.processed += pending
        self.recorder.record_many(perf_counter_ns() - received_ns, pending)

    # --- figures -----------------------------------------------------------------

    def figures(self) -> dict[str, Any]:
        """The engine's figures (GET /v1/price-engine/metrics), latencies in microseconds."""
        elapsed_s = (perf_counter_ns() - self.reset_ns) / 1e9
        return {
            "latency": latency_us(self.recorder.recent_summary()),
            "throughput": round(self.processed / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            "messages_received": self.received,
            "messages_processed": self.processed,
            "errors": self.errors,
            "error_rate": round(self.errors / self.received, 6) if self.received else 0.0,
            "uptime_ms": int((time.time() - self.started_s) * 1000),
            "symbols": len(self.quotes),
            "sla_p95_us": SLA_P95_US,
        }

    def tick(self, now_ms: int) -> dict[str, Any]:
        """Close one second of history: the updates timed since the last tick.

        At more than ``RING_SIZE`` updates a second, the percentiles are those
        of the last ``RING_SIZE``; ``updates`` counts them all.
        """
        count = self.recorder.count
        fresh = count - self._ticked
        self._ticked = count
        window = summarize(self.recorder.recent()[-min(fresh, RING_SIZE) :] if fresh else [])
        figures = latency_us(window)
        point = {
            "t": now_ms,
            "updates": fresh,
            "p50": figures["p50"] if fresh else None,
            "p95": figures["p95"] if fresh else None,
            "p99": figures["p99"] if fresh else None,
        }
        self.history.append(point)
        return point

    def reset(self) -> None:
        """Clear the figures (not the prices): counters, samples and history."""
        self.received = self.processed = self.errors = 0
        self.recorder.reset()
        self.history.clear()
        self._ticked = 0
        self.reset_ns = perf_counter_ns()


def latency_us(summary: Summary) -> dict[str, float | int]:
    """A recorder's summary in the metrics' shape: microseconds, three decimals."""
    return {
        "p50": round(summary.p50 / 1e3, 3),
        "p95": round(summary.p95 / 1e3, 3),
        "p99": round(summary.p99 / 1e3, 3),
        "mean": round(summary.mean / 1e3, 3),
        "min": round(summary.min / 1e3, 3),
        "max": round(summary.max / 1e3, 3),
        "sample_count": summary.count,
    }
