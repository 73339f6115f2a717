"""One worker process, top to bottom: tune, build the app, serve, tear down."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import pluggy
import trio

from .app import App
from .server import serve
from .settings import LoadedSettings
from .tuning import Tuner

__all__ = ["build_app", "run_worker"]

log = logging.getLogger("sprintd")


def build_app(loaded: LoadedSettings, pm: pluggy.PluginManager, worker_index: int = 0) -> App:
    """Apply the tier's tuning to this process, then let the plugins build the app."""
    settings = loaded.settings
    tuner = Tuner(settings.tuning, worker_index=worker_index, workers=settings.server.workers)
    report = tuner.apply()
    for name in report.refused:
        knob = report.knobs[name]
        log.warning("tuning %s not applied: %s", name, knob.reason)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = App(loaded=loaded, pm=pm, tuner=tuner, worker_index=worker_index)
    app.setup()
    return app


def run_worker(
    loaded: LoadedSettings,
    pm: pluggy.PluginManager,
    worker_index: int = 0,
    reload: Callable[[], LoadedSettings] | None = None,
) -> None:
    app = build_app(loaded, pm, worker_index)
    try:
        trio.run(functools.partial(serve, app, reload=reload))
    finally:
        app.teardown()
    log.info("worker %d stopped", worker_index)
