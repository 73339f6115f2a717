"""Taking a connection over: a route's answer to an HTTP/1.1 Upgrade (RFC 9110 section 7.8).

A route that speaks another protocol after the handshake (a WebSocket)
answers a GET that asks to upgrade with ``Upgrade(session, b"websocket",
headers)``. Dispatch sends it as ``101 Switching Protocols`` with
``Upgrade`` and ``Connection: Upgrade`` and its headers, and the h11 path
then hands the connection to ``session(conn, rest)``, ``rest`` being what the
peer sent past the request; the connection closes when the session returns.

Only the h11 path upgrades: the fast path and the strict parser decline a
head with an ``Upgrade`` header, so h11 reads every such request. An
``Upgrade`` answering a request that did not ask for its protocol, a HEAD,
or one with a body is the route's fault, a 500, as any other bad answer.

The session owns the connection: its reads (``conn.buf`` is its buffer),
its writes, its protocol's liveness. The connection is in ``UPGRADED``,
which the reaper leaves alone. A drain sets ``conn.closing`` and cancels
``conn.takeover``: a session runs its protocol inside that scope and says
goodbye after it (a WebSocket's close 1001); one still running at
``drain_timeout`` is cancelled as any connection. A session that raises
closes its connection, with a log line; the worker serves on.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

from ..http import HTTPError, Request, Response
from .state import Session

__all__ = ["Upgrade", "asks_upgrade", "websocket_accept"]

# RFC 6455 section 1.3: what the server appends to the client's key.
_WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Upgrade(Response):
    """A handler's answer that switches the connection to ``protocol``
    (lower case, as the request's ``Upgrade`` header names it) and serves it
    with ``session`` (module doc)."""

    __slots__ = ("protocol", "session")

    def __init__(
        self, session: Session, protocol: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        switching = ((b"upgrade", protocol), (b"connection", b"Upgrade"), *headers)
        super().__init__(101, b"", b"", switching)
        self.session = session
        self.protocol = protocol


def asks_upgrade(request: Request) -> bytes | None:
    """The protocol a GET without a body asks to switch to (lower case), or
    None: its ``Upgrade`` header, when its ``Connection`` names ``upgrade``."""
    if request.method != b"GET" or request.body:
        return None
    wanted = None
    connection = False
    for name, value in request.headers:
        if name == b"upgrade":
            wanted = value.strip().lower()
        elif name == b"connection":
            connection = connection or b"upgrade" in (t.strip() for t in value.lower().split(b","))
    return wanted if connection else None


def websocket_accept(request: Request) -> bytes:
    """The ``Sec-WebSocket-Accept`` a WebSocket handshake's key asks for
    (RFC 6455 section 4.2.2), for the ``Upgrade`` that answers it.

    Raises:
        HTTPError: 426 for a version other than 13; 400 without a key.
    """
    if request.header(b"sec-websocket-version") != b"13":
        version = ((b"sec-websocket-version", b"13"),)
        raise HTTPError(426, "upgrade_required", "WebSocket version 13 only", version)
    nonce = request.header(b"sec-websocket-key")
    if not nonce:
        raise HTTPError(400, "bad_handshake", "Sec-WebSocket-Key is missing")
    return base64.b64encode(hashlib.sha1(nonce.strip() + _WEBSOCKET_GUID).digest())
