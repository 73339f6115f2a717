"""A framed port, ``test-framed`` (on ``$FRAMED_TEST_PORT``, a free
port by default), whose handler misbehaves on request: a frame ``["short"]``
makes it return one reply too few."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from sprintd import App, Listener, framed_listener, hookimpl


async def answer(batch: list[list[Any]]) -> list[Any]:
    replies = [["ok", *frame] for frame in batch]
    if ["short"] in batch:
        replies.pop()
    return replies


@hookimpl
def sprintd_listeners(app: App) -> Sequence[Listener]:
    port = int(os.environ.get("FRAMED_TEST_PORT", "0"))
    return [Listener("test-framed", "127.0.0.1", port, framed_listener(answer))]
