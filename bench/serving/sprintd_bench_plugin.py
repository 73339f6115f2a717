"""The serving bench's sprintd plugin: the GET snapshot and the POST echo route.

Loaded by name from ``sprintd.toml`` with ``bench/serving`` on PYTHONPATH. It
serves the same bytes as the peers' apps (``bench.serving.payload``).
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.serving.payload import CONTENT_TYPE, ECHO_PATH, GET_BODY, GET_PATH
from sprintd.app import App, Route, SnapshotSpec
from sprintd.hookspecs import hookimpl
from sprintd.http import Request, Response

__all__ = ["echo", "sprintd_routes", "sprintd_snapshots"]


@hookimpl
def sprintd_snapshots(app: App) -> Sequence[SnapshotSpec]:
    return [SnapshotSpec(GET_PATH, GET_BODY, CONTENT_TYPE)]


def echo(request: Request) -> Response:
    return Response(200, request.body, request.content_type or CONTENT_TYPE)


@hookimpl
def sprintd_routes(app: App) -> Sequence[Route]:
    return [Route("POST", ECHO_PATH, echo)]
