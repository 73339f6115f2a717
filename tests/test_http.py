"""Requests' bodies and responses' bytes (``sprintd.http``)."""

from __future__ import annotations

import subprocess
import sys

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sprintd import http
from sprintd.http import JSON, MSGPACK, HTTPError, Request, Response, encode_response

ORDER = b'{"symbol":"BTC-USD","side":"sell","price":"64000.00","qty":"0.5","n":[1,2.5,null]}'


def _request(body: bytes, content_type: bytes | None = JSON) -> Request:
    headers = [(b"content-type", content_type)] if content_type is not None else []
    return Request(b"POST", b"/x", b"", headers, body)


def test_json_bodies_decode_many_times_in_a_row() -> None:
    # A parser's document must not outlive it: this crashed the process once.
    for _ in range(1000):
        data = _request(ORDER).data()
    assert data == {
        "symbol": "BTC-USD",
        "side": "sell",
        "price": "64000.00",
        "qty": "0.5",
        "n": [1, 2.5, None],
    }


def test_json_decoding_does_not_crash_the_interpreter() -> None:
    code = (
        "from sprintd.http import Request\n"
        f"body = {ORDER!r}\n"
        "for _ in range(100):\n"
        "    Request(b'POST', b'/', b'', [(b'content-type', b'application/json')], body).data()\n"
        "print('ok')\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok"


def test_msgpack_bodies_decode() -> None:
    body = msgpack.packb({"symbol": "BTC-USD", "qty": "1"})
    assert _request(body, MSGPACK).data() == {"symbol": "BTC-USD", "qty": "1"}


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{bad", JSON, 400, "invalid_json"),
        (b"", JSON, 400, "invalid_json"),
        (b"\xff\xfe", JSON, 400, "invalid_json"),
        (b"\xc1", MSGPACK, 400, "invalid_body"),
        (b"{}", b"text/plain", 415, "unsupported_media_type"),
    ],
)
def test_bad_bodies_are_client_errors(
    body: bytes, content_type: bytes, status: int, code: str
) -> None:
    with pytest.raises(HTTPError) as caught:
        _request(body, content_type).data()
    assert (caught.value.status, caught.value.code) == (status, code)


@given(st.binary(max_size=64))
def test_any_json_body_decodes_or_is_a_400(body: bytes) -> None:
    try:
        _request(body).data()
    except HTTPError as exc:
        assert exc.status == 400


def test_head_keeps_the_length_and_drops_the_body() -> None:
    get = encode_response(200, b"hello")
    head = encode_response(200, b"hello", head=True)
    assert get.endswith(b"\r\n\r\nhello")
    assert head.endswith(b"\r\n\r\n")
    assert b"content-length: 5\r\n" in head


def test_msgpack_responses_say_so() -> None:
    answer = Response.data({"a": 1}, msgpack_=True)
    assert answer.content_type == MSGPACK
    assert msgpack.unpackb(answer.body) == {"a": 1}


@pytest.mark.parametrize("status", [0, 99, 600, 1000, -200])
def test_a_response_refuses_a_status_outside_100_to_599(status: int) -> None:
    with pytest.raises(ValueError, match="outside 100-599"):
        Response(status)


@pytest.mark.parametrize("body", ["text", None, 12, ["a"]])
def test_a_response_refuses_a_body_that_is_not_bytes(body: object) -> None:
    with pytest.raises(TypeError, match="bytes"):
        Response(200, body)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [100, 200, 204, 304, 599])
def test_a_response_takes_any_status_in_range(status: int) -> None:
    assert Response(status, b"x").status == status


@pytest.mark.parametrize("status", [204, 304])
def test_a_response_without_content_sends_no_body(status: int) -> None:
    # A body after a head without a length would read as the next response.
    encoded = encode_response(status, b"null")
    assert encoded.endswith(b"\r\n\r\n")
    assert b"content-length" not in encoded


@given(
    st.sampled_from([200, 201, 202, 204, 304, 400, 404, 429, 500, 503, 599, 299]),
    st.sampled_from([JSON, MSGPACK, b"text/plain; charset=utf-8", b""]),
    st.binary(max_size=64),
    st.booleans(),
    st.booleans(),
    st.lists(st.tuples(st.sampled_from([b"x-a", b"retry-after"]), st.binary(max_size=8))),
)
def test_the_usual_answer_is_encoded_as_any_other(
    status: int,
    content_type: bytes,
    body: bytes,
    keep_alive: bool,
    head: bool,
    headers: list[tuple[bytes, bytes]],
) -> None:
    """The first answer of its kind is built field by field and remembered; the
    next ones of that kind take the one-call shortcut: the same bytes."""
    http._FIXED.clear()
    first = encode_response(status, body, content_type, headers, head=head, keep_alive=keep_alive)
    again = encode_response(status, body, content_type, headers, head=head, keep_alive=keep_alive)
    assert again == first
    # And from a cache that already knew it (a snapshot's, an earlier request's).
    http._FIXED.clear()
    encode_response(status, b"", content_type)
    assert (
        encode_response(status, body, content_type, headers, head=head, keep_alive=keep_alive)
        == first
    )
