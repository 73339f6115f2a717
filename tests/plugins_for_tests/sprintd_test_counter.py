"""A third-party plugin using every kind of contribution the core offers.

A background task counts ticks every 50 ms and republishes the fast-path
snapshot ``/test/counter`` with the count, so a client sees it change; the
health check reports it; the route answers through h11; unconfigure leaves a
file in the data directory so a test can see shutdown reach the plugin.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import trio

from sprintd import (
    App,
    BackgroundTask,
    HealthCheck,
    Request,
    Response,
    Route,
    SnapshotSpec,
    hookimpl,
)

TICK = 0.05
state: dict[str, Any] = {"ticks": 0, "configured": False}


def _body() -> bytes:
    return json.dumps({"ticks": state["ticks"], "pid": os.getpid()}).encode()


@hookimpl
def sprintd_configure(app: App) -> None:
    state["configured"] = True


@hookimpl
def sprintd_routes(app: App) -> Sequence[Route]:
    def hello(request: Request) -> Response:
        return Response.data({"plugin": "counter", "ticks": state["ticks"]})

    return [Route("GET", "/test/counter/hello", hello)]


@hookimpl
def sprintd_snapshots(app: App) -> Sequence[SnapshotSpec]:
    return [SnapshotSpec("/test/counter", _body())]


@hookimpl
def sprintd_health_checks(app: App) -> Sequence[HealthCheck]:
    def check() -> tuple[Any, dict[str, Any]]:
        return "pass", {"observedValue": state["ticks"], "observedUnit": "ticks"}

    return [HealthCheck("counter", check)]


async def tick(app: App) -> None:
    snapshot = app.snapshots.get("/test/counter")
    assert snapshot is not None
    while True:
        await trio.sleep(TICK)
        state["ticks"] += 1
        snapshot.publish(_body())


@hookimpl
def sprintd_background_tasks(app: App) -> Sequence[BackgroundTask]:
    return [tick]


@hookimpl
def sprintd_unconfigure(app: App) -> None:
    marker = app.settings.data_dir / "counter-stopped.json"
    marker.write_text(json.dumps({"ticks": state["ticks"]}))
