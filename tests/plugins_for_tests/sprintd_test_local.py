"""A plugin whose state lives in the process: a ledger of entries.

With workers > 1 it is registered in the owner worker alone: ``POST
/test/ledger`` adds an entry there whichever worker takes the request and
answers the count with the worker that holds it, the snapshot
``/test/ledger/total`` follows every entry, and the port ``test-ledger`` (on
``$LEDGER_TEST_PORT``, a free port by default) answers each frame with the
count and the worker.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from sprintd import (
    App,
    Listener,
    PluginSection,
    Request,
    Response,
    Route,
    SnapshotSpec,
    framed_listener,
    hookimpl,
)

TOTAL = "/test/ledger/total"


class LedgerSection(PluginSection):
    process_local: ClassVar[bool] = True


class Ledger:
    entries = 0


@hookimpl
def sprintd_settings_sections() -> Mapping[str, type[PluginSection]]:
    return {"ledger": LedgerSection}


@hookimpl
def sprintd_routes(app: App) -> Sequence[Route]:
    def read(request: Request) -> Response:
        return Response.data({"entries": Ledger.entries, "worker": app.worker_index})

    def add(request: Request) -> Response:
        Ledger.entries += 1
        total = app.snapshots.get(TOTAL)
        assert total is not None
        total.publish(json.dumps({"entries": Ledger.entries}).encode())
        return Response.data({"entries": Ledger.entries, "worker": app.worker_index}, 201)

    return [Route("GET", "/test/ledger", read), Route("POST", "/test/ledger", add)]


@hookimpl
def sprintd_snapshots(app: App) -> Sequence[SnapshotSpec]:
    return [SnapshotSpec(TOTAL, b'{"entries": 0}')]


@hookimpl
def sprintd_listeners(app: App) -> Sequence[Listener]:
    async def answer(batch: list[list[Any]]) -> list[Any]:
        return [[Ledger.entries, app.worker_index] for _ in batch]

    port = int(os.environ.get("LEDGER_TEST_PORT", "0"))
    return [Listener("test-ledger", "127.0.0.1", port, framed_listener(answer))]
