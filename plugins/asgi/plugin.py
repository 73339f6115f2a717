"""The asgi plugin's hooks: the ``[asgi]`` section, the mount's prefix route and the lifespan.

The application is imported in ``sprintd_configure``, so a name that does
not import, or does not name a callable, stops start-up with one line
(exit 2), in every worker as in one.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence

from sprintd import App, BackgroundTask, ConfigError, PluginSection, Route, hookimpl

from .config import AsgiSection
from .exchange import ASGIApp, Mount
from .lifespan import Lifespan

__all__ = ["AsgiPlugin", "load_app"]


def load_app(target: str) -> ASGIApp:
    """The application ``module:attribute`` names (the attribute may be dotted).

    Raises:
        ConfigError: the module does not import, the attribute is missing or
            is not callable.
    """
    module_name, _, attribute = target.partition(":")
    where = f"asgi.app = '{target}'"
    try:
        found: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigError(f"{where}: no module named '{exc.name}'") from None
        raise ConfigError(f"{where}: importing it failed: {exc!r}") from None
    except Exception as exc:
        # The application's own import-time code: its fault, in one line.
        raise ConfigError(f"{where}: importing it failed: {exc!r}") from None
    for part in attribute.split("."):
        try:
            found = getattr(found, part)
        except AttributeError:
            raise ConfigError(f"{where}: '{module_name}' has no attribute '{attribute}'") from None
    if not callable(found):
        raise ConfigError(f"{where}: {type(found).__name__} is not an ASGI application")
    return found


class AsgiPlugin:
    """The asgi plugin's hooks (module doc); it does nothing while ``[asgi] app`` is unset."""

    def __init__(self) -> None:
        self.mount: Mount | None = None
        self.lifespan: Lifespan | None = None

    @hookimpl
    def sprintd_settings_sections(self) -> Mapping[str, type[PluginSection]]:
        return {"asgi": AsgiSection}

    @hookimpl
    def sprintd_configure(self, app: App) -> None:
        section = app.settings.section("asgi", AsgiSection)
        if section.app is None:
            return
        self.mount = Mount(load_app(section.app), section.mount.rstrip("/"))
        if section.lifespan == "off":
            self.mount.ready.set()
        else:
            self.lifespan = Lifespan(self.mount, app.settings.server.drain_timeout)

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        if self.mount is None:
            return []
        section = app.settings.section("asgi", AsgiSection)
        # Its latency is recorded under one name, as a route's.
        name = f"{section.mount} (asgi)"
        handle = self.mount.handle
        return [Route("*", section.mount, handle, name, scope=section.scope, prefix=True)]

    @hookimpl
    def sprintd_background_tasks(self, app: App) -> Sequence[BackgroundTask]:
        if self.mount is None:
            return []
        tasks: list[BackgroundTask] = [self.mount.serve_websockets]
        if self.lifespan is not None:
            tasks.append(self.lifespan.run)
        return tasks
