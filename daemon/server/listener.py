"""Listening sockets: non-blocking, SO_REUSEPORT, so N workers share one port."""

from __future__ import annotations

import socket

__all__ = ["open_listener", "reserve_port"]


def _bind(host: str, port: int, *, listen: bool, backlog: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # The kernel spreads connections over every socket bound with
        # SO_REUSEPORT to this address: one per worker, no accept lock.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen:
            sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_listener(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket; port 0 asks the kernel for a free one."""
    return _bind(host, port, listen=True, backlog=backlog)


def reserve_port(host: str, port: int) -> socket.socket:
    """Hold a port for the workers without taking any connections.

    A bound socket that never listens is skipped by SO_REUSEPORT's balancing,
    so the supervisor can learn the port (if 0 was asked) and keep it while
    workers come and go.
    """
    return _bind(host, port, listen=False, backlog=0)
