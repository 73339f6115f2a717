"""An app and its server in the caller's own process, for tests and benchmarks of plugins.

The daemon never imports this module: it is a tool shipped beside it. Nothing
here depends on a test framework.

``make_app`` builds an :class:`~sprintd.app.App` from plugin objects and an
environment, as a worker would, but leaves the tuner unapplied, so the calling
process keeps its GC, affinity and priority. ``make_server`` wraps it in the
server's real connection loop; ``exchange`` and ``drive`` talk to that loop
over a socketpair: no network, no port. ``StaticPlugin`` serves a fixed set of
snapshots and routes, the smallest plugin there is.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import trio

from sprintd.app import App, Route, SnapshotSpec
from sprintd.hookspecs import hookimpl
from sprintd.http import Request, Response
from sprintd.manager import bare_manager, plugin_sections
from sprintd.server.connection import HTTPServer
from sprintd.settings import load_settings
from sprintd.tuning import Tuner

__all__ = [
    "StaticPlugin",
    "drive",
    "echo",
    "exchange",
    "make_app",
    "make_server",
    "mask_request_ids",
]

# What sys.setprofile takes.
Profiler = Callable[[Any, str, Any], object]


class StaticPlugin:
    """A plugin serving the snapshots and routes it is given."""

    def __init__(
        self, snapshots: Sequence[SnapshotSpec] = (), routes: Sequence[Route] = ()
    ) -> None:
        self.snapshots = list(snapshots)
        self.routes = list(routes)

    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        return self.snapshots

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        return self.routes


def echo(request: Request) -> Response:
    """A route handler answering 200 with the request's body and content type."""
    return Response(200, request.body, request.content_type or b"text/plain")


def make_app(plugins: Iterable[object], environ: dict[str, str] | None = None) -> App:
    """An app set up with ``plugins`` and settings read from ``environ`` alone
    (no config file, not this process's environment)."""
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
    """The server for ``app``; ``overrides`` set its attributes (``fast_path=False``)."""
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


async def drive(
    server: HTTPServer,
    request: bytes,
    count: int,
    profiler: Profiler | None = None,
    *,
    more: Iterator[bytes] | None = None,
) -> None:
    """Send ``request`` once, then ``count`` more times on the same connection,
    each after the answer to the one before; with ``more``, the ``count``
    later ones are taken from it instead (requests that must differ, such as
    payments with their own ids).

    The first answer sets the size every later one must reach, so every
    request must get an answer of the same size. ``profiler`` is installed with
    ``sys.setprofile`` for the ``count`` requests only, not for the first.
    """
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    client = trio.socket.from_stdlib_socket(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.connection, theirs)
        await client.send(request)
        size = len(await client.recv(65536))
        if profiler is not None:
            sys.setprofile(profiler)
        try:
            for _ in range(count):
                await client.send(request if more is None else next(more))
                got = 0
                while got < size:
                    got += len(await client.recv(65536))
        finally:
            sys.setprofile(None)
        client.close()


def mask_request_ids(app: App, answer: bytes) -> bytes:
    """``answer`` with every X-Request-ID that ``app`` made replaced by
    ``<made>``: two servers compared on the same requests make different
    ones, and echo the same."""
    made = re.escape(app.request_ids.prefix) + rb"[0-9a-f]{12}"
    return re.sub(rb"x-request-id: " + made + rb"\r\n", b"x-request-id: <made>\r\n", answer)
