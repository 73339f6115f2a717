"""The dashboard plugin: ``GET /dashboard`` as a fast-path snapshot, and ``sprintd top``.

The page is static (it fetches everything it shows), so it is encoded once
at start-up and served like /livez: no handler runs for it. ``sprintd top``
is the same view in a terminal, a command this plugin adds to the CLI.
"""

from __future__ import annotations

import argparse
import os
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


def _seconds(value: str) -> float:
    seconds = float(value)
    if not 0.05 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"{value}: from 0.05 to 3600 seconds")
    return seconds


def _top(args: argparse.Namespace) -> int:
    # Imported when the command runs, so that only ``sprintd top`` loads rich.
    from . import top  # noqa: PLC0415

    key = os.environ.get(args.key_env) or None
    return top.main(args.url, args.interval, once=args.once, key=key)


class DashboardPlugin:
    """The dashboard plugin's hooks: the HTML page as a fast-path snapshot, its
    settings section, and the ``sprintd top`` command."""

    @hookimpl
    def sprintd_add_commands(
        self, commands: argparse._SubParsersAction[argparse.ArgumentParser]
    ) -> None:
        top = commands.add_parser("top", help="watch a running daemon's figures in the terminal")
        top.add_argument(
            "--url", default="http://127.0.0.1:8080", help="the daemon (default: %(default)s)"
        )
        top.add_argument(
            "--interval", type=_seconds, default=1.0, help="seconds between refreshes (default: 1)"
        )
        top.add_argument("--once", action="store_true", help="print one frame and exit")
        top.add_argument(
            "--key-env",
            default="SPRINTD_API_KEY",
            metavar="VAR",
            help="the environment variable holding an API key, when [auth] is on "
            "(default: %(default)s; a key is never taken on the command line)",
        )
        top.set_defaults(command_handler=_top)

    @hookimpl
    def sprintd_settings_sections(self) -> Mapping[str, type[PluginSection]]:
        return {"dashboard": DashboardSection}

    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        # The page itself holds no figures: what it fetches is guarded on its own.
        return [SnapshotSpec(PATH, page(), HTML, scope="open")]
