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

Errors are ``ListenError``: one line naming the address and the listener,
which the command line prints as it is, exiting 2.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Protocol

__all__ = ["Binder", "Exclusive", "ListenError", "open_group", "open_listener"]


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
    def of(cls, name: str, host: str, port: int, exc: OSError) -> ListenError:
        reason = exc.strerror or str(exc)
        return cls(f"cannot listen on {host}:{port} ({name}): {reason[:1].lower()}{reason[1:]}")


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
    try:
        return _listening(_socket(host, port, share=False), backlog)
    except OSError as exc:
        raise ListenError.of(name, host, port, exc) from None


@contextlib.contextmanager
def _port_lock(port: int) -> Iterator[None]:
    """Held by the one sprintd building a group on ``port`` (any host).

    An abstract Unix socket: per network namespace like the port itself, and
    let go by the kernel when its process dies.

    Raises:
        OSError: EADDRINUSE while another sprintd holds it.
    """
    lock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        lock.bind(f"\0sprintd-listen-tcp-{port}")
        yield
    finally:
        lock.close()


def open_group(name: str, host: str, port: int, backlog: int, count: int) -> list[socket.socket]:
    """``count`` listening SO_REUSEPORT sockets on one address, which only
    this daemon can have joined; port 0 asks for a free one.

    Raises:
        ListenError: the address is in use, or cannot be bound.
    """
    try:
        probe = _listening(_socket(host, port, share=False), backlog)
    except OSError as exc:
        raise ListenError.of(name, host, port, exc) from None
    group: list[socket.socket] = []
    with probe:
        port = probe.getsockname()[1]
        try:
            with _port_lock(port):
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
    call for the same name then gets that socket.

    Raises:
        ListenError: from ``hold`` or a call, as ``open_listener``.
    """

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self._held: dict[str, socket.socket] = {}

    def hold(self, name: str, host: str, port: int) -> socket.socket:
        sock = self._held[name] = open_listener(name, host, port, self.backlog)
        return sock

    def __call__(self, name: str, host: str, port: int, *, shared: bool = True) -> socket.socket:
        # One worker: every port is its alone, shared or not.
        held = self._held.pop(name, None)
        return held if held is not None else open_listener(name, host, port, self.backlog)
