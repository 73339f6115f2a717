"""Routes for the server tests: an async handler that sleeps (work in flight
while the daemon drains), a POST that reports the body it received, and a
fast-path snapshot too big to send at once (a response a slow reader is
still taking while the daemon drains)."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from sprintd import App, Request, Response, Route, SnapshotSpec, hookimpl


async def slow(request: Request) -> Response:
    seconds = float(request.query_params().get("seconds", "1"))
    await trio.sleep(seconds)
    return Response.data({"slept": seconds})


def echo(request: Request) -> Response:
    return Response.data({"length": len(request.body), "head": request.body[:16].decode("latin-1")})


BIG = 4 * 1024 * 1024


@hookimpl
def sprintd_routes(app: App) -> Sequence[Route]:
    return [Route("GET", "/test/slow", slow), Route("POST", "/test/echo", echo)]


@hookimpl
def sprintd_snapshots(app: App) -> Sequence[SnapshotSpec]:
    return [SnapshotSpec("/test/big", b"x" * BIG)]
