"""Serving one worker: bind, start the background tasks, accept, drain.

``serve`` follows trio's ``serve_tcp`` shape: it takes ``task_status`` and
reports the addresses it bound once it is accepting, so a test binds port 0
and learns the port.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable
from typing import Any

import trio

from ..app import App
from ..http import tick_date
from .connection import HTTPServer
from .listener import open_listener

__all__ = ["serve"]

log = logging.getLogger("sprintd.server")


async def _tick_clock(app: App) -> None:
    """Re-encode the snapshots' Date header at each whole second."""
    while True:
        await trio.sleep(1.0 - time.time() % 1.0)
        tick_date()
        app.snapshots.refresh()


async def _serve_listener_conn(serve: Callable[[Any], Any], sock: Any) -> None:
    try:
        await serve(sock)
    finally:
        sock.close()


async def serve(
    app: App,
    *,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[dict[str, tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (or cancellation), then drain.

    Resource handling: the listening sockets are opened here and closed when
    accepting stops; every connection's socket is closed by its own task.
    """
    settings = app.settings.server
    tuner = app.tuner
    http = open_listener(settings.host, settings.port, settings.backlog)
    app.bound["http"] = http.getsockname()[:2]
    extra = []
    for listener in app.listeners:
        sock = open_listener(listener.host, listener.port, settings.backlog)
        app.bound[listener.name] = sock.getsockname()[:2]
        extra.append((sock, listener))
    server = HTTPServer(app, tuner.pool, nodelay=app.settings.tuning.optimize_system)

    async def shutdown() -> None:
        if server.draining:
            return
        app.draining = True
        app.pm.hook.sprintd_drain(app=app)
        server.drain()
        await trio.sleep(settings.drain_timeout)
        server.cancel_all()
        connections.cancel_scope.cancel()

    async def watch_signals() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info(
                    "%s: draining (up to %ss)", signal.Signals(signum).name, settings.drain_timeout
                )
                background.start_soon(shutdown)

    async with trio.open_nursery() as background:
        background.start_soon(server.reap)
        background.start_soon(_tick_clock, app)
        background.start_soon(tuner.gc.run)
        if handle_signals:
            background.start_soon(watch_signals)
        for task in app.background:
            background.start_soon(task, app)
        async with trio.open_nursery() as connections:
            connections.start_soon(server.accept, http, server.connection, connections)
            for sock, listener in extra:
                connections.start_soon(
                    server.accept,
                    sock,
                    lambda s, serve=listener.serve: _serve_listener_conn(serve, s),
                    connections,
                )
            tuner.finish()
            for name, (host, port) in app.bound.items():
                log.info("worker %d serving %s on %s:%d", app.worker_index, name, host, port)
            task_status.started(dict(app.bound))
        background.cancel_scope.cancel()
