"""The prices plugin: the price engine, its HTTP API and snapshots, and the feed port.

The engine is built in ``sprintd_configure``: it registers the ``/v1/prices``
snapshot at once and one ``/v1/prices/{symbol}`` snapshot per symbol as it
first sees it, all counted under one route name so /v1/stats stays one row
however many symbols there are. A background task closes one second of the
engine's history a second, for the dashboard's chart.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from sprintd import (
    App,
    BackgroundTask,
    CheckStatus,
    HealthCheck,
    Listener,
    PluginSection,
    Route,
    Snapshot,
    hookimpl,
    timed_framed_listener,
)

from .api import PricesAPI, make_engine
from .config import FEED_PORT_OFFSET, PricesSection
from .engine import SLA_P95_US
from .metrics import PricesCollector

__all__ = ["HISTORY_INTERVAL_S", "PricesPlugin"]

HISTORY_INTERVAL_S = 1.0
# /health warns when the engine's p95 breaks its promise over at least this
# many recent updates: fewer say more about one slow moment than the engine.
WARN_MIN_SAMPLES = 100


class PricesPlugin:
    """The prices plugin's hooks: settings, the engine and its routes, the feed
    port, the ``/health`` check and background tasks."""

    def __init__(self) -> None:
        self.api: PricesAPI | None = None

    def _api(self) -> PricesAPI:
        if self.api is None:
            raise RuntimeError("the prices plugin is not configured")
        return self.api

    @hookimpl
    def sprintd_settings_sections(self) -> Mapping[str, type[PluginSection]]:
        return {"prices": PricesSection}

    @hookimpl
    def sprintd_configure(self, app: App) -> None:
        section = app.settings.section("prices", PricesSection)
        snapshots = app.snapshots
        all_reads = app.recorder("/v1/prices")
        symbol_reads = app.recorder("/v1/prices/{symbol}")

        def register(path: str, body: bytes) -> Snapshot:
            reads = all_reads if path == "/v1/prices" else symbol_reads
            return snapshots.register(path, body, reads)

        self.api = PricesAPI(section, make_engine(section, register))

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        return self._api().routes()

    @hookimpl
    def sprintd_listeners(self, app: App) -> Sequence[Listener]:
        api = self._api()
        section = api.section
        return [
            Listener(
                "prices-feed",
                section.feed_host,
                app.settings.server.plugin_port(
                    section.feed_port, FEED_PORT_OFFSET, "prices.feed_port"
                ),
                timed_framed_listener(api.feed, max_frame=_max_frame(section.max_batch)),
            )
        ]

    @hookimpl
    def sprintd_metrics(self, app: App) -> Sequence[PricesCollector]:
        return [PricesCollector(self._api().engine, app.worker_index)]

    @hookimpl
    def sprintd_health_checks(self, app: App) -> Sequence[HealthCheck]:
        engine = self._api().engine

        def check() -> tuple[CheckStatus, dict[str, Any]]:
            latency = engine.figures()["latency"]
            slow = latency["sample_count"] >= WARN_MIN_SAMPLES and latency["p95"] >= SLA_P95_US
            return ("warn" if slow else "pass"), {
                "observedValue": latency["p95"],
                "observedUnit": "us (p95, last 10,000 updates)",
                "target_us": SLA_P95_US,
                "symbols": len(engine.quotes),
                "messages_processed": engine.processed,
            }

        return [HealthCheck("prices", check)]

    @hookimpl
    def sprintd_background_tasks(self, app: App) -> Sequence[BackgroundTask]:
        engine = self._api().engine

        async def history(app: App) -> None:
            while True:
                await trio.sleep(HISTORY_INTERVAL_S)
                engine.tick(time.time_ns() // 1_000_000)

        return [history]


def _max_frame(max_batch: int) -> int:
    """A feed frame holds up to ``max_batch`` updates of ~100 bytes as maps."""
    return max(1 << 20, max_batch * 128)
