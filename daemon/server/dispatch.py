"""Dispatch: a parsed request to its encoded response, whichever parser read it.

Strategy: everything after parsing is here and nowhere else: the snapshot
answer for a GET or HEAD of a snapshot's path (the h11 path's way to a
snapshot the fast path declined), routing (404 and 405 with ``Allow``), the
guard's 401/403/429, the admin audit line, the handler, and the encoding of
its result or its error. A parser hands over method, target, headers and
body and gets bytes to send: no socket is read or written here, so any
parser (h11 today) can call it and it can be tested without one.

Errors are values with a status, as in h11: a handler raises ``HTTPError``
and is answered as it says; anything else a handler raises, or returns that
is not a ``Response`` with a final status, is that request's 500 and one log
line naming the route; never the connection's or the worker's end.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import cast

from ..app import App
from ..auth import Key
from ..http import (
    REQUEST_ID,
    HTTPError,
    Request,
    Response,
    Streamed,
    encode_response,
    error_response,
    valid_request_id,
)
from ..latency import Recorder
from ..routing import BoundRoute, method_not_allowed
from .state import Conn
from .upgrade import Upgrade, asks_upgrade

__all__ = ["FORWARDED", "Dispatched", "dispatch"]

# The recorder of requests a worker forwarded to the owner, from their bytes
# to the owner's answer sent on (the route's own recorder, at the owner,
# times its part).
FORWARDED = "<forwarded>"

log = logging.getLogger("sprintd.server")

# What a handler may raise, or cause by what it returns, that costs only its
# request (a 500) and not the connection or the worker. SystemExit is one:
# in a handler it is a plugin calling sys.exit(), a bug, since the daemon
# itself stops by signals. Other BaseExceptions are left to propagate:
# trio's Cancelled (and groups of it) is how drain and the timeouts stop a
# handler, and KeyboardInterrupt is the operator's.
_PLUGIN_FAULTS = (Exception, SystemExit)


# What ``dispatch`` gives: the response (or a coroutine for it), the recorder
# it counts in, the X-Request-ID it carries (b"" for none) and the name of
# the key admitted (None without one): the last two for the access log.
Dispatched = tuple[bytes | Streamed | Awaitable[bytes | Streamed], Recorder, bytes, str | None]


def dispatch(
    app: App,
    unmatched: Recorder,
    method: bytes,
    target: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    keep_alive: bool,
    conn: Conn | None = None,
    received_ns: int = 0,
) -> Dispatched:
    """The encoded response to a parsed request, and the recorder it counts in
    (``unmatched`` for a request no route or snapshot takes).

    A synchronous handler is answered here; an async one (or the owner's
    answer to a forwarded request) comes back as an awaitable that gives the
    encoded response, so a sync route pays for no coroutine at all. A
    handler's ``Streamed`` answer is handed on as it is, for the caller to
    run with the connection (``respond``). With auth
    enabled, whatever is not open is answered only once the guard admits it
    (``conn``'s socket names the peer in audit lines).
    ``received_ns`` becomes the request's ``received_ns``. A route's
    ``Upgrade`` answer is encoded as its 101 and leaves its session on
    ``conn.session`` (``server.upgrade``).

    X-Request-ID: the client's is echoed when it is valid
    (``http.valid_request_id``) and replaced by a made one when it is not;
    a request without one gets a made one (``http.RequestIds``), except on
    a snapshot, which is answered as pre-encoded, without one, exactly as
    the fast path answers it.
    """
    path, _, query = target.partition(b"?")
    head = method == b"HEAD"
    guard = app.guard
    snap = None
    if head or method == b"GET":
        snap = app.snapshots.get(path.decode("latin-1"))
        # A snapshot answers its exact path; with a query, a route for the
        # path (GET /v1/book/X?depth=50) is asked instead, here or, in a
        # worker that forwards, perhaps at the owner.
        if (
            snap is not None
            and query
            and (app.forward is not None or app.router.has_route(method, path))
        ):
            snap = None
    # A loop, not Request.header: no call for the usual request without one.
    given = None
    for name, value in headers:
        if name == REQUEST_ID:
            given = value
            break
    if given is not None and valid_request_id(given):
        request_id = given
    elif given is None and snap is not None:
        request_id = b""
    else:
        # Made inline, with no call: this is every dynamic request's cost.
        ids = app.request_ids
        ids.count += 1
        request_id = b"%s%012x" % (ids.prefix, ids.count)
    if snap is not None:
        recorder = snap.recorder
        key_name = None
        if guard is not None and snap.scope != "open":
            admitted = guard.admit(
                headers, snap.scope, method, path, None if conn is None else conn.sock
            )
            if isinstance(admitted, HTTPError):
                refused = Request(method, path, query, headers, body, request_id=request_id)
                error = _error(admitted, refused, recorder, keep_alive=keep_alive)
                return error, recorder, request_id, None
            key_name = admitted.name
        recorder.count_status(snap.status)
        if keep_alive and not request_id:
            return snap.response(head=head), recorder, request_id, key_name
        encoded = encode_response(
            snap.status,
            snap.body,
            snap.content_type,
            head=head,
            keep_alive=keep_alive,
            request_id=request_id,
        )
        return encoded, recorder, request_id, key_name
    request = Request(method, path, query, headers, body, received_ns, request_id)
    try:
        bound = app.router.resolve(method, path, request)
    except HTTPError as exc:
        if app.forward is not None:
            # Not this worker's: the owner of the plugins' state answers it,
            # its guard and all (``server.owner``), with this request's id.
            if app.relay is not None and conn is not None and asks_upgrade(request):
                # A switch of protocols: the connection is the owner's from
                # its answer on, so it goes there whole.
                relayed = app.relay(conn, method, target, headers, body)
                return relayed, app.recorder(FORWARDED), request_id, None
            if given != request_id:
                headers = [(n, v) for n, v in headers if n != REQUEST_ID]
                headers.append((REQUEST_ID, request_id))
            forwarded = app.forward(method, target, headers, body, keep_alive)
            return forwarded, app.recorder(FORWARDED), request_id, None
        if app.snapshots.get(path.decode("latin-1")) is not None:
            # A snapshot path without a route for this method: the router
            # knows only routes, so it said 404 or left GET and HEAD out.
            exc = method_not_allowed(exc.allowed | {b"GET", b"HEAD"})
        return _error(exc, request, unmatched, keep_alive=keep_alive), unmatched, request_id, None
    recorder = bound.recorder
    key = None
    if guard is not None and bound.scope != "open":
        admitted = guard.admit(
            headers, bound.scope, method, path, None if conn is None else conn.sock
        )
        if isinstance(admitted, HTTPError):
            error = _error(admitted, request, recorder, keep_alive=keep_alive)
            return error, recorder, request_id, None
        key = admitted
        request.key = key.name
    key_name = None if key is None else key.name
    if bound.scope == "admin":
        action = _admin_action(app, bound, request, key, conn, head=head, keep_alive=keep_alive)
        return action, recorder, request_id, key_name
    if bound.is_async:
        later = _respond_later(bound, request, conn, head=head, keep_alive=keep_alive)
        return later, recorder, request_id, key_name
    try:
        answer = _encode(
            bound.handler(request),
            request,
            conn,
            recorder,
            head=head,
            keep_alive=keep_alive,
            request_id=request_id,
        )
    except _PLUGIN_FAULTS as exc:
        return _failed(exc, request, bound, keep_alive=keep_alive), recorder, request_id, key_name
    return answer, recorder, request_id, key_name


async def _respond_later(
    bound: BoundRoute, request: Request, conn: Conn | None, *, head: bool, keep_alive: bool
) -> bytes | Streamed:
    recorder = bound.recorder
    try:
        response = await cast(Awaitable[object], bound.handler(request))
        return _encode(
            response,
            request,
            conn,
            recorder,
            head=head,
            keep_alive=keep_alive,
            request_id=request.request_id,
        )
    except _PLUGIN_FAULTS as exc:
        return _failed(exc, request, bound, keep_alive=keep_alive)


async def _admin_action(
    app: App,
    bound: BoundRoute,
    request: Request,
    key: Key | None,
    conn: Conn | None,
    *,
    head: bool,
    keep_alive: bool,
) -> bytes:
    """Run an admin route's handler and write the action, with its outcome, to the audit log."""
    status = 500
    try:
        response: object = bound.handler(request)
        if bound.is_async:
            response = await cast(Awaitable[object], response)
        encoded = _encode(
            response,
            request,
            conn,
            bound.recorder,
            head=head,
            keep_alive=keep_alive,
            request_id=request.request_id,
        )
        if isinstance(encoded, Streamed):
            raise TypeError("an admin route answers with a Response, whole, for the audit line")
        status = cast(Response, response).status  # _encode has checked it is one
    except _PLUGIN_FAULTS as exc:
        if isinstance(exc, HTTPError):
            status = exc.status
        encoded = _failed(exc, request, bound, keep_alive=keep_alive)
    app.audit.emit(
        "admin_action",
        key=None if key is None else key.name,
        method=request.method.decode("latin-1"),
        path=request.path.decode("latin-1"),
        status=status,
    )
    return encoded


def _encode(
    response: object,
    request: Request,
    conn: Conn | None,
    recorder: Recorder,
    *,
    head: bool,
    keep_alive: bool,
    request_id: bytes,
) -> bytes | Streamed:
    """A handler's result as bytes (a ``Streamed`` one as it is: its status
    is counted once it is known; an ``Upgrade`` for a request that asked for
    its protocol as its 101, its session left on ``conn``).

    Raises:
        TypeError: the handler returned something other than a ``Response``, or
            one whose fields do not encode (a str body or header set after it
            was made).
        ValueError: its status is not a final one (200-599): a 1xx would leave
            the client waiting for the response that never comes; or it is an
            ``Upgrade`` the request did not ask for.
    """
    # ``type() is`` first, so the usual Response costs no call to check.
    if type(response) is not Response and not isinstance(response, Response):
        if isinstance(response, Streamed):
            return response
        raise TypeError(f"the handler returned {type(response).__name__}, not a Response")
    status = response.status
    if not 200 <= status <= 599:
        if type(response) is Upgrade and conn is not None:
            return _switch(response, request, conn)
        raise ValueError(f"the handler's status {status} is not a final one (200-599)")
    encoded = encode_response(
        status,
        response.body,
        response.content_type,
        response.headers,
        head=head,
        keep_alive=keep_alive,
        request_id=request_id,
    )
    recorder.count_status(status)
    return encoded


def _switch(response: Upgrade, request: Request, conn: Conn) -> bytes:
    """The 101 for an ``Upgrade``, its session left for the h11 path to run."""
    if asks_upgrade(request) != response.protocol:
        raise ValueError(
            f"the handler answered Upgrade to {response.protocol!r}, which the request "
            "did not ask for (a GET without a body, with Upgrade and Connection: upgrade)"
        )
    conn.session = response.session
    # No "connection: close": the connection goes on, in the new protocol.
    return encode_response(101, b"", b"", response.headers)


def _error(exc: HTTPError, request: Request, recorder: Recorder, *, keep_alive: bool) -> bytes:
    encoded = error_response(
        exc.status,
        exc.code,
        exc.message,
        exc.headers,
        keep_alive=keep_alive,
        msgpack_=request.wants_msgpack(),
        head=request.method == b"HEAD",
        request_id=request.request_id,
    )
    recorder.count_status(exc.status)
    return encoded


def _failed(exc: BaseException, request: Request, bound: BoundRoute, *, keep_alive: bool) -> bytes:
    """What a handler raised, or its result caused, as a response.

    An ``HTTPError`` is answered as it says. Anything else is the route's
    fault: one log line names the route by method and pattern, with the path
    asked and the exception (its traceback after), and the request is a 500.
    """
    if isinstance(exc, HTTPError):
        try:
            return _error(exc, request, bound.recorder, keep_alive=keep_alive)
        except Exception as bad:  # a plugin's HTTPError that does not encode
            exc = bad
    route = bound.route
    log.error(
        "handler failed: %s %s (%s): %r",
        route.method.upper(),
        route.path,
        request.path.decode("latin-1"),
        exc,
        exc_info=exc,
        extra={"request_id": request.request_id.decode("ascii")},
    )
    bound.recorder.count_status(500)
    return error_response(
        500,
        "internal_error",
        "the handler failed; see the daemon's log",
        keep_alive=keep_alive,
        msgpack_=request.wants_msgpack(),
        head=request.method == b"HEAD",
        request_id=request.request_id,
    )
