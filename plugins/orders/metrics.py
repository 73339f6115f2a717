"""The orders plugin's families on GET /metrics, read at scrape time.

Everything here reads counts the service and its engines keep anyway (or
keep for this: the service's ``applied``, ``rejected`` and ``latency``, a
list index and a recorder per live command); nothing is counted per request
on the metrics' behalf. Engines that are not the built-in price-time kind
may lack ``trade_seq`` or ``open_orders``: their symbols are left out of
those two families rather than shown as 0.
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

from .commands import CANCEL, NEW, REPLACE
from .service import OrderService

__all__ = ["OrdersCollector"]

KINDS = ((NEW, "new"), (CANCEL, "cancel"), (REPLACE, "replace"))


class OrdersCollector:
    """Commands, trades, resting orders and engine latency of one service."""

    def __init__(self, service: OrderService, worker: int) -> None:
        self.service = service
        self.worker = str(worker)

    def collect(self) -> Iterator[Metric]:
        service, worker = self.service, self.worker
        commands = CounterMetricFamily(
            "sprintd_orders_commands",
            "Commands applied to the books since start, by kind (new, cancel, replace) "
            "and outcome (accepted, or rejected by the engine). Requests refused before "
            "reaching a book (4xx) are in sprintd_request_errors_total.",
            labels=["kind", "outcome", "worker"],
        )
        for op, kind in KINDS:
            rejected = service.rejected[op]
            commands.add_metric([kind, "accepted", worker], service.applied[op] - rejected)
            commands.add_metric([kind, "rejected", worker], rejected)
        yield commands

        trades = CounterMetricFamily(
            "sprintd_orders_trades",
            "Trades per symbol (the engine's trade ids: counted since the journal began).",
            labels=["symbol", "worker"],
        )
        resting = GaugeMetricFamily(
            "sprintd_orders_resting_orders",
            "Orders resting in each symbol's book.",
            labels=["symbol", "worker"],
        )
        for symbol, engine in service.engines.items():
            trade_seq = getattr(engine, "trade_seq", None)
            if trade_seq is not None:
                trades.add_metric([symbol, worker], trade_seq)
            open_orders = getattr(engine, "open_orders", None)
            if open_orders is not None:
                resting.add_metric([symbol, worker], open_orders)
        yield trades
        yield resting

        latency = HistogramMetricFamily(
            "sprintd_orders_engine_duration_seconds",
            "Time to apply one live command to the books (matching included), "
            "before its journal append.",
            labels=["worker"],
        )
        add_histogram(latency, [worker], service.latency)
        yield latency
        halted = GaugeMetricFamily(
            "sprintd_orders_halted",
            "1 once order entry has halted (a command failed while applied), until a restart.",
            labels=["worker"],
        )
        halted.add_metric([worker], 0.0 if service.halted is None else 1.0)
        yield halted
