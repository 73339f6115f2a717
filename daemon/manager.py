"""The plugin manager: built-ins first, then entry points, then the config's list.

As in pytest, the essential plugins (health and metrics) cannot be disabled;
the other built-ins register from ``BUILTINS`` and can be switched off with
``enabled = false`` in their section. ``check_pending`` runs once everything
is registered, so a hook implemented under a misspelt name fails start-up.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Mapping, Sequence
from typing import cast

import pluggy

from . import hookspecs
from .health import HealthPlugin
from .metrics import MetricsPlugin
from .sections import PluginSection
from .settings import ConfigError, Settings

__all__ = [
    "BUILTINS",
    "ENTRY_POINT_GROUP",
    "add_plugins",
    "apply_enabled",
    "bare_manager",
    "local_plugins",
    "make_manager",
    "plugin_sections",
]

ENTRY_POINT_GROUP = "sprintd.plugins"
# Registered in every manager, never disabled: the daemon is not observable without them.
ESSENTIAL = (("health", HealthPlugin), ("metrics", MetricsPlugin))
# Built-in feature plugins: name -> "module:Class", one instance per manager.
BUILTINS: Mapping[str, str] = {
    "orders": "sprintd.plugins.orders.plugin:OrdersPlugin",
    "prices": "sprintd.plugins.prices.plugin:PricesPlugin",
    "dashboard": "sprintd.plugins.dashboard.plugin:DashboardPlugin",
    "payments": "sprintd.plugins.payments.plugin:PaymentsPlugin",
    "history": "sprintd.plugins.history.plugin:HistoryPlugin",
    "asgi": "sprintd.plugins.asgi.plugin:AsgiPlugin",
}


def bare_manager() -> pluggy.PluginManager:
    """A manager with the core's hooks and no plugin yet (in-process tests start here)."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    # Historic: each plugin, as it is registered, adds its own hooks first.
    pm.hook.sprintd_addhooks.call_historic(kwargs={"pluginmanager": pm})
    return pm


def make_manager(extra: Sequence[str] = ()) -> pluggy.PluginManager:
    """A manager with the essential and built-in plugins, entry points and ``extra``.

    Raises:
        ConfigError: a plugin cannot be imported or implements an unknown hook.
    """
    pm = bare_manager()
    for name, factory in ESSENTIAL:
        pm.register(factory(), name=name)
    for name, target in BUILTINS.items():
        module, _, attribute = target.partition(":")
        pm.register(getattr(importlib.import_module(module), attribute)(), name=name)
    _load_entry_points(pm)
    add_plugins(pm, extra)
    return pm


def add_plugins(pm: pluggy.PluginManager, names: Sequence[str]) -> None:
    """Register the modules the configuration lists (``plugins = [...]``).

    Raises:
        ConfigError: a module cannot be imported, or a plugin (any registered
            so far) implements an unknown hook.
    """
    for module_name in names:
        try:
            plugin = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"plugins = {module_name!r}: cannot import it: {exc}") from None
        # Installed and listed too: it is the same module, registered once.
        if not pm.is_registered(plugin):
            pm.register(plugin, name=module_name)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigError(f"plugin {pm.get_name(exc.plugin)}: {exc}") from None


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """pluggy's loader (which keeps each plugin's distribution), naming the
    entry point that fails."""
    try:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    except Exception as exc:
        failed = next(
            (
                f"{entry.name} = {entry.value}"
                for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
                if not pm.has_plugin(entry.name)
            ),
            "?",
        )
        raise ConfigError(
            f"entry point {failed} ({ENTRY_POINT_GROUP}): cannot load it: "
            f"{type(exc).__name__}: {exc}"
        ) from None


def plugin_sections(pm: pluggy.PluginManager) -> dict[str, type[PluginSection]]:
    """Every plugin's settings sections; two plugins claiming one name is an error."""
    sections: dict[str, type[PluginSection]] = {}
    owners: dict[str, str] = {}
    for impl in pm.hook.sprintd_settings_sections.get_hookimpls():
        declared = cast(Mapping[str, type[PluginSection]], impl.function())
        for name, kind in declared.items():
            if name in sections:
                raise ConfigError(
                    f"settings section {name!r} is claimed by {owners[name]} and {impl.plugin_name}"
                )
            sections[name] = kind
            owners[name] = impl.plugin_name
    return sections


def apply_enabled(pm: pluggy.PluginManager, settings: Settings) -> None:
    """Unregister plugins whose section says ``enabled = false``."""
    for impl in pm.hook.sprintd_settings_sections.get_hookimpls():
        declared = cast(Mapping[str, type[PluginSection]], impl.function())
        for name, kind in declared.items():
            if not settings.section(name, kind).enabled:
                pm.unregister(name=impl.plugin_name)


def local_plugins(pm: pluggy.PluginManager, settings: Settings) -> tuple[str, ...]:
    """The registered plugins whose configuration keeps their state in the
    process: with workers > 1, one worker owns it (``server.owner``)."""
    local: list[str] = []
    for impl in pm.hook.sprintd_settings_sections.get_hookimpls():
        declared = cast(Mapping[str, type[PluginSection]], impl.function())
        if any(
            settings.section(name, kind).keeps_state_locally() for name, kind in declared.items()
        ):
            local.append(impl.plugin_name)
    return tuple(local)
