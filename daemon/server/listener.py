"""Listening sockets that only one daemon can hold.

Strategy: SO_REUSEPORT lets every socket of the same user that sets it join a
port's group, so a second daemon started on an occupied port would bind
silently and take half the traffic. sprintd therefore never asks for
SO_REUSEPORT on its own: every listener is first bound *without* it, and
that bind fails with EADDRINUSE while anyone listens on the port, with or
without SO_REUSEPORT.

- One worker (``open_listener``): that exclusive socket is the listener;
  no SO_REUSEPORT at all.
- N workers (``open_group``, in the supervisor before it forks): the
  exclusive socket is a probe. Once it is bound and listening, the
  supervisor takes a lock named after the port, closes the probe, binds the
  N SO_REUSEPORT sockets of the group and only then lets the lock go. Each
  worker gets one of them; the supervisor keeps them all, so a restarted
  worker gets the same socket back and the group never has a gap.

The race: between the probe's close and the group's bind the port is free.
Another sprintd's probe can take it then, but it cannot take the lock, so it
fails as "in use"; and a daemon that bound the port alone in that window
makes the group's bind fail instead. Either way one of the two stops. What
no bind order can keep out is a process of the same user that sets
SO_REUSEPORT itself, without probing: the kernel admits it to any group.

A Unix socket (``[server] uds``; its address is ``unix:PATH`` with port 0
wherever a listener is named by host and port) is one listening socket that
every worker accepts on: the supervisor opens it before it forks, and each
worker gets the same socket. ``open_unix`` binds it under a lock named after
the path: a socket file left by a daemon that was killed (connecting to it is
refused) is replaced; one that a live process accepts on is a ``ListenError``,
as is a path that is not a socket (never removed). It is made mode 0660
before it listens, so only the daemon's user and group can connect (the
directory's permissions decide who finds it), and the owner that made it
removes it at shutdown (``UnixSocketFile.remove``), unless another daemon has
replaced it meanwhile.

Errors are ``ListenError``: one line naming the address and the listener,
which the command line prints as it is, exiting 2.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import socket
import stat
from collections.abc import Iterator
from typing import Protocol

__all__ = [
    "UNIX",
    "UNIX_LISTENER",
    "Binder",
    "Exclusive",
    "ListenError",
    "UnixSocketFile",
    "describe",
    "open_group",
    "open_listener",
    "open_unix",
]

# The host of a Unix socket's address: "unix:/run/sprintd/http.sock", port 0.
UNIX = "unix:"
# The name of the [server] uds listener (in app.bound, logs and errors).
UNIX_LISTENER = "http-unix"
# A Unix socket is made with this mode: its user and group may connect.
UNIX_MODE = 0o660
# How long a connect to an existing socket file may take to tell a live
# daemon from a stale file.
PROBE_TIMEOUT = 1.0


class Binder(Protocol):
    """A listener for the server: a listening, non-blocking socket for ``name``
    at ``host:port``. ``shared``: one socket per worker (SO_REUSEPORT); else
    the one worker that asks serves the port alone."""

    def __call__(self, name: str, host: str, port: int, *, shared: bool = True) -> socket.socket:
        """The socket, opened or handed over.

        Raises:
            ListenError: it cannot be opened.
        """


class ListenError(Exception):
    """A listener cannot be opened; the message is the line to show."""

    @classmethod
    def of(cls, name: str, host: str, port: int, exc: OSError | str) -> ListenError:
        reason = exc if isinstance(exc, str) else exc.strerror or str(exc)
        where = describe(host, port)
        return cls(f"cannot listen on {where} ({name}): {reason[:1].lower()}{reason[1:]}")


def describe(host: str, port: int) -> str:
    """An address as logs and errors show it: ``host:port``, or ``unix:PATH``."""
    return host if host.startswith(UNIX) else f"{host}:{port}"


def _socket(host: str, port: int, *, share: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        # A restart must not wait out the last run's TIME_WAIT connections;
        # with it, only a socket that listens makes the bind fail.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if share:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _listening(sock: socket.socket, backlog: int) -> socket.socket:
    try:
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_listener(name: str, host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket no other process can share; port 0 asks for a free one.

    Raises:
        ListenError: the address is in use, or cannot be bound.
    """
    if host.startswith(UNIX):
        raise ValueError("open_unix opens a Unix socket, and says what to remove")
    try:
        return _listening(_socket(host, port, share=False), backlog)
    except OSError as exc:
        raise ListenError.of(name, host, port, exc) from None


