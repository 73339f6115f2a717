"""N worker processes on one port: a small supervisor.

The supervisor owns every listening socket (``listener.open_group``: only
this daemon can have joined the SO_REUSEPORT group). It opens the HTTP group
before it forks, so a port in use stops start-up with one line and exit 2
before any worker runs, and port 0 resolves once. A plugin's port is known
only once a worker has built its app: the worker asks the supervisor for it
over a socketpair, and the supervisor opens that group the first time it is
asked and passes each worker its own socket (SCM_RIGHTS). A restarted worker
gets the same sockets back, so the group never loses a member.

The supervisor forwards SIGTERM/SIGINT to the workers and closes its copies
of the sockets, so a port closes once its workers have drained; it restarts
a worker that dies while the daemon is not stopping, and exits 0 once every
worker has drained. A listener that cannot be opened is a configuration
error (exit 2), reported once by the supervisor.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType

from ..settings import EXIT_CONFIG, ConfigError, LoadedSettings
from .listener import (
    UNIX,
    UNIX_LISTENER,
    Binder,
    ListenError,
    UnixSocketFile,
    open_group,
    open_unix,
)

__all__ = ["supervise"]

log = logging.getLogger("sprintd.workers")

# A worker that dies is restarted after this, so a crash loop does not spin.
RESTART_DELAY = 1.0
# One request or answer on a worker's channel: a listener's name and address,
# or the line saying why it cannot be opened.
MESSAGE_SIZE = 4096


def _with_port(loaded: LoadedSettings, port: int) -> LoadedSettings:
    server = loaded.settings.server.model_copy(update={"port": port})
    settings = loaded.settings.model_copy(update={"server": server})
    return LoadedSettings(settings=settings, profile=loaded.profile, layers=loaded.layers)


class _Groups:
    """The supervisor's listening sockets: one group per listener, a socket per worker."""

    def __init__(self, workers: int, backlog: int) -> None:
        self.workers = workers
        self.backlog = backlog
        self.groups: dict[tuple[str, str, int], list[socket.socket]] = {}
        self.failed: dict[tuple[str, str, int], str] = {}
        self.files: list[UnixSocketFile] = []
        self.closed = False

    def open(self, name: str, host: str, port: int, shared: bool = True) -> list[socket.socket]:
        """The group for a listener, opened the first time it is asked for:
        a socket per worker, or one only for a port one worker serves alone.

        Raises:
            ListenError: it cannot be opened (reported the first time only).
        """
        key = (name, host, port)
        if key in self.failed:
            raise ListenError(self.failed[key])
        group = self.groups.get(key)
        if group is None:
            try:
                group = self._open(name, host, port, shared)
            except ListenError as exc:
                self.failed[key] = str(exc)
                raise
            if self.closed:  # stopping began while it was being opened
                for sock in group:
                    sock.close()
                raise ListenError(f"cannot listen on {host}:{port} ({name}): stopping")
            self.groups[key] = group
            if not host.startswith(UNIX):
                # Port 0 resolved: workers told the port ask for it by number.
                self.groups[name, host, group[0].getsockname()[1]] = group
        return group

    def _open(self, name: str, host: str, port: int, shared: bool) -> list[socket.socket]:
        if not host.startswith(UNIX):
            size = self.workers if shared else 1
            return open_group(name, host, port, self.backlog, size)
        # One socket that every worker accepts on: a Unix socket has no
        # SO_REUSEPORT group.
        sock, made = open_unix(name, host, self.backlog)
        self.files.append(made)
        return [sock] * self.workers

    def sockets(self) -> set[socket.socket]:
        return {sock for group in self.groups.values() for sock in group}

    def close(self) -> None:
        """Close the supervisor's copies; remove the Unix socket files, so
        that no client connects to a daemon that is stopping."""
        self.closed = True
        for sock in self.sockets():
            sock.close()
        self.groups.clear()
        for made in self.files:
            made.remove()
        self.files.clear()


def _ask(channel: socket.socket) -> Binder:
    """A worker's ``Binder``: its socket of each group, from the supervisor."""

    def bind(name: str, host: str, port: int, *, shared: bool = True) -> socket.socket:
        asked = {"name": name, "host": host, "port": port, "shared": shared}
        channel.send(json.dumps(asked).encode())
        answer, fds, _, _ = socket.recv_fds(channel, MESSAGE_SIZE, 1)
        if not fds:
            raise ListenError(answer.decode() or "the supervisor has gone")
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        return sock

    return bind


def supervise(loaded: LoadedSettings, run: Callable[[LoadedSettings, int, Binder], None]) -> int:
    """Run ``run(loaded, index, binder)`` in one forked process per worker;
    return the exit status.

    Raises:
        ListenError: the HTTP port cannot be opened (before any worker starts).
    """
    server = loaded.settings.server
    groups = _Groups(server.workers, server.backlog)
    http = groups.open("http", server.host, server.port)
    loaded = _with_port(loaded, http[0].getsockname()[1])
    if server.uds is not None:
        # Before the fork, as the port: a socket a live daemon serves stops start-up.
        try:
            groups.open(UNIX_LISTENER, f"{UNIX}{server.uds}", 0)
        except ListenError:
            groups.close()
            raise
    # pid -> (index, its channel, its pidfd)
    children: dict[int, tuple[int, socket.socket, int]] = {}
    selector = selectors.DefaultSelector()
    stopping = False

    def spawn(index: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            # Only this worker's own sockets stay open in it: the others'
            # copies would keep their ports listening after a drain.
            ours.close()
            selector.close()
            for _, channel, pidfd in children.values():
                channel.close()
                os.close(pidfd)
            for sock in groups.sockets():
                sock.close()
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            status = 0
            try:
                run(loaded, index, _ask(theirs))
            except ListenError:
                status = EXIT_CONFIG  # the supervisor has said why
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
        theirs.close()
        pidfd = os.pidfd_open(pid)
        children[pid] = (index, ours, pidfd)
        selector.register(ours, selectors.EVENT_READ, pid)
        selector.register(pidfd, selectors.EVENT_READ, pid)

    def answer(pid: int) -> None:
        index, channel, _ = children[pid]
        try:
            request = channel.recv(MESSAGE_SIZE)
        except OSError:
            request = b""
        if not request:  # the worker has gone; its pidfd says how
            selector.unregister(channel)
            return
        asked = json.loads(request)
        known = len(groups.failed)
        try:
            group = groups.open(asked["name"], asked["host"], asked["port"], asked["shared"])
        except ListenError as exc:
            if len(groups.failed) > known:  # said once, not once per worker
                print(f"sprintd: {exc}", file=sys.stderr)
            channel.send(str(exc).encode())
            return
        # A port one worker serves alone has one socket, that worker's.
        socket.send_fds(channel, [b"ok"], [group[index % len(group)].fileno()])

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        # SIGHUP reloads each worker; SIGTERM and SIGINT drain them (as SIGTERM).
        if signum != signal.SIGHUP:
            stopping = True
            signum = signal.SIGTERM
            # The workers hold their own copies: each port closes as they drain.
            groups.close()
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
        exited = []
        for key, _ in selector.select():
            if key.fileobj is children.get(key.data, (0, None))[1]:
                answer(key.data)
            elif key.data in children:
                exited.append(key.data)
        for pid in exited:
            index, channel, pidfd = children.pop(pid)
            with contextlib.suppress(KeyError):
                selector.unregister(channel)
            selector.unregister(pidfd)
            channel.close()
            os.close(pidfd)
            _, status = os.waitpid(pid, 0)
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
    groups.close()
    selector.close()
    return result
