"""The ASGI lifespan protocol around one worker's life.

Strategy: ``Lifespan.run`` is the plugin's background task. It calls the
application with a ``lifespan`` scope in a child task that is shielded from
the cancellation the daemon's stop sends to background tasks, so that when
the worker has drained (its connections done) the application is still
there to be told ``lifespan.shutdown`` and given ``server.drain_timeout`` to
finish it. Requests wait for the start-up (``Mount.ready``), and /readyz
fails until it is complete.

Failure: ``lifespan.startup.failed`` (or the application raising after it
asked for the start-up event) stops the worker with a ``ConfigError``: one
line, exit 2. Raising before asking for it means the application does not
speak the protocol: it is served without (``lifespan = "auto"``).
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from sprintd import App, ConfigError

from .exchange import ASGI_VERSION, Message, Mount

__all__ = ["Lifespan"]

log = logging.getLogger("sprintd.plugins.asgi")

UNREADY = "asgi_starting"


def _last_line(text: str) -> str:
    """A traceback's last line (its exception), or the whole of a one-line message."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"


class Lifespan:
    """The lifespan exchange of one mounted application (module doc)."""

    def __init__(self, mount: Mount, shutdown_timeout: float) -> None:
        self.mount = mount
        self.shutdown_timeout = shutdown_timeout
        self.asked = False
        self.failure: str | None = None
        self.stop = trio.Event()
        self.scope = trio.CancelScope(shield=True)

    async def run(self, app: App) -> None:
        app.set_unready(UNREADY, "the ASGI application's lifespan start-up is under way")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._call)
            try:
                await self.mount.ready.wait()
                if self.failure is not None:
                    raise ConfigError(f"asgi: lifespan start-up failed: {self.failure}")
                app.set_unready(UNREADY, None)
                await trio.sleep_forever()
            finally:
                # The worker has drained: the application shuts down, in time.
                self.scope.deadline = trio.current_time() + self.shutdown_timeout
                self.stop.set()

    async def _call(self) -> None:
        scope: dict[str, Any] = {"type": "lifespan", "asgi": ASGI_VERSION, "state": {}}
        self.mount.state = scope["state"]
        with self.scope:
            try:
                await self.mount.app(scope, self._receive, self._send)
            except Exception as exc:
                if not self.asked:
                    log.info("the ASGI application has no lifespan (%r): served without", exc)
                elif not self.mount.ready.is_set():
                    self.failure = self.failure or repr(exc)
                else:
                    log.error("the ASGI application's lifespan ended: %r", exc)
            finally:
                self.mount.ready.set()
        if self.scope.cancelled_caught:
            log.error("the ASGI application's shut-down took over %ss", self.shutdown_timeout)

    async def _receive(self) -> Message:
        if not self.asked:
            self.asked = True
            return {"type": "lifespan.startup"}
        await self.stop.wait()
        return {"type": "lifespan.shutdown"}

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self.mount.ready.set()
        elif kind == "lifespan.startup.failed":
            self.failure = _last_line(message.get("message", ""))
            self.mount.ready.set()
        elif kind == "lifespan.shutdown.failed":
            log.error("the ASGI application's shut-down failed: %s", message.get("message", ""))
        elif kind != "lifespan.shutdown.complete":
            raise RuntimeError(f"unexpected ASGI message {kind!r} in the lifespan")
