"""A framed port, ``test-framed`` on a free port, whose handler misbehaves on
request: a frame ``["short"]`` makes it return one reply too few."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sprintd.app import App, Listener
from sprintd.hookspecs import hookimpl
from sprintd.server.framed import framed_listener


async def answer(batch: list[list[Any]]) -> list[Any]:
    replies = [["ok", *frame] for frame in batch]
    if ["short"] in batch:
        replies.pop()
    return replies


@hookimpl
def sprintd_listeners(app: App) -> Sequence[Listener]:
    return [Listener("test-framed", "127.0.0.1", 0, framed_listener(answer))]
