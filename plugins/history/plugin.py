"""The history plugin's hooks: the ``[history]`` section, the projector task and its health.

Off unless ``[history] postgres_url`` is set. Then ``sprintd_configure`` puts
the projector's hold on the journal at once, before the journal's first
checkpoint could compact anything, and builds the decoders: the orders
stream's (a shadow order service made like the orders plugin's, from the
same section and engine kinds) when the orders plugin is on, and the
payments stream's. The hold is never released: at shutdown the journal's
final compaction must keep what PostgreSQL has not committed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sprintd import App, ConfigError, HealthCheck, PluginSection, hookimpl
from sprintd.plugins.orders.config import OrdersSection
from sprintd.plugins.orders.service import OrderService

from .config import HistorySection
from .decoders import Decoder, OrdersDecoder, PaymentsDecoder

if TYPE_CHECKING:
    from .projector import Projector

__all__ = ["HistoryPlugin"]


class HistoryPlugin:
    """The history plugin's hooks (module doc)."""

    def __init__(self) -> None:
        self.projector: Projector | None = None

    @hookimpl
    def sprintd_settings_sections(self) -> Mapping[str, type[PluginSection]]:
        return {"history": HistorySection}

    @hookimpl
    def sprintd_configure(self, app: App) -> None:
        section = app.settings.section("history", HistorySection)
        if section.postgres_url is None:
            return
        try:
            # psycopg is the optional extra "history": imported only when asked for.
            from .projector import HOLD, Projector  # noqa: PLC0415
        except ImportError as exc:
            raise ConfigError(
                f"history.postgres_url needs psycopg ({exc}): pip install 'sprintd[history]'"
            ) from None
        journal = app.journal
        journal.hold(HOLD, 0)
        self.projector = Projector(journal, section, lambda: _decoders(app))

    @hookimpl
    def sprintd_background_tasks(self, app: App) -> Sequence[Any]:
        return [] if self.projector is None else [lambda app: self._run()]

    async def _run(self) -> None:
        assert self.projector is not None
        await self.projector.run()

    @hookimpl
    def sprintd_health_checks(self, app: App) -> Sequence[HealthCheck]:
        return [] if self.projector is None else [HealthCheck("history", self.projector.check)]


def _decoders(app: App) -> list[Decoder]:
    """Fresh decoders for the streams of the plugins that are on."""
    found: list[Decoder] = [PaymentsDecoder()]
    if app.pm.has_plugin("orders"):
        kinds: dict[str, Any] = {}
        for offered in app.pm.hook.sprintd_order_engines(app=app):
            kinds.update(offered)
        section = app.settings.section("orders", OrdersSection)
        found.append(OrdersDecoder(OrderService(section, kinds)))
    return found
