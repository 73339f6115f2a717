"""Serving one worker: bind, start the background tasks, accept, drain.

``serve`` follows trio's ``serve_tcp`` shape: it takes ``task_status`` and
reports the addresses it bound once it is accepting, so a test binds port 0
and learns the port.

Signals: SIGTERM and SIGINT drain. First /readyz answers 503 while
everything else is still served and the listeners stay open, for
``server.drain_delay`` (a load balancer needs that long to see the 503 and
stop sending; a second signal cuts it short); then the listeners close,
resting connections are closed, in-flight requests finish with
``connection: close``, and the rest is cancelled after
``server.drain_timeout``. SIGHUP re-reads the settings and applies what a
running worker can take (``settings.RELOADABLE_SERVER``), logging what needs
a restart.
"""

from __future__ import annotations

import logging
import signal
import socket
import time
from collections.abc import Awaitable, Callable

import trio

from ..app import App
from ..http import tick_date
from ..peers import Peers
from ..settings import ConfigError, LoadedSettings, reloaded
from .connection import HTTPServer
from .listener import UNIX, UNIX_LISTENER, Binder, Exclusive, describe
from .owner import OWNER_INDEX, OwnerLink, OwnerService, relay_listener

__all__ = ["serve"]

log = logging.getLogger("sprintd.server")


async def _tick_clock(app: App) -> None:
    """Re-encode the snapshots' Date header at each whole second."""
    while True:
        await trio.sleep(1.0 - time.time() % 1.0)
        tick_date()
        app.snapshots.refresh()


class _Lifecycle:
    """What the signals do to a running worker."""

    def __init__(
        self,
        app: App,
        server: HTTPServer,
        reload: Callable[[], LoadedSettings] | None,
    ) -> None:
        self.app = app
        self.server = server
        self.reload = reload
        self.connections: trio.Nursery | None = None
        # Set by a second SIGTERM/SIGINT: the pre-stop delay ends at once.
        self.hurry = trio.Event()

    async def drain(self) -> None:
        if self.app.draining:
            self.hurry.set()
            return
        self.app.draining = True
        # /readyz fails from here (the health plugin's sprintd_drain) ...
        self.app.pm.hook.sprintd_drain(app=self.app)
        # ... while everything is still served, until the balancer has seen it.
        with trio.move_on_after(self.app.settings.server.drain_delay):
            await self.hurry.wait()
        self.server.drain()
        await trio.sleep(self.app.settings.server.drain_timeout)
        self.server.cancel_all()
        if self.connections is not None:
            self.connections.cancel_scope.cancel()

    def apply_reload(self) -> None:
        if self.reload is None:
            log.info("SIGHUP: no settings source to reload from")
            return
        try:
            fresh = self.reload()
        except ConfigError as exc:
            log.error("SIGHUP: keeping the running settings: %s", exc)
            self.app.audit.emit("config_reload_failed", error=str(exc))
            return
        self.app.loaded, applied, restart = reloaded(self.app.loaded, fresh)
        self.server.configure(self.app.settings.server)
        self.app.audit.emit("config_reloaded", applied=applied, restart=restart)
        log.info("SIGHUP: applied %s", ", ".join(applied) or "nothing new")
        if restart:
            log.warning("SIGHUP: these need a restart: %s", ", ".join(restart))

    async def watch_signals(
        self,
        nursery: trio.Nursery,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        wanted = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        with trio.open_signal_receiver(*wanted) as signals:
            # Started once the handlers are in: a signal sent as soon as the
            # worker says it serves must find them.
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self.apply_reload()
                    continue
                server = self.app.settings.server
                log.info(
                    "%s: draining (/readyz 503 for %ss first, then up to %ss)",
                    signal.Signals(signum).name,
                    server.drain_delay,
                    server.drain_timeout,
                )
                nursery.start_soon(self.drain)


async def _share_state(app: App, peers: Peers, server: HTTPServer, nursery: trio.Nursery) -> None:
    """Workers > 1 with plugins that keep their state in one process: the
    owner answers its siblings, the siblings forward to it (``owner``)."""
    if app.worker_index == OWNER_INDEX:
        await nursery.start(OwnerService(app, peers.namespace, server.unmatched).serve)
    else:
        link = OwnerLink(app, peers.namespace)
        app.forward = link.forward
        app.relay = link.relay
        nursery.start_soon(link.run)


async def serve(
    app: App,
    *,
    reload: Callable[[], LoadedSettings] | None = None,
    binder: Binder | None = None,
    handle_signals: bool = True,
    task_status: trio.TaskStatus[dict[str, tuple[str, int]]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (or cancellation), then drain.

    Resource handling: the listening sockets come from ``binder`` (by
    default each opened here, for this process alone; a supervised worker's
    come from its supervisor) and are closed when accepting stops; every
    connection's socket is closed by its own task. A Unix socket's file is
    removed by whoever opened it: here when it returns, if it was here.

    Raises:
        ListenError: a listener cannot be opened.
    """
    own = None
    if binder is None:
        binder = own = Exclusive(app.settings.server.backlog)
    try:
        await _serve(app, binder, reload, handle_signals, task_status)
    finally:
        if own is not None:
            own.release()


async def _serve(
    app: App,
    bind: Binder,
    reload: Callable[[], LoadedSettings] | None,
    handle_signals: bool,
    task_status: trio.TaskStatus[dict[str, tuple[str, int]]],
) -> None:
    settings = app.settings.server
    server = HTTPServer(app, app.tuner.pool)
    http = bind("http", settings.host, settings.port)
    app.bound["http"] = http.getsockname()[:2]
    extra: list[tuple[socket.socket, Callable[[socket.socket], Awaitable[None]]]] = []
    if settings.uds is not None:
        # Accepted as the TCP port is, by the same connection loop.
        address = f"{UNIX}{settings.uds}"
        extra.append((bind(UNIX_LISTENER, address, 0), server.connection))
        app.bound[UNIX_LISTENER] = (address, 0)
    if app.peers is not None and app.local_plugins and app.worker_index == OWNER_INDEX:
        # Connections a sibling hands over whole (a WebSocket's), served as
        # HTTP ones are.
        extra.append((relay_listener(app.peers.namespace), server.connection))
    for listener in app.listeners:
        shared = listener.name not in app.owner_listeners
        sock = bind(listener.name, listener.host, listener.port, shared=shared)
        app.bound[listener.name] = sock.getsockname()[:2]
        extra.append((sock, server.listener_connection(listener)))
    lifecycle = _Lifecycle(app, server, reload)

    async with trio.open_nursery() as background:
        background.start_soon(server.reap)
        background.start_soon(_tick_clock, app)
        background.start_soon(app.tuner.gc.run)
        if handle_signals:
            await background.start(lifecycle.watch_signals, background)
        if app.peers is not None:
            await background.start(app.peers.serve)
            if app.local_plugins:
                await _share_state(app, app.peers, server, background)
        for task in app.background:
            background.start_soon(task, app)
        async with trio.open_nursery() as connections:
            lifecycle.connections = connections
            connections.start_soon(server.accept, http, server.connection, connections)
            for sock, handler in extra:
                connections.start_soon(server.accept, sock, handler, connections)
            app.tuner.finish()
            for name, (host, port) in app.bound.items():
                log.info("worker %d serving %s on %s", app.worker_index, name, describe(host, port))
            task_status.started(dict(app.bound))
        background.cancel_scope.cancel()
