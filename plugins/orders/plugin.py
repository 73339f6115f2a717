"""The orders plugin: the books, their HTTP API, the order-entry port, durability.

Start-up (``sprintd_configure``): the engines are made from the
``sprintd_order_engines`` hook per ``[orders.symbols]``, the latest snapshot
is loaded and the journal's ``orders`` records after it are replayed, so the
books are as they were when the last acknowledged command was answered.
The journal checkpoints the books (``register``): periodically, per
``[journal] checkpoint_records``/``checkpoint_bytes``, and at shutdown.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pluggy

from sprintd import (
    App,
    BackgroundTask,
    CheckStatus,
    ConfigError,
    HealthCheck,
    Listener,
    PluginSection,
    Route,
    SnapshotSpec,
    hookimpl,
)

from . import hookspecs
from . import snapshot as persistence
from .api import STREAM, OrdersAPI
from .config import DEFAULT_RESERVE, ENTRY_PORT_OFFSET, OrdersSection, parse_owner
from .engine import PriceTimeEngine
from .metrics import OrdersCollector
from .remote import OwnersCollector, RemoteOwner
from .reports import EntryPort
from .service import OrderService

__all__ = ["OrdersPlugin"]

log = logging.getLogger("sprintd.orders")
LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


def _entry_port(app: App, section: OrdersSection) -> int:
    return app.settings.server.plugin_port(
        section.entry_port, ENTRY_PORT_OFFSET, "orders.entry_port"
    )


class _PriceTime:
    """The built-in engine kind as the hook registers it: the hot core from
    ``engine``, its persistence from ``snapshot``."""

    def __init__(self, done_capacity: int, reserve: int) -> None:
        self.done_capacity = done_capacity
        self.reserve = reserve

    def create(self, symbol: str) -> PriceTimeEngine:
        return PriceTimeEngine(symbol, done_capacity=self.done_capacity, reserve=self.reserve)

    def restore(self, data: bytes) -> PriceTimeEngine:
        return persistence.restore(data, reserve=self.reserve)

    def snapshot(self, engine: PriceTimeEngine) -> bytes:
        return persistence.snapshot(engine)

    def state_hash(self, engine: PriceTimeEngine) -> str:
        return persistence.state_hash(engine)


class OrdersPlugin:
    """The orders plugin's hooks: its section, the built-in engine, the journal
    restore at start-up, routes, book snapshots, the entry port, its health."""

    def __init__(self) -> None:
        self.api: OrdersAPI | None = None
        # One link per owner address, shared by the symbols it owns.
        self.links: dict[str, RemoteOwner] = {}

    def _api(self) -> OrdersAPI:
        if self.api is None:
            raise RuntimeError("the orders plugin is not configured")
        return self.api

    @hookimpl
    def sprintd_addhooks(self, pluginmanager: pluggy.PluginManager) -> None:
        pluginmanager.add_hookspecs(hookspecs)

    @hookimpl
    def sprintd_settings_sections(self) -> Mapping[str, type[PluginSection]]:
        return {"orders": OrdersSection}

    @hookimpl
    def sprintd_order_engines(self, app: App) -> Mapping[str, Any]:
        section = app.settings.section("orders", OrdersSection)
        reserve = section.reserve_orders
        if reserve is None:
            reserve = DEFAULT_RESERVE if app.settings.tuning.prealloc_buffers else 0
        return {"price_time": _PriceTime(section.done_capacity, reserve)}

    @hookimpl
    def sprintd_configure(self, app: App) -> None:
        section = app.settings.section("orders", OrdersSection)
        kinds: dict[str, Any] = {}
        for found in app.pm.hook.sprintd_order_engines(app=app):
            kinds.update(found)
        owners = section.owners()
        entry = (section.entry_host, _entry_port(app, section))
        for symbol, owner in owners.items():
            # The plain mistake (the same config file on every instance):
            # forwarded commands would come back here, refused.
            if parse_owner(owner) == entry:
                raise ConfigError(
                    f"orders.symbols.{symbol}.owner = {owner!r} is this instance's own "
                    "order-entry port: leave owner out for a symbol traded here"
                )
        section = section.local()
        for symbol, cfg in section.symbols.items():
            if cfg.engine not in kinds:
                raise ConfigError(
                    f"orders.symbols.{symbol}.engine = {cfg.engine!r}: no such engine "
                    f"(registered: {', '.join(sorted(kinds))})"
                )
        service = OrderService(section, kinds)
        journal = app.journal
        try:
            after, replayed = journal.restore(STREAM, service.restore, service.replay)
        except ValueError as exc:
            raise ConfigError(f"orders snapshot: {exc}") from None
        # Every command is appended before the handler next awaits, so the
        # service's state is the journal's up to last_seq whenever the
        # journal asks for it (periodically, and at close).
        journal.register(STREAM, service.snapshot)
        log.info(
            "orders: snapshot at seq %d, %d records replayed, state %s",
            after,
            replayed,
            service.state_hash(),
        )
        self.links = {
            owner: RemoteOwner(owner, section.forward_timeout)
            for owner in dict.fromkeys(owners.values())
        }
        self.api = OrdersAPI(
            app, service, journal, {symbol: self.links[owner] for symbol, owner in owners.items()}
        )

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        return self._api().routes()

    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        api = self._api()
        depth = api.service.section.book_depth
        return [
            SnapshotSpec(f"/v1/book/{symbol}", api.book_body(symbol, depth), scope="read")
            for symbol in api.service.engines
        ]

    @hookimpl
    def sprintd_listeners(self, app: App) -> Sequence[Listener]:
        api = self._api()
        for symbol in api.service.engines:
            snapshot = app.snapshots.get(f"/v1/book/{symbol}")
            assert snapshot is not None  # registered by sprintd_snapshots, just before
            api.books[symbol] = snapshot
        section = api.service.section
        if app.settings.auth.enabled and section.entry_host not in LOOPBACK:
            # The binary port takes no API key: only the network can guard it.
            log.warning(
                "orders.entry_host = %s: the order-entry port takes no API key; "
                "with [auth] enabled keep it on loopback or behind a firewall",
                section.entry_host,
            )
        return [
            Listener(
                "orders-entry",
                section.entry_host,
                _entry_port(app, section),
                EntryPort(api, section.report_queue).serve,
            )
        ]

    @hookimpl
    def sprintd_metrics(self, app: App) -> Sequence[OrdersCollector | OwnersCollector]:
        collectors: list[OrdersCollector | OwnersCollector] = [
            OrdersCollector(self._api().service, app.worker_index)
        ]
        if self.links:
            collectors.append(OwnersCollector(self.links, app.worker_index))
        return collectors

    @hookimpl
    def sprintd_background_tasks(self, app: App) -> Sequence[BackgroundTask]:
        return [link.run for link in self.links.values()]

    @hookimpl
    def sprintd_health_checks(self, app: App) -> Sequence[HealthCheck]:
        service = self._api().service
        links = self.links

        def check() -> tuple[CheckStatus, dict[str, Any]]:
            details: dict[str, Any] = {
                "state_hash": service.state_hash(),
                "sequences": {s: e.sequence for s, e in service.engines.items()},
                "next_order_id": service.next_id,
                "client_ids": service.client_id_counts(),
            }
            if links:
                details["owners"] = {
                    owner: {
                        "up": link.up,
                        "forwarded": link.forwarded,
                        "unavailable": link.unavailable,
                        "connects": link.connects,
                        **({} if link.up else {"output": f"the owner {link.why}"}),
                    }
                    for owner, link in links.items()
                }
            if service.halted is not None:
                return "fail", {**details, "output": service.halted}
            if not all(link.up for link in links.values()):
                # This instance's own symbols trade on: a warning, not a failure.
                return "warn", details
            return "pass", details

        return [HealthCheck("orders", check)]
