"""The h11 path: every request the fast path declined.

Strategy: h11 parses; sprintd answers. A fresh ``h11.Connection`` reads one
request (head, then body), so h11's state machine decides what is malformed,
and its ``error_status_hint`` picks the status (400, 431 for a head over
the limit, or 501 for a transfer coding other than chunked, as RFC 9112
section 6.1 asks). The response is encoded by ``http.encode_response``, the encoder
the fast path's snapshots use, and keep-alive follows RFC 9112 section 9.3:
HTTP/1.1 persists unless either side says ``Connection: close``; HTTP/1.0
closes. What h11 received past the request's end is handed back to the
connection loop, so pipelined requests keep their order.

h11 parses and validates the head (request line, headers, Content-Length and
Transfer-Encoding); a Content-Length body is then framed here from the bytes
h11 has not consumed, and a chunked one is read through h11's events. Bodies
are limited twice: a Content-Length over the limit is refused before a byte
of the body is read (413 and close, since the body would have to be read to
keep the connection), and a chunked body is counted as it comes.

Where h11 is more lenient than RFC 9110/9112, this module is not: a version
other than HTTP/1.0 and 1.1 is a 505, a control character in a field value a
400, and a request framed both ways is read chunked and its connection
closed (RFC 9112 section 6.1). It is also as lenient as the RFC asks: empty
lines before a request line are skipped (section 2.2), and an absolute-form
target is routed by its path (section 3.2.2). A response that closes the
connection is followed by a lingering close, so that the peer reads it
rather than a reset.

A request that asks to upgrade (``Upgrade``) is read here, never on the
fast path or by the strict parser, which decline the header; when its
route answers ``Upgrade``, the 101 is sent as any response and the
connection is then the route's session's (``server.upgrade``), with what
followed the request, until the session returns and the connection closes.
"""

from __future__ import annotations

import logging
import re
import socket
from time import perf_counter_ns

import h11
import trio

from ..app import App
from ..http import error_response
from ..latency import Recorder
from ..sockio import recv, send_all
from .limits import MAX_EMPTY_LINES
from .respond import close_lingering, respond
from .state import BODY, BUSY, HEAD, UPGRADED, Conn

__all__ = ["H11Path"]

log = logging.getLogger("sprintd.server")


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# A control character other than HTAB, and other than CR and LF, which end
# lines and are h11's to judge.
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_EMPTY_LINE = re.compile(rb"\r?\n")
_ABSOLUTE = re.compile(rb"(?i:https?)://[^/?#]*")


class H11Path:
    """The h11 path of one server: its limits, and where its requests go.

    ``max_head`` and ``max_body`` are the server's limits (a reload makes a
    new ``H11Path``); ``malformed`` records the requests refused before they
    reached dispatch, ``unmatched`` those no route or snapshot took.
    """

    __slots__ = ("app", "malformed", "max_body", "max_head", "unmatched")

    def __init__(
        self, app: App, max_head: int, max_body: int, malformed: Recorder, unmatched: Recorder
    ) -> None:
        self.app = app
        self.max_head = max_head
        self.max_body = max_body
        self.malformed = malformed
        self.unmatched = unmatched

    async def handle(self, conn: Conn, data: bytes, t0: int) -> bytes | None:
        """Serve one request starting at ``data``; return what followed it, or None to close."""
        sock = conn.sock
        view = memoryview(conn.buf)
        conn.state = HEAD
        if data[0] in b"\r\n":
            data = await _skip_empty_lines(sock, view, data)
            if not data:
                return None
        parser = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_head)
        parser.receive_data(data)
        fed = len(data)
        try:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                # The head in pieces: kept, to be searched whole below.
                parts = [data]
                while event is h11.NEED_DATA:
                    more = await recv(sock, view)
                    parts.append(more)
                    parser.receive_data(more)
                    fed += len(more)
                    event = parser.next_event()
                data = b"".join(parts)
            if type(event) is h11.ConnectionClosed:
                return None
            request = event
            if type(request) is not h11.Request:  # h11 yields nothing else at IDLE
                return None
            version = request.http_version
            if version not in {b"1.1", b"1.0"}:
                message = f"HTTP/{version.decode()} is not spoken here; HTTP/1.1 is"
                await _refuse(self, conn, 505, "http_version_not_supported", message, t0=t0)
                return None
            rest = parser.trailing_data[0]
            size = fed - len(rest)
            # h11 limits only a head still arriving; one that came whole is
            # measured here, so the limit does not depend on how it was sent.
            if size > self.max_head:
                message = f"request head over {self.max_head} bytes"
                await _refuse(self, conn, 431, "header_too_large", message, t0=t0)
                return None
            # h11 admits any byte but NUL and whitespace in a field value; RFC
            # 9110 section 5.5 admits no control but HTAB. The request line and
            # the field names are h11's tokens, so a control found in the head
            # is in a value: one search of the head, not one per field.
            if _CONTROL.search(data, 0, size) is not None:
                message = "a control character in a header field value"
                await _refuse(self, conn, 400, "bad_request", message, t0=t0)
                return None
            # h11's Headers is a Python-level sequence: read it once, in one pass.
            headers = list(request.headers)
            keep_alive = version == b"1.1"
            length = -1  # no Content-Length
            chunked = expect = False
            for name, value in headers:
                if name == b"content-length":
                    length = int(value)  # h11 has validated it
                elif name == b"transfer-encoding":
                    chunked = True  # h11 admits chunked alone
                elif name == b"connection":
                    keep_alive = keep_alive and b"close" not in _tokens(value)
                elif name == b"expect":
                    expect = value.lower() == b"100-continue"
            if chunked:
                # Both framings (RFC 9112 section 6.1): Transfer-Encoding frames
                # the body, and the connection closes after the response, since
                # a proxy in front that went by Content-Length reads the bytes
                # after it differently (request smuggling).
                keep_alive = keep_alive and length < 0
            elif length > self.max_body:
                await _refuse_body(self, conn, t0=t0)
                return None
            conn.state = BODY
            if chunked:
                if expect:
                    await send_all(sock, _CONTINUE)
                read = await _read_chunked(self, parser, sock, view)
            else:
                read = await _read_length(rest, length if length > 0 else 0, sock, view, expect)
            if read is None:
                await _refuse_body(self, conn, t0=t0)
                return None
            if not read:  # the peer closed before its body ended
                return None
            body, rest = read
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            code = "not_implemented" if status == 501 else "bad_request"
            await _refuse(self, conn, status, code, str(exc), t0=t0)
            return None

        target = request.target
        if target[:1] != b"/":
            target = _origin_form(target)
        conn.state = BUSY
        if await respond(
            self.app, self.unmatched, conn, request.method, target, headers, body, keep_alive, t0
        ):
            if conn.session is not None:
                await _take_over(conn, rest)
                return None
            return rest
        if rest:  # a request after the last one: closing on it would be a reset
            await close_lingering(conn)
        return None


