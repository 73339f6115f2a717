"""N worker processes on one port: a small supervisor.

The supervisor holds the port with a bound, non-listening SO_REUSEPORT socket
(so port 0 resolves once and a restarted worker gets the same port), forks
the workers, forwards SIGTERM/SIGINT to them, and restarts one that dies
while the daemon is not stopping. It exits 0 once every worker has drained.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from ..settings import EXIT_CONFIG, ConfigError, LoadedSettings
from .listener import reserve_port

__all__ = ["supervise"]

log = logging.getLogger("sprintd.workers")

# A worker that dies is restarted after this, so a crash loop does not spin.
RESTART_DELAY = 1.0


def _with_port(loaded: LoadedSettings, port: int) -> LoadedSettings:
    server = loaded.settings.server.model_copy(update={"port": port})
    settings = loaded.settings.model_copy(update={"server": server})
    return LoadedSettings(settings=settings, profile=loaded.profile, layers=loaded.layers)


def supervise(loaded: LoadedSettings, run: Callable[[LoadedSettings, int], None]) -> int:
    """Run ``run(loaded, index)`` in one forked process per worker; return the exit status."""
    server = loaded.settings.server
    holder = reserve_port(server.host, server.port)
    loaded = _with_port(loaded, holder.getsockname()[1])
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            holder.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            status = 0
            try:
                run(loaded, index)
            except ConfigError as exc:
                # A plugin refused its settings: the same in every worker, so
                # not a crash to restart from, and one line is enough.
                if index == 0:
                    print(f"sprintd: config error: {exc}", file=sys.stderr)
                status = EXIT_CONFIG
            except BaseException:
                log.exception("worker %d failed", index)
                status = 1
            finally:
                os._exit(status)
        children[pid] = index

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        # SIGHUP reloads each worker; SIGTERM and SIGINT drain them (as SIGTERM).
        if signum != signal.SIGHUP:
            stopping = True
            signum = signal.SIGTERM
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(server.workers):
        spawn(index)
    log.info(
        "supervising %d workers on %s:%d", server.workers, server.host, loaded.settings.server.port
    )
    result = 0
    while children:
        pid, status = os.waitpid(-1, 0)
        if pid not in children:
            continue
        index = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        if code == EXIT_CONFIG and not stopping:
            result = EXIT_CONFIG
            forward(signal.SIGTERM, None)
        if stopping:
            result = result or (1 if code else 0)
            continue
        log.error("worker %d (pid %d) exited with %d; restarting", index, pid, code)
        time.sleep(RESTART_DELAY)
        if not stopping:
            spawn(index)
    holder.close()
    return result
