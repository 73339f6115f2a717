"""The orders plugin's own hook: other plugins offer it matching engines.

Added to the manager by ``OrdersPlugin.sprintd_addhooks`` (as pytest's
plugins add theirs through ``pytest_addhooks``), so the core's hookspecs
name nothing that only one plugin asks for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sprintd import App, hookspec

__all__ = ["sprintd_order_engines"]


@hookspec
def sprintd_order_engines(app: App) -> Mapping[str, Any]:
    """Offer matching engines to the orders plugin, by name.

    Each value is an engine kind (``sprintd.plugins.orders.service.
    EngineKind``): ``create(symbol) -> engine``, ``restore(bytes) -> engine``,
    ``snapshot(engine) -> bytes`` (what ``restore`` takes back) and
    ``state_hash(engine) -> str`` (equal for equal books), called only with
    engines the kind made. The engine has the interface of ``sprintd.plugins.
    orders.service.Engine`` (new, cancel, replace, order, depth, sequence)
    and must be deterministic: no clock, no randomness.
    ``[orders.symbols.NAME] engine = "..."`` chooses one per symbol; the
    built-in is ``price_time``. Called from the orders plugin's
    ``sprintd_configure``.

    Not firstresult: every plugin's engines are merged, a later name winning.
    """