async def _take_over(conn: Conn, rest: bytes) -> None:
    """Serve the session a route's ``Upgrade`` left (``server.upgrade``) until it returns."""
    session, conn.session = conn.session, None
    assert session is not None  # the caller's test
    conn.takeover = trio.CancelScope()
    if conn.closing:  # a drain began while the handshake was answered
        conn.takeover.cancel()
    conn.state = UPGRADED
    try:
        await session(conn, rest)
    except OSError:
        raise  # the peer went away: the connection's end, as for any response
    except Exception:
        log.exception("an upgraded connection's session failed; closed it")


# A body read: (body, what followed it); () when the peer closed first; None
# when it went over the limit.
_Read = tuple[bytes, bytes] | tuple[()] | None


async def _read_length(
    rest: bytes, length: int, sock: socket.socket, view: memoryview, expect: bool
) -> _Read:
    """A Content-Length body, framed here: h11 has parsed and checked the head,
    and its two events for a body already in hand cost a third of its parse."""
    if len(rest) >= length:
        return rest[:length], rest[length:]
    if expect:
        await send_all(sock, _CONTINUE)
    parts = [rest]
    have = len(rest)
    while have < length:
        more = await recv(sock, view)
        if not more:
            return ()
        parts.append(more)
        have += len(more)
    whole = b"".join(parts)
    return whole[:length], whole[length:]


async def _read_chunked(
    path: H11Path, parser: h11.Connection, sock: socket.socket, view: memoryview
) -> _Read:
    """A chunked body, through h11's events; its size is counted as it comes."""
    chunks: list[bytes] = []
    size = 0
    while True:
        event = parser.next_event()
        if event is h11.NEED_DATA:
            parser.receive_data(await recv(sock, view))
        elif type(event) is h11.Data:
            size += len(event.data)
            if size > path.max_body:
                return None
            chunks.append(event.data)
        elif type(event) is h11.EndOfMessage:
            rest, _ = parser.trailing_data
            return b"".join(chunks), rest
        else:  # ConnectionClosed before the body ended
            return ()


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip() for token in value.lower().split(b",")]


async def _skip_empty_lines(sock: socket.socket, view: memoryview, data: bytes) -> bytes:
    """``data`` without the empty lines (CRLF or LF) before a request line,
    which RFC 9112 section 2.2 asks a server to ignore (a client may end a
    body with one more CRLF); b"" when the peer closed first.

    After ``MAX_EMPTY_LINES`` the rest is left to h11, which refuses it.
    """
    for _ in range(MAX_EMPTY_LINES):
        while data == b"\r":  # half a CRLF: its LF is on its way, or junk
            more = await recv(sock, view)
            if not more:
                return b""
            data += more
        found = _EMPTY_LINE.match(data)
        if found is None:
            break
        data = data[found.end() :]
        if not data:
            data = await recv(sock, view)
            if not data:
                return b""
    return data


def _origin_form(target: bytes) -> bytes:
    """An absolute-form target (``http://host:port/path?query``) as the
    origin form it names (``/path?query``), which is what is routed. RFC 9112
    section 3.2.2 has a server accept the absolute form; the authority is
    the Host header's business, which h11 has already required."""
    found = _ABSOLUTE.match(target)
    if found is None:  # "*" (OPTIONS), the authority form (CONNECT)
        return target
    rest = target[found.end() :]
    return rest if rest[:1] == b"/" else b"/" + rest


async def _refuse_body(path: H11Path, conn: Conn, *, t0: int) -> None:
    message = f"body over {path.max_body} bytes"
    await _refuse(path, conn, 413, "body_too_large", message, t0=t0)


async def _refuse(
    path: H11Path, conn: Conn, status: int, code: str, message: str, *, t0: int
) -> None:
    """Answer an error that ends the connection, and linger before the close:
    the peer may be sending still (a body refused, garbage), and input
    left unread when the socket closes becomes a reset."""
    await send_all(conn.sock, error_response(status, code, message, keep_alive=False))
    path.malformed.record(perf_counter_ns() - t0)
    path.malformed.count_status(status)
    await close_lingering(conn)
