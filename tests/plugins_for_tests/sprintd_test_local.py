"""A plugin whose state lives in the process: it needs exactly one worker."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from sprintd import App, PluginSection, Request, Response, Route, hookimpl


class LedgerSection(PluginSection):
    process_local: ClassVar[bool] = True


@hookimpl
def sprintd_settings_sections() -> Mapping[str, type[PluginSection]]:
    return {"ledger": LedgerSection}


@hookimpl
def sprintd_routes(app: App) -> Sequence[Route]:
    def ledger(request: Request) -> Response:
        return Response.data({"entries": 0})

    return [Route("GET", "/test/ledger", ledger)]
