"""Streamed answers (``http.Streamed``, sent by ``server.respond``): a handler's
body in pieces, in process over a socketpair, through the real connection loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import h11
import pytest

from sprintd.http import HTTPError, ResponseWriter, Streamed
from sprintd.routing import Route
from sprintd.testing import StaticPlugin, exchange, make_app, make_server


async def _pieces(writer: ResponseWriter) -> None:
    await writer.start(200, b"text/plain", [(b"x-kind", b"pieces")])
    for piece in (b"one,", b"", b"two,", b"three"):
        await writer.write(piece)


async def _whole(writer: ResponseWriter) -> None:
    await writer.whole(201, b'{"made":true}', b"application/json")


async def _fails_first(writer: ResponseWriter) -> None:
    raise ZeroDivisionError("before the head")


async def _refuses(writer: ResponseWriter) -> None:
    raise HTTPError(409, "conflict", "taken", retry_after=2)


async def _fails_later(writer: ResponseWriter) -> None:
    await writer.start(200, b"text/plain")
    await writer.write(b"partial")
    raise ZeroDivisionError("after the head")


async def _silent(writer: ResponseWriter) -> None:
    return None


async def _sized(writer: ResponseWriter) -> None:
    await writer.start(200, b"text/plain", [(b"content-length", b"8")])
    await writer.write(b"1234")
    await writer.write(b"5678")


async def _oversized(writer: ResponseWriter) -> None:
    await writer.start(200, b"text/plain", [(b"content-length", b"4")])
    await writer.write(b"1234")
    await writer.write(b"5")


async def _undersized(writer: ResponseWriter) -> None:
    await writer.start(200, b"text/plain", [(b"content-length", b"4")])
    await writer.write(b"123")


async def _answers_then_fails(writer: ResponseWriter) -> None:
    await writer.whole(500, b"its own 500", b"text/plain")
    raise ZeroDivisionError("raised on after answering")


def _route(path: str, produce: Callable[[ResponseWriter], Awaitable[None]]) -> Route:
    return Route("GET", path, lambda request: Streamed(produce))


ROUTES = [
    _route("/pieces", _pieces),
    _route("/whole", _whole),
    _route("/fails-first", _fails_first),
    _route("/refuses", _refuses),
    _route("/fails-later", _fails_later),
    _route("/silent", _silent),
    _route("/sized", _sized),
    _route("/oversized", _oversized),
    _route("/undersized", _undersized),
    _route("/answers-then-fails", _answers_then_fails),
]


async def _answers(raw: bytes) -> list[tuple[h11.Response, bytes]]:
    """Every response on the connection, read by h11 (a client's parser)."""
    server = make_server(make_app([StaticPlugin(routes=ROUTES)]))
    data = await exchange(server, raw)
    client = h11.Connection(h11.CLIENT)
    answers: list[tuple[h11.Response, bytes]] = []
    client.receive_data(data)
    client.receive_data(b"")
    head: h11.Response | None = None
    body = b""
    while True:
        if client.our_state is h11.DONE and client.their_state is h11.DONE:
            client.start_next_cycle()
        if client.our_state is h11.IDLE:
            if not client.trailing_data[0]:
                return answers
            client.send(h11.Request(method="GET", target="/", headers=[("host", "h")]))
            client.send(h11.EndOfMessage())
        event = client.next_event()
        if type(event) is h11.Response:
            head, body = event, b""
        elif type(event) is h11.Data:
            body += event.data
        elif type(event) is h11.EndOfMessage:
            assert head is not None
            answers.append((head, body))
        else:
            return answers


def _get(path: str, extra: bytes = b"") -> bytes:
    return b"GET %s HTTP/1.1\r\nHost: h\r\n%s\r\n" % (path.encode(), extra)


async def test_a_streamed_body_is_chunked_and_the_connection_goes_on() -> None:
    answers = await _answers(_get("/pieces") + _get("/whole"))
    (first, body), (second, whole) = answers
    assert first.status_code == 200
    assert (b"transfer-encoding", b"chunked") in first.headers
    assert (b"x-kind", b"pieces") in first.headers
    assert body == b"one,two,three"
    assert second.status_code == 201
    assert whole == b'{"made":true}'


async def test_on_a_closing_connection_the_body_runs_to_the_close() -> None:
    server = make_server(make_app([StaticPlugin(routes=ROUTES)]))
    data = await exchange(server, _get("/pieces", b"Connection: close\r\n"))
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"connection: close" in head
    assert b"transfer-encoding" not in head
    assert body == b"one,two,three"


async def test_a_head_gets_the_head_alone() -> None:
    raw = b"HEAD /pieces HTTP/1.1\r\nHost: h\r\n\r\n" + _get("/whole")
    server = make_server(make_app([StaticPlugin(routes=ROUTES)]))
    data = await exchange(server, raw)
    assert data.count(b"HTTP/1.1 ") == 2
    assert b"one," not in data
    assert data.endswith(b'{"made":true}')


@pytest.mark.parametrize("path", ["/fails-first", "/silent"])
async def test_a_producer_that_fails_before_its_head_is_a_500_and_the_connection_goes_on(
    path: str,
) -> None:
    (failed, body), (after, _) = await _answers(_get(path) + _get("/whole"))
    assert failed.status_code == 500
    assert b'"internal_error"' in body
    assert after.status_code == 201


async def test_an_http_error_from_a_producer_is_answered_as_it_says() -> None:
    ((refused, body),) = await _answers(_get("/refuses"))
    assert refused.status_code == 409
    assert (b"retry-after", b"2") in refused.headers
    assert b'"conflict"' in body


async def test_a_producer_that_fails_after_its_head_cuts_the_body_and_closes() -> None:
    server = make_server(make_app([StaticPlugin(routes=ROUTES)]))
    data = await exchange(server, _get("/fails-later") + _get("/whole"))
    # The head and the piece sent, then the close: no last chunk, so no
    # client takes the cut body for a whole one, and nothing after it.
    assert data.endswith(b"7\r\npartial\r\n")
    assert data.count(b"HTTP/1.1 ") == 1


async def test_a_body_of_a_given_length_goes_as_it_is_and_the_connection_goes_on() -> None:
    (sized, body), (after, _) = await _answers(_get("/sized") + _get("/whole"))
    assert (b"content-length", b"8") in sized.headers
    assert not any(name == b"transfer-encoding" for name, _ in sized.headers)
    assert body == b"12345678"
    assert after.status_code == 201


@pytest.mark.parametrize("path", ["/oversized", "/undersized"])
async def test_a_body_not_of_its_given_length_closes_the_connection(path: str) -> None:
    server = make_server(make_app([StaticPlugin(routes=ROUTES)]))
    data = await exchange(server, _get(path) + _get("/whole"))
    # Never more than the length said (a byte more would be read as the
    # next response), and nothing after: the client sees a short body.
    assert data.count(b"HTTP/1.1 ") == 1
    assert data.partition(b"\r\n\r\n")[2] in (b"1234", b"123")


async def test_a_producer_that_fails_after_a_whole_answer_keeps_the_connection() -> None:
    (answered, body), (after, _) = await _answers(_get("/answers-then-fails") + _get("/whole"))
    assert answered.status_code == 500
    assert body == b"its own 500"
    assert after.status_code == 201


async def test_an_admin_route_that_streams_is_a_500_and_audited_as_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    route = Route("POST", "/purge", lambda request: Streamed(_whole), scope="admin")
    app = make_app([StaticPlugin(routes=[route])])
    data = await exchange(make_server(app), b"POST /purge HTTP/1.1\r\nHost: h\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 500 ")
    (event,) = [e for e in app.audit.take_pending() if e["event"] == "admin_action"]
    assert event["status"] == 500
    # The log line says why, not that a Streamed has no status.
    assert "an admin route answers with a Response, whole" in caplog.text
