"""Requests, responses and errors as the handlers see them.

h11 parses every request the fast path does not take, but responses are
encoded here, once, into a single bytes object: the same encoder builds the
fast path's snapshots and the h11 path's answers, so the two cannot disagree
on a header. Errors are values with a status hint, as in h11: a handler raises
``HTTPError(status, code, message)`` and the server answers
``{"error": {"code", "message"}}`` with that status.

A handler that cannot give its whole answer at once (a mounted ASGI
application streaming its body) returns ``Streamed``: the server then calls
its producer with a ``ResponseWriter``, through which it sends the head and
the body's pieces (chunked, or until the close on a closing connection).
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
from collections.abc import Awaitable, Callable, Sequence
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol
from urllib.parse import parse_qsl

import cysimdjson
import msgpack

__all__ = [
    "JSON",
    "MSGPACK",
    "REQUEST_ID",
    "HTTPError",
    "Request",
    "RequestIds",
    "Response",
    "ResponseWriter",
    "Streamed",
    "date_line",
    "encode_head",
    "encode_response",
    "error_response",
    "retry_after_header",
    "tick_date",
    "valid_request_id",
]

JSON = b"application/json"
MSGPACK = b"application/msgpack"
SERVER_LINE = b"server: sprintd\r\n"
REQUEST_ID = b"x-request-id"
# What a client's X-Request-ID may be to be passed on as it is: visible
# ASCII, no spaces, short enough for a log line. Anything else is replaced.
_VALID_ID = re.compile(rb"[\x21-\x7e]{1,128}")
_JSON_PARSER = cysimdjson.JSONParser()

_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode("ascii")
    for status in HTTPStatus
}


def status_line(status: int) -> bytes:
    line = _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} \r\n".encode("ascii")


# The Date header changes once a second; the server's clock task calls
# tick_date() and republishes the snapshots, so no request formats a date.
_date = [b""]


def tick_date(now: float | None = None) -> bytes:
    _date[0] = f"date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
    return _date[0]


def date_line() -> bytes:
    return _date[0]


tick_date()


def retry_after_header(wait: float) -> bytes:
    """A ``Retry-After`` value: whole seconds (RFC 9110), rounded up, at least 1."""
    return b"%d" % max(1, math.ceil(wait))


def valid_request_id(value: bytes) -> bool:
    """Whether a client's X-Request-ID can be echoed and logged as it is."""
    return _VALID_ID.fullmatch(value) is not None


class RequestIds:
    """The ids a worker makes for requests that bring none: a prefix random
    per worker start, then a counter, fixed in width.

    Unique across workers and restarts as far as 40 random bits go, and
    made with one formatting operation and no call: ``dispatch`` reads
    ``prefix`` and bumps ``count`` itself, since this is the dynamic path's
    every request. uuid4 costs a system call and several Python calls.
    """

    __slots__ = ("count", "prefix")

    def __init__(self) -> None:
        self.prefix = os.urandom(5).hex().encode("ascii") + b"-"
        self.count = 0


