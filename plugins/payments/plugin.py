"""The payments plugin: the Rinha de Backend 2025 gateway, built from the pieces beside it.

Start-up (``sprintd_configure``): the store is made (memory: the journal's
``payments`` stream is loaded and replayed; redis: the worker's
``app.redis``), then the processors, the dispatcher, the health monitor and
the API. The background task runs the dispatcher's workers and the health
monitor and, with Redis, the heartbeat that takes over a dead instance's
payments; with memory, it first queues the payments the journal says were
accepted and not done.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from sprintd import (
    App,
    CheckStatus,
    ConfigError,
    HealthCheck,
    HTTPError,
    PluginSection,
    Request,
    Response,
    Route,
    hookimpl,
)

from .api import PaymentsAPI
from .config import PaymentsSection
from .dispatcher import Dispatcher
from .health import HealthMonitor
from .metrics import PaymentsCollector
from .processors import Processor
from .redis_store import RedisStore
from .store import MemoryStore, Pending

__all__ = ["PaymentsPlugin"]

log = logging.getLogger("sprintd.payments")


class _Parts:
    """What one worker's plugin is made of, once configured."""

    def __init__(
        self,
        store: MemoryStore | RedisStore,
        processors: list[Processor],
        dispatcher: Dispatcher,
        monitor: HealthMonitor,
        recovered: list[Pending],
    ) -> None:
        self.store = store
        self.processors = processors
        self.dispatcher = dispatcher
        self.monitor = monitor
        self.api = PaymentsAPI(store, dispatcher)
        self.recovered = recovered


async def _not_configured(request: Request) -> Response:
    raise HTTPError(
        503,
        "not_configured",
        "no payment processors configured: set [payments] default_url and fallback_url",
    )


class PaymentsPlugin:
    """The payments plugin's hooks: settings, store and dispatcher set-up, routes,
    background tasks and the ``/health`` check.

    Without both processor URLs it is unconfigured: its routes answer 503
    ``not_configured`` and it starts nothing, so it never calls anybody.
    """

    def __init__(self) -> None:
        self.parts: _Parts | None = None

    @property
    def configured(self) -> bool:
        return self.parts is not None

    def _parts(self) -> _Parts:
        if self.parts is None:
            raise RuntimeError("the payments plugin is not configured")
        return self.parts

    @hookimpl
    def sprintd_settings_sections(self) -> Mapping[str, type[PluginSection]]:
        return {"payments": PaymentsSection}

    @hookimpl
    def sprintd_configure(self, app: App) -> None:
        section = app.settings.section("payments", PaymentsSection)
        if section.default_url is None or section.fallback_url is None:
            return
        store: MemoryStore | RedisStore
        recovered: list[Pending] = []
        if section.store == "memory":
            memory = MemoryStore(app.journal)
            try:
                after, replayed = memory.load()
            except ValueError as exc:
                raise ConfigError(f"payments journal: {exc}") from None
            recovered = memory.recovered()
            log.info(
                "payments: snapshot at seq %d, %d records replayed, %d payments to send",
                after,
                replayed,
                len(recovered),
            )
            store = memory
        else:
            if app.settings.redis.url is None:
                raise ConfigError("payments.store = 'redis' needs redis.url")
            store = RedisStore(app.redis, section.redis_prefix, section.owner_ttl)
        processors = [
            Processor("default", section.default_url, connect_timeout=section.connect_timeout),
            Processor("fallback", section.fallback_url, connect_timeout=section.connect_timeout),
        ]
        dispatcher = Dispatcher(section, processors, store)
        monitor = HealthMonitor(
            processors,
            interval=section.health_interval,
            shared=store if isinstance(store, RedisStore) else None,
            pacer=dispatcher.pacer,
        )
        self.parts = _Parts(store, processors, dispatcher, monitor, recovered)

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        if not self.configured:
            return [
                Route(method, path, _not_configured, scope=scope)
                for method, path, scope in PaymentsAPI.PATHS
            ]
        return self._parts().api.routes()

    @hookimpl
    def sprintd_background_tasks(self, app: App) -> Sequence[Any]:
        return [self._run] if self.configured else []

    async def _run(self, app: App) -> None:
        parts = self._parts()
        for payment in parts.recovered:
            parts.dispatcher.submit(payment)
        parts.recovered = []
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(parts.dispatcher.run)
                nursery.start_soon(parts.monitor.run)
                if isinstance(parts.store, RedisStore):
                    nursery.start_soon(parts.store.run, parts.dispatcher.submit)
        finally:
            # Trio sockets close inside the run that made them.
            for proc in parts.processors:
                proc.client.close()

    @hookimpl
    def sprintd_metrics(self, app: App) -> Sequence[PaymentsCollector]:
        if not self.configured:
            return []
        parts = self._parts()
        return [PaymentsCollector(parts.api, parts.dispatcher, app.worker_index)]

    @hookimpl
    def sprintd_health_checks(self, app: App) -> Sequence[HealthCheck]:
        if not self.configured:
            return [HealthCheck("payments", lambda: ("pass", {"configured": False}))]
        parts = self._parts()

        def check() -> tuple[CheckStatus, dict[str, Any]]:
            details = {"configured": True, **parts.store.details(), **parts.dispatcher.details()}
            details["health_polls"] = parts.monitor.polls
            down = all(proc.health.failing for proc in parts.processors)
            return ("warn" if down or details.get("last_error") else "pass"), details

        return [HealthCheck("payments", check)]