@contextlib.contextmanager
def _lock(name: str) -> Iterator[None]:
    """Held by the one sprintd binding ``name`` (a port, a socket path).

    An abstract Unix socket: per network namespace like a port, and let go
    by the kernel when its process dies.

    Raises:
        OSError: EADDRINUSE while another sprintd holds it.
    """
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(f"\0sprintd-listen-{name}")
        yield
    finally:
        lock.close()


class UnixSocketFile:
    """The file a Unix socket listener made: ``remove`` takes it away, if it
    is still the one this process made."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.inode = os.stat(path).st_ino

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)


def _stale(path: str) -> bool:
    """Whether ``path`` is a socket file nobody accepts on (False: absent).

    Raises:
        OSError: it is something else, or a process accepts on it.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return False
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "exists and is not a socket: not replaced")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(PROBE_TIMEOUT)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return True
    except TimeoutError:  # a live daemon with its backlog full
        pass
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, "in use by a running process")


def open_unix(name: str, host: str, backlog: int) -> tuple[socket.socket, UnixSocketFile]:
    """A listening Unix socket at ``host`` (``unix:PATH``), and its file (module doc).

    Raises:
        ListenError: a live process accepts on it, it is not a socket, or it
            cannot be made.
    """
    path = os.path.abspath(host[len(UNIX) :])
    digest = hashlib.sha256(os.fsencode(path)).hexdigest()[:32]
    try:
        with _lock(f"unix-{digest}"):
            if _stale(path):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
                # Before it listens: no one can connect while it has the umask's mode.
                os.chmod(path, UNIX_MODE)
                made = UnixSocketFile(path)
            except BaseException:
                sock.close()
                raise
            try:
                return _listening(sock, backlog), made
            except BaseException:
                made.remove()
                raise
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE and not exc.strerror:  # the lock itself
            exc = OSError(errno.EADDRINUSE, "another sprintd is binding it")
        raise ListenError.of(name, host, 0, exc) from None


def open_group(name: str, host: str, port: int, backlog: int, count: int) -> list[socket.socket]:
    """``count`` listening SO_REUSEPORT sockets on one address, which only
    this daemon can have joined; port 0 asks for a free one.

    Raises:
        ListenError: the address is in use, or cannot be bound.
    """
    if host.startswith(UNIX):
        raise ValueError("open_unix opens a Unix socket, which the workers share")
    try:
        probe = _listening(_socket(host, port, share=False), backlog)
    except OSError as exc:
        raise ListenError.of(name, host, port, exc) from None
    group: list[socket.socket] = []
    with probe:
        port = probe.getsockname()[1]
        try:
            with _lock(f"tcp-{port}"):
                probe.close()
                # Appended one by one, so a failure closes those made before it.
                group.extend(
                    _listening(_socket(host, port, share=True), backlog) for _ in range(count)
                )
        except OSError as exc:
            for sock in group:
                sock.close()
            raise ListenError.of(name, host, port, exc) from None
    return group


class Exclusive:
    """The ``Binder`` of a daemon with one worker: each listener its own socket.

    ``hold`` opens one before the app is built (the HTTP port, so that a port
    in use stops start-up before any plugin touches its data); the server's
    call for the same name then gets that socket. ``release`` removes the
    Unix socket files it made, once the server has stopped.

    Raises:
        ListenError: from ``hold`` or a call, as ``open_listener`` and ``open_unix``.
    """

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self._held: dict[str, socket.socket] = {}
        self._files: list[UnixSocketFile] = []

    def _open(self, name: str, host: str, port: int) -> socket.socket:
        if not host.startswith(UNIX):
            return open_listener(name, host, port, self.backlog)
        sock, made = open_unix(name, host, self.backlog)
        self._files.append(made)
        return sock

    def hold(self, name: str, host: str, port: int) -> socket.socket:
        sock = self._held[name] = self._open(name, host, port)
        return sock

    def __call__(self, name: str, host: str, port: int, *, shared: bool = True) -> socket.socket:
        # One worker: every port is its alone, shared or not.
        held = self._held.pop(name, None)
        return held if held is not None else self._open(name, host, port)

    def release(self) -> None:
        for made in self._files:
            made.remove()
        self._files.clear()