class HTTPError(Exception):
    """A failure that maps to an HTTP status, with a machine-readable code.

    ``headers`` go out with the error (``Allow`` with a 405); ``retry_after``
    (seconds) adds the ``Retry-After`` a 429 or 503 should carry; ``allowed``
    is the methods a 405 names, empty otherwise.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: Sequence[tuple[bytes, bytes]] = (),
        allowed: frozenset[bytes] = frozenset(),
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        if retry_after is not None:
            headers = (*headers, (b"retry-after", retry_after_header(retry_after)))
        self.headers = headers
        self.allowed = allowed


class Request:
    """One parsed request. ``params`` holds the route's ``{name}`` segments.

    ``received_ns`` is the ``perf_counter_ns`` at which the server took the
    request's first bytes in hand (after the read that brought them, or,
    for a pipelined request, once the one before it was answered): the
    start of the route's own latency, for a handler that times its work
    from the wire (the prices plugin). 0 when no server read it.
    ``request_id`` is the X-Request-ID its response carries. ``key`` is the
    name of the API key the guard admitted it with; None on an open route or
    with ``[auth]`` off.
    """

    __slots__ = (
        "body",
        "headers",
        "key",
        "method",
        "params",
        "path",
        "query",
        "received_ns",
        "request_id",
    )

    def __init__(
        self,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes = b"",
        received_ns: int = 0,
        request_id: bytes = b"",
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.received_ns = received_ns
        # The client's, or one made: for a handler's log lines
        # (``extra={"request_id": ...}``).
        self.request_id = request_id
        self.params: dict[str, str] = {}
        self.key: str | None = None

    def header(self, name: bytes) -> bytes | None:
        """The first value of a header; ``name`` in lower case."""
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def content_type(self) -> bytes:
        value = self.header(b"content-type")
        if not value:
            return b""
        if value in (JSON, MSGPACK):
            # As nearly every client sends it: no parameters to cut, no case to fold.
            return value
        return value.split(b";", 1)[0].strip().lower()

    def wants_msgpack(self) -> bool:
        accept = self.header(b"accept")
        return self.content_type == MSGPACK or (accept is not None and MSGPACK in accept)

    def query_params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query.decode("latin-1"), keep_blank_values=True))

    def data(self) -> Any:
        """The body decoded from JSON (cysimdjson) or msgpack, by content type.

        Raises:
            HTTPError: 400 for a body that does not decode, 415 for another type.
        """
        kind = self.content_type
        if kind == MSGPACK:
            try:
                return msgpack.unpackb(self.body, raw=False, strict_map_key=True)
            except (ValueError, msgpack.UnpackException) as exc:
                raise HTTPError(400, "invalid_body", f"body is not valid msgpack: {exc}") from None
        if kind not in (JSON, b""):
            raise HTTPError(
                415, "unsupported_media_type", "send application/json or application/msgpack"
            )
        try:
            # One parser for the process is safe: parse and export run back
            # to back, with no await between them, so no other task's parse
            # can reuse the buffer the document reads from. (A parser made
            # per call must outlive its document: the document does not keep
            # it alive, and reading one whose parser is gone crashes.)
            return _JSON_PARSER.parse(self.body).export()
        except (ValueError, RuntimeError) as exc:
            # cysimdjson raises RuntimeError for some documents it refuses
            # (nesting over 1024 deep, an integer below -2**63), ValueError
            # for the rest: both are the client's bad body, not our failure.
            raise HTTPError(400, "invalid_json", f"body is not valid JSON: {exc}") from None


class Response:
    """A handler's answer; ``encode_response`` turns it into bytes.

    Raises:
        ValueError: ``status`` is outside 100-599, the range RFC 9110 section 15
            gives status codes.
        TypeError: ``body`` is not bytes (a str has no length on the wire until
            it is encoded, and which encoding is the handler's to say).
    """

    __slots__ = ("body", "content_type", "headers", "status")

    def __init__(
        self,
        status: int = 200,
        body: bytes = b"",
        content_type: bytes = JSON,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        # A plugin's mistake, caught where it is made: the request it answers
        # becomes a 500. ``type() is`` first: no call for the usual bytes.
        if not 100 <= status <= 599:
            raise ValueError(f"status {status} is outside 100-599")
        if type(body) is not bytes and not isinstance(body, bytes):
            raise TypeError(f"a response body is bytes, not {type(body).__name__}")
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers

    @classmethod
    def data(cls, value: Any, status: int = 200, *, msgpack_: bool = False) -> Response:
        """A JSON (or msgpack) response from plain Python data."""
        if msgpack_:
            return cls(status, msgpack.packb(value, use_bin_type=True), MSGPACK)
        return cls(status, json.dumps(value, separators=(",", ":")).encode("utf-8"), JSON)


class ResponseWriter(Protocol):
    """How a ``Streamed`` response's producer answers: ``whole`` once, or
    ``start`` once and then ``write`` any number of times; the server ends the
    body when the producer returns. A HEAD, a 204 or a 304 is sent without
    its body whatever is written. A producer that raises before it has
    answered is the request's 500 (an ``HTTPError`` answered as it says);
    after ``start``, the connection is closed with the body cut short.
    """

    @property
    def sock(self) -> socket.socket:
        """The connection's socket, for its addresses: never read or write it."""

    async def whole(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        """The whole answer, its Content-Length counted here."""

    async def start(
        self, status: int, content_type: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        """The head of an answer whose body follows in ``write`` calls: chunked,
        or, when ``headers`` has a Content-Length, as it is and held to it."""

    async def write(self, chunk: bytes) -> None:
        """A piece of the body, sent before this returns (an empty one is nothing)."""


class Streamed:
    """A handler's answer that ``produce`` gives later, through a ``ResponseWriter``.

    The producer runs in the connection's task, after the guard and routing,
    with the connection's timeouts and drain as for any handler.
    """

    __slots__ = ("produce",)

    def __init__(self, produce: Callable[[ResponseWriter], Awaitable[None]]) -> None:
        self.produce = produce


# What a keep-alive answer without extra headers has before and after the Date
# line, by (status, content type): the status line, then the server and
# content-type lines. Made on first use, so the usual answers cost one
# formatting call; bounded, since a plugin may use any content type.
_FIXED: dict[tuple[int, bytes], tuple[bytes, bytes]] = {}
MAX_FIXED = 256
_USUAL = b"%s%s%scontent-length: %d\r\n\r\n%s"
_USUAL_WITH_ID = b"%s%s%sx-request-id: %s\r\ncontent-length: %d\r\n\r\n%s"


def encode_response(
    status: int,
    body: bytes,
    content_type: bytes = JSON,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
    keep_alive: bool = True,
    request_id: bytes = b"",
) -> bytes:
    """The whole response as one bytes object, ready for one ``send``.

    ``head`` leaves the body out but keeps its Content-Length, as RFC 9110
    asks of HEAD. ``keep_alive=False`` adds ``connection: close``.
    ``request_id`` adds ``x-request-id`` (after ``headers``). A 1xx,
    204 or 304 has no content (RFC 9112 section 6.3): its body, if any, is
    not sent, since without a length it would read as the next response.
    """
    if keep_alive and not headers and not head:
        fixed = _FIXED.get((status, content_type))
        if fixed is not None:
            # The usual answer: one formatting call, no list built.
            if request_id:
                return _USUAL_WITH_ID % (fixed[0], _date[0], fixed[1], request_id, len(body), body)
            return _USUAL % (fixed[0], _date[0], fixed[1], len(body), body)
    parts = [_STATUS_LINES.get(status) or status_line(status), _date[0], SERVER_LINE]
    has_content = status >= 200 and status not in (204, 304)
    if has_content and len(_FIXED) < MAX_FIXED:
        ctype = b"content-type: " + content_type + b"\r\n" if content_type else b""
        _FIXED[status, content_type] = (parts[0], SERVER_LINE + ctype)
    if content_type and status not in (204, 304):
        parts.append(b"content-type: " + content_type + b"\r\n")
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if request_id:
        parts.append(b"x-request-id: " + request_id + b"\r\n")
    if has_content:
        parts.append(b"content-length: %d\r\n" % len(body))
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    if has_content and not head:
        parts.append(body)
    return b"".join(parts)


def encode_head(
    status: int,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    *,
    keep_alive: bool,
    chunked: bool,
) -> bytes:
    """The head of a response whose body follows it: chunked, or (``chunked``
    false) up to the connection's close, which ``keep_alive=False`` announces."""
    parts = [status_line(status), _date[0], SERVER_LINE]
    if content_type and status not in (204, 304):
        parts.append(b"content-type: " + content_type + b"\r\n")
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def error_response(
    status: int,
    code: str,
    message: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    *,
    keep_alive: bool,
    msgpack_: bool = False,
    head: bool = False,
    request_id: bytes = b"",
) -> bytes:
    """``{"error": {"code", "message"}}`` with ``status``, in JSON or msgpack;
    ``head`` for the answer to a HEAD, which has the length but not the body."""
    answer = Response.data({"error": {"code": code, "message": message}}, status, msgpack_=msgpack_)
    return encode_response(
        status,
        answer.body,
        answer.content_type,
        headers,
        head=head,
        keep_alive=keep_alive,
        request_id=request_id,
    )
