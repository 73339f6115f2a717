"""Handlers that are wrong in each way a plugin's can be: each must cost its
request a 500, never the connection or the daemon.

``GET /test/faulty/{case}`` runs the case from a sync handler,
``GET /test/faulty/async/{case}`` from an async one, and the admin route
``POST /test/faulty/admin/{case}`` through the audited admin path.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from sprintd import App, HTTPError, Request, Response, Route, hookimpl


def _exit() -> Any:
    sys.exit(3)


def _http_error_that_does_not_encode() -> Any:
    raise HTTPError(409, "conflict", "taken", headers=[("x-name", "value")])  # type: ignore[list-item]


CASES: dict[str, Callable[[], Any]] = {
    "dict": lambda: {"ok": True},
    "none": lambda: None,
    "str-body": lambda: Response(200, "not bytes"),  # type: ignore[arg-type]
    "status-600": lambda: Response(600, b"{}"),
    "status-99": lambda: Response(99, b"{}"),
    "str-header": lambda: Response(200, b"{}", headers=[("x-name", "value")]),  # type: ignore[list-item]
    "exit": _exit,
    "bad-http-error": _http_error_that_does_not_encode,
}


def _run(request: Request) -> Any:
    return CASES[request.params["case"]]()


async def _run_async(request: Request) -> Any:
    return _run(request)


@hookimpl
def sprintd_routes(app: App) -> Sequence[Route]:
    return [
        Route("GET", "/test/faulty/{case}", _run, scope="open"),
        Route("GET", "/test/faulty/async/{case}", _run_async, scope="open"),
        Route("POST", "/test/faulty/admin/{case}", _run, scope="admin"),
    ]
