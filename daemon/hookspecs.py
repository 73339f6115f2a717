"""Every hook a sprintd plugin can implement, in one place.

A plugin is any module or object with functions marked ``@hookimpl`` (from
``sprintd.hookspecs``) whose names are below. The manager calls them in this
order at start-up, in each worker process::

    sprintd_addhooks            once per plugin, as it is registered (historic)
    sprintd_add_commands        subcommands of the ``sprintd`` command line
    sprintd_settings_sections   before the settings are validated
    sprintd_configure           the settings are valid; build your state
    sprintd_routes              the HTTP routes served through h11
    sprintd_snapshots           pre-encoded responses for the fast path
    sprintd_listeners           extra ports with their own protocol
    sprintd_health_checks       components that /health reports on
    sprintd_metrics             Prometheus collectors added to /metrics
    sprintd_background_tasks    tasks that run beside the server
    sprintd_drain               SIGTERM: mark yourself not ready
    sprintd_unconfigure         the worker is stopping; flush and release

A hook implemented under a name that is not here, nor added by a plugin
through ``sprintd_addhooks``, fails start-up (the manager calls
``check_pending``), so a misspelt hook is never a silent no-op.

No hook is firstresult: the manager uses every plugin's answer. Only
``sprintd_addhooks`` is historic: a plugin registered later is called too.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .app import App, BackgroundTask, HealthCheck, Listener, Route, SnapshotSpec
    from .sections import PluginSection

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "sprintd"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -------------------------------------------------------------------------
# Hooks of plugins
# -------------------------------------------------------------------------


@hookspec(historic=True)
def sprintd_addhooks(pluginmanager: pluggy.PluginManager) -> None:
    """Add a plugin's own hook specifications (``pluginmanager.add_hookspecs``).

    Historic: called for every plugin as it is registered, also for those
    registered after this hook was first called, so a plugin that asks other
    plugins for something (the orders plugin's ``sprintd_order_engines``)
    declares the hook here and the core's specs stay the core's.
    """


@hookspec
def sprintd_add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add subcommands to the ``sprintd`` command line.

    ``commands.add_parser(name, help=...)`` makes one; give it its arguments
    and ``set_defaults(command_handler=run)``, where ``run(args)`` returns the
    exit status. Such a command is a tool or a client of a running daemon
    (the dashboard's ``sprintd top``): it runs without settings, journal or
    server. Called with the built-in and installed plugins only, before the
    command line is parsed.
    """


# -------------------------------------------------------------------------
# Settings
# -------------------------------------------------------------------------


@hookspec
def sprintd_settings_sections() -> Mapping[str, type[PluginSection]]:
    """Declare the settings sections this plugin owns.

    Return a mapping of section name to a ``PluginSection`` subclass. The
    section is read from the config file (``[name]``), from the environment
    (``SPRINTD_NAME__KEY``) and validated with the core's; its ``enabled`` key
    lets a deployment switch the plugin off.

    Called before the settings exist, so it must not depend on them.
    """


# -------------------------------------------------------------------------
# Start-up and shutdown
# -------------------------------------------------------------------------


@hookspec
def sprintd_configure(app: App) -> None:
    """Build the plugin's state from ``app.settings``.

    Called once per worker after the settings are validated and the tier's
    tuning is applied, before any other hook below. Raise ``ConfigError``
    (from ``sprintd.settings``) to stop start-up with a one-line reason.
    """


@hookspec
def sprintd_drain(app: App) -> None:
    """The worker has begun to drain (SIGTERM or SIGINT).

    Mark yourself not ready now. Everything is still served, and the
    listeners stay open, for ``server.drain_delay`` (so a load balancer sees
    /readyz fail first); then they close and in-flight requests finish
    within ``server.drain_timeout``. Must not block.
    """


@hookspec
def sprintd_unconfigure(app: App) -> None:
    """Release what ``sprintd_configure`` built.

    Called once per worker after the server has drained and the background
    tasks are cancelled, in reverse registration order.
    """


# -------------------------------------------------------------------------
# Serving
# -------------------------------------------------------------------------


@hookspec
def sprintd_routes(app: App) -> Sequence[Route]:
    """Return the HTTP routes this plugin serves through the h11 path.

    A route's path may hold ``{name}`` segments, passed to the handler in
    ``request.params``. Two plugins registering the same method and path fail
    start-up.
    """


@hookspec
def sprintd_snapshots(app: App) -> Sequence[SnapshotSpec]:
    """Return the fast-path snapshots this plugin publishes.

    A snapshot is a body-less GET/HEAD answered from one pre-encoded bytes
    object. ``app.snapshots.get(path).publish(body)`` swaps it atomically
    later; new snapshots can be added at run time with
    ``app.snapshots.register``.
    """


@hookspec
def sprintd_listeners(app: App) -> Sequence[Listener]:
    """Return extra ports this plugin serves with a protocol of its own.

    Each listener's ``serve`` is called with a connected, non-blocking socket
    in its own task; the core owns accepting, limits and shutdown.
    """


@hookspec
def sprintd_background_tasks(app: App) -> Sequence[BackgroundTask]:
    """Return tasks to run beside the server for the worker's lifetime.

    Each is an ``async`` callable taking the ``App``; it starts once the
    listeners are bound and is cancelled after the drain.
    """


# -------------------------------------------------------------------------
# Observability
# -------------------------------------------------------------------------


@hookspec
def sprintd_health_checks(app: App) -> Sequence[HealthCheck]:
    """Return the components that ``GET /health`` reports on.

    Each check is a named callable returning ``(status, details)`` with a
    status of ``pass``, ``warn`` or ``fail``; the worst one sets the overall
    status. Checks run on every /health request, so keep them cheap.
    """


@hookspec
def sprintd_metrics(app: App) -> Sequence[Any]:
    """Return Prometheus collectors to expose on ``GET /metrics``.

    Any object with a ``collect()`` method yielding
    ``prometheus_client`` metric families; it runs at scrape time only.
    """
