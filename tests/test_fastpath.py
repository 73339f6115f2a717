"""The fast path against h11: it declines, or it answers exactly as h11 would.

Two layers:
- the matcher: wherever ``match`` accepts a head, h11 parses the same bytes to
  a body-less GET/HEAD of that path, HTTP/1.1, keep-alive, ending where the
  matcher said it ends;
- the server: the same bytes sent to a server with the fast path (and the
  strict parser behind it), to one with the strict parser alone, and to one
  with neither (everything through h11) produce the same bytes back,
  pipelining, errors and closes included.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import h11
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sprintd.app import App, Route, SnapshotSpec
from sprintd.hookspecs import hookimpl
from sprintd.http import Request, Response
from sprintd.server.connection import HTTPServer
from sprintd.server.fastpath import match
from sprintd.testing import exchange, make_app, make_server, mask_request_ids

MAX_HEAD = 16 * 1024


class _Plugin:
    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        return [
            SnapshotSpec("/snap", b'{"price":"64250.50"}'),
            SnapshotSpec("/down", b'{"status":"fail"}', status=503),
            SnapshotSpec("/a/b", b"text", content_type=b"text/plain"),
        ]

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        def echo(request: Request) -> Response:
            return Response(200, request.body, request.content_type or b"text/plain")

        return [Route("POST", "/echo", echo), Route("GET", "/dyn", echo)]


APP = make_app([_Plugin()])
LINES = APP.snapshots.lines

# --- strategies: requests near the fast path's edge, then mutated ------------
# Mostly what the fast path takes, each part sometimes off by one thing, so
# that both sides of every rule it checks are reached often.


def _mostly(
    usual: st.SearchStrategy[str], unusual: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    return st.integers(0, 9).flatmap(lambda roll: usual if roll < 8 else unusual)


_methods = _mostly(
    st.sampled_from(["GET", "HEAD"]), st.sampled_from(["POST", "PUT", "get", "Get", "OPTIONS"])
)
_targets = _mostly(
    st.sampled_from(["/snap", "/down", "/a/b"]),
    st.sampled_from(
        [
            "/echo",
            "/dyn",
            "/nope",
            "/snap?x=1",
            "/Snap",
            "/snap/",
            "*",
            "/a%2Fb",
            "//snap",
            "http://h/snap",
            "HTTP://h:80/snap?x=1",
            "http://h",
        ]
    ),
)
_versions = _mostly(
    st.just("HTTP/1.1"),
    st.sampled_from(
        ["HTTP/1.0", "HTTP/1.2", "http/1.1", "HTTP/2.0", "HTTP/1.1 ", "HTTP/9.9", "HTTP/0.9"]
    ),
)
_names = _mostly(
    st.sampled_from(
        [
            "User-Agent",
            "Accept",
            "X-Request-Id",
            "Hostx",
            "Connection",
            "Content-Length",
            "Transfer-Encoding",
            "Expect",
            "Upgrade",
        ]
    ),
    st.sampled_from(
        ["content-length", "CONNECTION", "Host ", " Host", "X:Y", "Höst", "", "host", "HOST"]
    ),
)
_values = _mostly(
    st.sampled_from(
        [
            "127.0.0.1:8080",
            "",
            "close",
            "keep-alive",
            "Upgrade",
            "100-continue",
            "chunked",
            "0",
            "4",
            "a b",
            " padded ",
            "tab\there",
            "caf\xe9",
            "req-42",
            "r" * 129,
        ]
    ),
    st.one_of(
        st.sampled_from(["x\x7fy", "\x01", "a\x07b", "\x1f", "a\rb", "a\nb", "h2c"]),
        st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=6),
    ),
)
_separators = _mostly(st.sampled_from([": ", ":"]), st.sampled_from([":  ", ": \t", " : "]))
_eols = _mostly(st.just("\r\n"), st.sampled_from(["\n", "\r"]))
_hosts = _mostly(st.just(["Host"]), st.sampled_from([[], ["Host", "host"], ["HOST"]]))
# Empty lines before a request line, which RFC 9112 section 2.2 has ignored.
_empty_lines = _mostly(st.just(""), st.sampled_from(["\r\n", "\n", "\r\n\n", "\r\n" * 9]))


@st.composite
def _request(draw: st.DrawFn) -> bytes:
    eol = draw(_eols)
    line = f"{draw(_methods)} {draw(_targets)} {draw(_versions)}"
    headers = [(name, "127.0.0.1:8080") for name in draw(_hosts)]
    headers += draw(st.lists(st.tuples(_names, _values), max_size=3))
    order = draw(st.permutations(headers))
    parts = [line] + [f"{n}{draw(_separators)}{v}" for n, v in order]
    head = (draw(_empty_lines) + eol.join(parts) + eol + draw(_eols)).encode("latin-1")
    return head + draw(st.sampled_from([b"", b"", b"", b"abcd", b"0\r\n\r\n"]))


@st.composite
def _mutated(draw: st.DrawFn, requests: st.SearchStrategy[bytes] | None = None) -> bytes:
    parts = draw(st.lists(_request() if requests is None else requests, min_size=1, max_size=3))
    data = bytearray(b"".join(parts))
    for _ in range(draw(st.integers(0, 2))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if kind == "flip":
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif kind == "delete":
            del data[at]
        else:
            del data[at:]
    return bytes(data)


_inputs = st.one_of(
    st.lists(_request(), min_size=1, max_size=4).map(b"".join),
    _mutated(),
    st.binary(max_size=64),
)

_GOOD = b"GET /snap HTTP/1.1\r\nHost: x\r\n\r\n"

# --- the matcher against h11's parser -----------------------------------------


def _h11_parse(data: bytes) -> tuple[h11.Request, bytes]:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
    conn.receive_data(data)
    request = conn.next_event()
    assert type(request) is h11.Request
    assert type(conn.next_event()) is h11.EndOfMessage
    return request, conn.trailing_data[0]


@given(_inputs)
@example(_GOOD)
@example(b"HEAD /a/b HTTP/1.1\r\nhost:\r\nAccept: */*\r\n\r\nGET /snap HTTP/1.1\r\n")
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_match_accepts_only_what_h11_reads_the_same_way(data: bytes) -> None:
    found = match(LINES, data, 0, MAX_HEAD)
    if found is None:
        return
    entry, end = found
    request, rest = _h11_parse(data)
    assert request.method in (b"GET", b"HEAD")
    assert request.http_version == b"1.1"
    line = b"%s %s HTTP/1.1" % (request.method, request.target)
    assert LINES[line] is entry
    assert not any(
        name in (b"connection", b"content-length", b"transfer-encoding")
        for name, _ in request.headers
    )
    assert rest == data[end:]


def test_match_declines_a_head_over_the_limit() -> None:
    big = b"GET /snap HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * MAX_HEAD + b"\r\n\r\n"
    assert match(LINES, big, 0, MAX_HEAD) is None
    assert match(LINES, _GOOD, 0, MAX_HEAD) is not None


def test_the_good_request_is_taken_by_the_fast_path() -> None:
    # Guards the differential test below from passing because nothing matched.
    found = match(LINES, _GOOD * 2, len(_GOOD), MAX_HEAD)
    assert found is not None
    assert found[1] == 2 * len(_GOOD)


# --- the whole server, with and without the fast path ---------------------------

FAST = make_server(APP, fast_path=True)
STRICT = make_server(APP, fast_path=False)
SLOW = make_server(APP, fast_path=False, strict=False)


async def _answer(server: HTTPServer, data: bytes) -> bytes:
    """What ``server`` answers, the X-Request-IDs it made masked: each server
    makes its own, and all echo the client's alike."""
    return mask_request_ids(server.app, await exchange(server, data))


