"""The prices plugin's families on GET /metrics, read at scrape time.

They are the engine's own counters and recorder, the ones
``/v1/price-engine/metrics`` reports: nothing more is counted per update.
``POST /v1/price-engine/reset`` zeroes them, which Prometheus reads as a
counter reset (``rate()`` and ``increase()`` take it in their stride).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from sprintd import add_histogram

from .engine import PriceEngine

__all__ = ["PricesCollector"]


class PricesCollector:
    """Updates, errors, latency and symbols of one price engine."""

    def __init__(self, engine: PriceEngine, worker: int) -> None:
        self.engine = engine
        self.worker = str(worker)

    def collect(self) -> Iterator[Metric]:
        engine, w = self.engine, [self.worker]
        for name, doc, count in (
            (
                "sprintd_prices_updates_received",
                "Price updates received (HTTP and feed), valid or not.",
                engine.received,
            ),
            (
                "sprintd_prices_updates",
                "Price updates applied and published.",
                engine.processed,
            ),
            (
                "sprintd_prices_update_errors",
                "Price updates refused (the whole batch of a bad one).",
                engine.errors,
            ),
        ):
            counter = CounterMetricFamily(name, doc, labels=["worker"])
            counter.add_metric(w, count)
            yield counter
        latency = HistogramMetricFamily(
            "sprintd_prices_update_duration_seconds",
            "Per update, from the read of its bytes to its published snapshot.",
            labels=["worker"],
        )
        add_histogram(latency, w, engine.recorder)
        yield latency
        symbols = GaugeMetricFamily(
            "sprintd_prices_symbols", "Symbols with a price.", labels=["worker"]
        )
        symbols.add_metric(w, len(engine.quotes))
        yield symbols
