"""A plugin with a misspelt hook: ``sprintd_rotes`` instead of ``sprintd_routes``."""

from __future__ import annotations

from collections.abc import Sequence

from sprintd import App, Response, Route, hookimpl


@hookimpl
def sprintd_rotes(app: App) -> Sequence[Route]:
    return [Route("GET", "/test/typo", lambda request: Response.data({}))]
