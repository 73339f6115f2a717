"""The dashboard plugin: ``GET /dashboard`` as a fast-path snapshot.

The page is static (it fetches everything it shows), so it is encoded once
at start-up and served like /livez: no handler runs for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files

from sprintd import App, PluginSection, SnapshotSpec, hookimpl

__all__ = ["HTML", "PATH", "DashboardPlugin", "DashboardSection", "page"]

PATH = "/dashboard"
HTML = b"text/html; charset=utf-8"


class DashboardSection(PluginSection):
    """``[dashboard] enabled = false`` serves no page."""


def page() -> bytes:
    """The page's bytes, as shipped beside this module."""
    return files("sprintd.plugins.dashboard").joinpath("dashboard.html").read_bytes()


class DashboardPlugin:
    @hookimpl
    def sprintd_settings_sections(self) -> Mapping[str, type[PluginSection]]:
        return {"dashboard": DashboardSection}

    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        # The page itself holds no figures: what it fetches is guarded on its own.
        return [SnapshotSpec(PATH, page(), HTML, scope="open")]
