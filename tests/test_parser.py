"""The strict parser against h11, the reference: whatever it accepts, h11 reads the same.

Heads are generated from the grammar's pieces, good and bad, then damaged at
random; for each one the parser either declines or gives exactly the
request h11 gives (method, target, every header, the body's framing, and
whether the connection stays open), and h11 never refuses a head the parser
took. Then the whole server: the same bytes to a server with the strict
parser and to one without it (h11 for everything the fast path declines)
give the same bytes back, pipelining, errors and closes included.
"""

from __future__ import annotations

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sprintd.app import Route, SnapshotSpec
from sprintd.server.parser import parse
from sprintd.testing import StaticPlugin, echo, exchange, make_app, make_server, mask_request_ids

from .fuzzing import bounded

MAX_HEAD = 16 * 1024

_methods = st.sampled_from([b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD", b"get", b"P@T"])
_targets = st.sampled_from(
    [
        b"/",
        b"/echo",
        b"/v1/orders/17?x=1&y=%20",
        b"/a?",
        b"http://h/x",
        b"*",
        b"/\xff",
        b"/a b",
        b"",
    ]
)
_versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/1.2", b"HTTP/2.0", b"http/1.1"])
_names = st.sampled_from(
    [
        b"Host",
        b"host",
        b"HOST",
        b"Content-Type",
        b"Content-Length",
        b"content-length",
        b"Connection",
        b"Transfer-Encoding",
        b"Expect",
        b"Upgrade",
        b"X-API-Key",
        b"X-Request-ID",
        b"Accept",
        b"X y",
        b"",
        b"X:",
    ]
)
_values = st.sampled_from(
    [
        b"x",
        b"127.0.0.1:8080",
        b"application/json",
        b"0",
        b"5",
        b"007",
        b"-1",
        b"1e3",
        b"99999999999999999999999",
        b"close",
        b"Close",
        b"keep-alive",
        b"upgrade",
        b"keep-alive, close",
        b"chunked",
        b"100-continue",
        b"",
        b"a  b",
        b"\tpadded\t",
        b"caf\xc3\xa9",
        b"bell\x07",
        b"nul\x00",
        b"cr\rx",
        b"req-42",
        b"r" * 129,
    ]
)
_seps = st.sampled_from([b": ", b":", b":\t", b" : ", b":  "])
_fields = st.lists(st.tuples(_names, _seps, _values), max_size=6)
_eols = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"])


@st.composite
def _heads(draw: st.DrawFn) -> bytes:
    line = draw(_methods) + b" " + draw(_targets) + b" " + draw(_versions)
    fields = draw(_fields)
    if draw(st.booleans()):
        fields.insert(draw(st.integers(0, len(fields))), (b"Host", b": ", b"h"))
    eol = draw(_eols)
    head = line + eol + b"".join(n + s + v + draw(_eols) for n, s, v in fields) + eol
    body = draw(st.binary(max_size=12))
    return head + body + draw(st.sampled_from([b"", b"GET / HTTP/1.1\r\nHost: h\r\n\r\n"]))


@st.composite
def _damaged(draw: st.DrawFn) -> bytes:
    data = draw(_heads())
    at = draw(st.integers(0, len(data)))
    cut = draw(st.integers(0, 3))
    return data[:at] + draw(st.binary(max_size=3)) + data[at + cut :]


def _h11(data: bytes) -> tuple[h11.Request, bytes, bytes, bool] | None:
    """What h11 makes of ``data``: the request, its body, what follows, keep-alive;
    None when it refuses the head or the body is not all there."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    try:
        request = conn.next_event()
        if type(request) is not h11.Request:
            return None
        chunks = []
        while True:
            event = conn.next_event()
            if type(event) is h11.Data:
                chunks.append(event.data)
            elif type(event) is h11.EndOfMessage:
                break
            else:
                return None
    except h11.RemoteProtocolError:
        return None
    keep_alive = request.http_version == b"1.1" and not any(
        b"close" in [t.strip().lower() for t in v.split(b",")]
        for n, v in request.headers
        if n == b"connection"
    )
    return request, b"".join(chunks), conn.trailing_data[0], keep_alive


def _agree(data: bytes) -> None:
    found = parse(data, 0, MAX_HEAD)
    if found is None:
        return
    method, target, headers, length, keep_alive, end = found
    assert 0 < end <= len(data) and data[end - 4 : end] == b"\r\n\r\n"
    if len(data) - end < length:
        return  # the caller reads the rest of the body first
    reference = _h11(data)
    assert reference is not None, f"the parser took a head h11 refuses: {data!r}"
    request, body, rest, h11_keep_alive = reference
    assert (method, target) == (request.method, request.target)
    assert headers == list(request.headers)
    assert data[end : end + length] == body
    assert data[end + length :] == rest
    assert keep_alive == h11_keep_alive


@given(st.one_of(_heads(), _damaged()))
@settings(max_examples=3000, suppress_health_check=[HealthCheck.too_slow])
@example(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc")
@example(b"DELETE /v1/orders/1 HTTP/1.1\r\nhost: h\r\nConnection: Close\r\n\r\n")
def test_what_the_parser_takes_h11_reads_the_same(data: bytes) -> None:
    with bounded(5):
        _agree(data)


@pytest.mark.parametrize(
    "data",
    [
        b"\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n",  # a leading empty line: h11 skips it
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",  # absolute form
        b"GET / HTTP/1.0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nX: a\x07b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\nHost: h\n\n",
        b"GET / HTTP/1.1\r\nHost: h\r\n",  # not whole yet
    ],
)
def test_what_it_leaves_to_h11(data: bytes) -> None:
    assert parse(data, 0, MAX_HEAD) is None


def test_a_head_over_the_limit_is_left_to_h11() -> None:
    data = b"GET / HTTP/1.1\r\nHost: h\r\nX: " + b"a" * 100 + b"\r\n\r\n"
    assert parse(data, 0, len(data)) is not None
    assert parse(data, 0, len(data) - 1) is None


def test_pipelined_heads_are_parsed_from_where_the_last_ended() -> None:
    one = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nhi"
    two = b"GET /b?q=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
    first = parse(one + two, 0, MAX_HEAD)
    assert first is not None
    assert first[:2] == (b"POST", b"/a") and first[3] == 2
    second = parse(one + two, first[5] + first[3], MAX_HEAD)
    assert second == (
        b"GET",
        b"/b?q=1",
        [(b"host", b"h"), (b"connection", b"close")],
        0,
        False,
        len(one + two),
    )


# Inputs that make a backtracking parser slow: each must take bounded time.
PATHOLOGICAL = [
    b"GET / HTTP/1.1\r\nHost: h\r\nX:" + b"\t" * 65000,
    b"GET / HTTP/1.1\r\nHost: h\r\nX: a" + b" " * 65000 + b"b",
    b"GET / HTTP/1.1\r\n" + b"X: a\r\n" * 10000,
    b"POST /" + b"a" * 60000 + b" HTTP/1.1\r\n",
]


@pytest.mark.parametrize("data", PATHOLOGICAL, ids=range(len(PATHOLOGICAL)))
def test_hostile_heads_cost_bounded_time(data: bytes) -> None:
    with bounded(1):
        assert parse(data, 0, 64 * 1024) is None


# --- the whole server, with and without the strict parser ---------------------

_ROUTES = [
    Route(method, path, echo)
    for method in ("POST", "PUT", "PATCH", "DELETE", "GET")
    for path in ("/echo", "/v1/orders/{order_id}")
]
_APP = make_app([StaticPlugin([SnapshotSpec("/", b'{"root":true}')], _ROUTES)])
STRICT = make_server(_APP, fast_path=False)
H11 = make_server(_APP, fast_path=False, strict=False)
_pipelined = st.lists(st.one_of(_heads(), _damaged()), min_size=1, max_size=3).map(b"".join)


@given(_pipelined)
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@example(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc" * 2)
@example(
    b"PUT /echo HTTP/1.1\r\nHost: h\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"
    b"GET / HTTP/1.1\r\n"
)
@example(b"POST /echo HTTP/1.1\r\nHost: h\r\nContent-Length: 99999\r\n\r\nabc")
async def test_the_server_answers_the_same_bytes_with_and_without_it(data: bytes) -> None:
    # Each server makes its own X-Request-IDs; a client's both echo alike.
    strict = mask_request_ids(_APP, await exchange(STRICT, data))
    assert strict == mask_request_ids(_APP, await exchange(H11, data))