@given(_inputs)
@example(_GOOD * 3)
@example(_GOOD + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi" + _GOOD)
@example(b"HEAD /snap HTTP/1.1\r\nHost: x\r\n\r\n" + _GOOD[:10])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
async def test_fast_and_h11_paths_answer_the_same_bytes(data: bytes) -> None:
    slow = await _answer(SLOW, data)
    assert await _answer(FAST, data) == slow
    assert await _answer(STRICT, data) == slow


# The conformance cases (RFC 9110, 9112), each with the status both paths
# must give: the fast path declines all of them, so h11's answer is the one.
CONFORMANCE = [
    (b"GET /snap HTTP/1.2\r\nHost: x\r\n\r\n", [505]),
    (b"GET /snap HTTP/9.9\r\nHost: x\r\n\r\n", [505]),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", [505]),
    (b"GET /snap HTTP/1.1\r\nHost: x\r\nX-A: a\x07b\r\n\r\n" + _GOOD, [400]),
    (b"GET /snap HTTP/1.1\r\nX-A: \x7f\r\nHost: x\r\n\r\n", [400]),
    (b"GET http://x/snap HTTP/1.1\r\nHost: x\r\n\r\n" + _GOOD, [200, 200]),
    (b"GET HTTP://x:80/snap?a=1 HTTP/1.1\r\nHost: x\r\n\r\n", [200]),
    (b"\r\n" + _GOOD + b"\n\r\n" + _GOOD, [200, 200]),
    (b"\r\n" * 9 + _GOOD, [400]),
    (
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n" + _GOOD,
        [200],  # read chunked, then closed: the GET after it is not answered
    ),
]


@pytest.mark.parametrize(("data", "statuses"), CONFORMANCE)
async def test_conformance_cases_are_answered_alike_by_both_paths(
    data: bytes, statuses: list[int]
) -> None:
    fast = await _answer(FAST, data)
    assert fast == await _answer(SLOW, data)
    assert fast == await _answer(STRICT, data)
    assert [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", fast)] == statuses, fast


async def test_the_fast_path_really_answers() -> None:
    before = APP.recorders["/snap"].count
    answer = await exchange(FAST, _GOOD * 2)
    assert answer.count(b"HTTP/1.1 200 OK\r\n") == 2
    assert answer.endswith(b'{"price":"64250.50"}')
    assert APP.recorders["/snap"].count == before + 2


async def test_a_publish_swaps_the_whole_response() -> None:
    snap = APP.snapshots.get("/a/b")
    assert snap is not None
    snap.publish(b"longer text now")
    answer = await exchange(FAST, b"GET /a/b HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer.endswith(b"\r\n\r\nlonger text now")
    assert b"content-length: 15\r\n" in answer
    snap.publish(b"text")


# --- the same with [auth] enabled -----------------------------------------------
# Every snapshot and /dyn need the read scope; keys of every kind are sent.
# The fast path may only answer what the h11 path would answer 200 to, with
# the same bytes, and must spend a token exactly when h11 would.

READ_KEY = "reader-key-0123456789"
TRADE_KEY = "trader-key-0123456789"
AUTH_APP = make_app(
    [_Plugin()],
    {
        "SPRINTD_AUTH__ENABLED": "true",
        "SPRINTD_AUTH__KEYS__R__KEY": READ_KEY,
        "SPRINTD_AUTH__KEYS__R__TIER": "enterprise",
        "SPRINTD_AUTH__KEYS__T__KEY": TRADE_KEY,
        "SPRINTD_AUTH__KEYS__T__SCOPES": '["trade"]',
        "SPRINTD_AUTH__KEYS__T__TIER": "enterprise",
        # The two servers share the buckets: a burst that never runs out, and
        # a rate slow enough that tokens spent can be counted.
        "SPRINTD_AUTH__LIMITS__ENTERPRISE__RATE": "0.000001",
        "SPRINTD_AUTH__LIMITS__ENTERPRISE__BURST": "1000000",
    },
)
AUTH_FAST = make_server(AUTH_APP, fast_path=True)
AUTH_SLOW = make_server(AUTH_APP, fast_path=False, strict=False)
_credentials = _mostly(
    st.sampled_from(
        [
            f"X-API-Key: {READ_KEY}",
            f"x-api-key:{READ_KEY}  ",
            f"Authorization: Bearer {READ_KEY}",
            f"AUTHORIZATION: bearer   {READ_KEY}",
        ]
    ),
    st.sampled_from(
        [
            f"Authorization: Bearer\t{READ_KEY}",
            f"Authorization: Basic {READ_KEY}",
            f"X-API-Key: {TRADE_KEY}",
            f"X-API-Key: {READ_KEY} x",
            "X-API-Key: wrong-key-0123456789",
            "X-API-Key:",
            "X-Api-Key-Other: nothing",
        ]
    ),
)


@st.composite
def _with_credentials(draw: st.DrawFn) -> bytes:
    head = draw(_request())
    lines = head.split(b"\r\n")
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):
        at = draw(st.integers(1, max(1, len(lines) - 2)))
        lines.insert(at, draw(_credentials).encode("latin-1"))
    return b"\r\n".join(lines)


_auth_inputs = st.one_of(
    st.lists(_with_credentials(), min_size=1, max_size=3).map(b"".join),
    _mutated(_with_credentials()),
)


@given(_auth_inputs)
@example(b"GET /snap HTTP/1.1\r\nHost: x\r\nX-API-Key: " + READ_KEY.encode() + b"\r\n\r\n")
@example(b"GET /snap HTTP/1.1\r\nX-API-Key: " + TRADE_KEY.encode() + b"\r\nHost: x\r\n\r\n")
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
async def test_with_auth_fast_and_h11_paths_answer_the_same_bytes(data: bytes) -> None:
    assert AUTH_APP.guard is not None
    key = AUTH_APP.guard.keys[0]
    before = key.bucket.tokens  # type: ignore[attr-defined]
    fast = await _answer(AUTH_FAST, data)
    spent_fast = before - key.bucket.tokens  # type: ignore[attr-defined]
    before = key.bucket.tokens  # type: ignore[attr-defined]
    slow = await _answer(AUTH_SLOW, data)
    spent_slow = before - key.bucket.tokens  # type: ignore[attr-defined]
    assert fast == slow
    assert round(spent_fast) == round(spent_slow)


async def test_with_auth_a_keyed_read_really_takes_the_fast_path() -> None:
    good = b"GET /snap HTTP/1.1\r\nHost: x\r\nX-API-Key: " + READ_KEY.encode() + b"\r\n\r\n"
    found = AUTH_FAST.matcher(AUTH_APP.snapshots.lines, good, 0, MAX_HEAD)
    assert found is not None
    assert AUTH_FAST.matcher(AUTH_APP.snapshots.lines, _GOOD, 0, MAX_HEAD) is None
    assert (
        AUTH_FAST.matcher(AUTH_APP.snapshots.lines, good.replace(b"reader", b"trader"), 0, MAX_HEAD)
        is None
    )
    assert status(await exchange(AUTH_FAST, _GOOD)) == 401
    assert status(await exchange(AUTH_FAST, good)) == 200


def status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])
