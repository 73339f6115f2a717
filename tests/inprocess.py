"""An app and its server in the test's own process, without tuning it.

The tuner is built but never applied, so the test process keeps its GC,
affinity and priority. Connections run over socketpairs: the server's real
connection loop, with no network and no port.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

import trio

from sprintd.app import App
from sprintd.manager import bare_manager, plugin_sections
from sprintd.server.connection import HTTPServer
from sprintd.settings import load_settings
from sprintd.tuning import Tuner

__all__ = ["exchange", "make_app", "make_server"]


def make_app(plugins: Iterable[object], environ: dict[str, str] | None = None) -> App:
    pm = bare_manager()
    for plugin in plugins:
        pm.register(plugin)
    pm.check_pending()
    loaded = load_settings(environ=environ or {}, sections=plugin_sections(pm))
    tuner = Tuner(loaded.settings.tuning, worker_index=0)
    app = App(loaded=loaded, pm=pm, tuner=tuner)
    app.setup()
    return app


def make_server(app: App, **overrides: Any) -> HTTPServer:
    server = HTTPServer(app, app.tuner.pool)
    for name, value in overrides.items():
        setattr(server, name, value)
    return server


async def exchange(server: HTTPServer, data: bytes) -> bytes:
    """Send ``data``, half-close, and return everything the server answered."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    client = trio.socket.from_stdlib_socket(ours)
    received: list[bytes] = []

    async def read() -> None:
        while chunk := await client.recv(65536):
            received.append(chunk)

    with client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.connection, theirs)
            nursery.start_soon(read)
            view = memoryview(data)
            while view:
                view = view[await client.send(view) :]
            client.shutdown(socket.SHUT_WR)
    return b"".join(received)
