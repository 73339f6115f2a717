"""A raw RSGI app for granian's native interface, answering what the ASGI app does."""

from __future__ import annotations

# granian.rsgi re-exports the protocol type under an alias mypy's strict mode
# does not count as an export; the name is granian's documented one.
from granian.rsgi import HTTPProtocol, Scope  # type: ignore[attr-defined]

from bench.serving.payload import CONTENT_TYPE, ECHO_PATH, GET_BODY, GET_PATH

__all__ = ["app"]

_JSON = CONTENT_TYPE.decode("ascii")
_GET_HEADERS = [("content-type", _JSON)]
_NOT_FOUND = b'{"error":"not_found"}'


async def app(scope: Scope, protocol: HTTPProtocol) -> None:
    method, path = scope.method, scope.path
    if method == "GET" and path == GET_PATH:
        protocol.response_bytes(200, _GET_HEADERS, GET_BODY)
    elif method == "POST" and path == ECHO_PATH:
        body = await protocol()
        content_type = scope.headers.get("content-type") or _JSON
        protocol.response_bytes(200, [("content-type", content_type)], body)
    else:
        protocol.response_bytes(404, _GET_HEADERS, _NOT_FOUND)
