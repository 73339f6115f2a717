"""The whole server on hostile bytes over a real socket: answers, closes, and stays healthy.

One server runs for the module in a thread of its own (its own Trio loop,
bound to 127.0.0.1 port 0); each example connects, sends bytes, half-closes
and reads until the server closes, within a bound. What comes back must be
HTTP/1.1 responses and never a 500, and the server must answer /livez on a
fresh connection afterwards. At the end no connection and no descriptor is
left behind.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import msgpack
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprintd.app import App, Route, SnapshotSpec
from sprintd.hookspecs import hookimpl
from sprintd.http import Request, Response
from sprintd.server.listener import open_listener
from sprintd.testing import make_app, make_server

from .fuzzing import bounded, mutate

KEY = "fuzz-key-0123456789ab"
STATUS_LINE = re.compile(rb"HTTP/1\.1 (\d{3}) ")


class _Plugin:
    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        return [SnapshotSpec("/snap", b'{"s":1}'), SnapshotSpec("/livez2", b"{}", scope="open")]

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        def decode(request: Request) -> Response:
            request.data()  # a bad body is the client's 400
            return Response.data({"ok": True})

        return [
            Route("POST", "/decode", decode),
            Route("PUT", "/decode", decode, scope="trade"),
            Route("GET", "/open", decode, scope="open"),
        ]


@dataclass
class Running:
    app: App
    port: int
    stop: threading.Event


@pytest.fixture(scope="module")
def running() -> Iterator[Running]:
    app = make_app(
        [_Plugin()],
        {
            "SPRINTD_AUTH__ENABLED": "true",
            "SPRINTD_AUTH__KEYS__F__KEY": KEY,
            "SPRINTD_AUTH__KEYS__F__SCOPES": '["read", "trade"]',
            "SPRINTD_AUTH__LIMITS__FREE__BURST": "1000000000",
            "SPRINTD_SERVER__MAX_HEADER_BYTES": "2048",
            "SPRINTD_SERVER__MAX_BODY_BYTES": "1024",
            "SPRINTD_SERVER__HEADER_TIMEOUT": "1",
            "SPRINTD_SERVER__BODY_TIMEOUT": "1",
            "SPRINTD_SERVER__KEEPALIVE_TIMEOUT": "1",
        },
    )
    bound: list[int] = []
    started = threading.Event()
    stop = threading.Event()

    async def main() -> None:
        # The server's accept loop, connections and reaper, as serve() runs
        # them (without the tuning and signals that belong to a worker).
        server = make_server(app)
        listener = open_listener("http", "127.0.0.1", 0, 128)
        bound.append(listener.getsockname()[1])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.reap)
            nursery.start_soon(server.accept, listener, server.connection, nursery)
            started.set()
            while not stop.is_set():
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()

    thread = threading.Thread(target=trio.run, args=(main,), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield Running(app, bound[0], stop)
    finally:
        stop.set()
        thread.join(10)


def exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        received = []
        while chunk := sock.recv(65536):
            received.append(chunk)
    return b"".join(received)


LIVEZ = b"GET /livez2 HTTP/1.1\r\nHost: x\r\n\r\n"


def livez(port: int) -> int:
    answer = exchange(port, LIVEZ)
    return int(answer.split(b" ", 2)[1])


BODY = json.dumps({"symbol": "BTC-USD", "qty": "1"}).encode()
PACKED = msgpack.packb({"symbol": "BTC-USD", "qty": "1"})
SAMPLES = [
    b"GET /snap HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() + b"\r\n\r\n",
    b"POST /decode HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + KEY.encode()
    + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY),
    b"PUT /decode HTTP/1.1\r\nHost: x\r\nX-API-Key: "
    + KEY.encode()
    + b"\r\nContent-Type: application/msgpack\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n%s\r\n0\r\n\r\n" % (len(PACKED), PACKED),
    b"GET /open?x=1 HTTP/1.0\r\n\r\n",
    b"HEAD /snap HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nabc",
    # The conformance cases: a version h11 parses but sprintd does not speak,
    # a control in a value, both framings, an absolute form, empty lines.
    b"GET /open HTTP/1.2\r\nHost: x\r\n\r\n",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    b"GET /open HTTP/1.1\r\nHost: x\r\nX-A: a\x07b\r\n\r\n",
    b"POST /decode HTTP/1.1\r\nHost: x\r\nX-API-Key: "
    + KEY.encode()
    + b"\r\nContent-Type: application/json\r\nContent-Length: 3\r\n"
    + b"Transfer-Encoding: chunked\r\n\r\n"
    + b"%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY),
    b"GET http://x:1/livez2?y=2 HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\r\n\n",
]
_inputs = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=4).map(b"".join),
    st.tuples(
        st.lists(st.sampled_from(SAMPLES), min_size=1, max_size=3).map(b"".join),
        st.randoms(use_true_random=False),
    ).map(lambda t: mutate(t[1], t[0], t[1].randint(1, 6))),
)


@given(_inputs)
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_bytes_get_responses_or_a_close(running: Running, data: bytes) -> None:
    with bounded(10):
        answer = exchange(running.port, data)
    if answer:
        assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    statuses = [int(m.group(1)) for m in STATUS_LINE.finditer(answer)]
    # Never a server error; 501 only for a transfer coding h11 does not
    # implement (RFC 9112 section 6.1), 505 only for a version other than
    # 1.0 and 1.1, each said as such and the last answer on the connection.
    for status, code in ((501, b"not_implemented"), (505, b"http_version_not_supported")):
        if status in statuses:
            assert b'"code":"%s"' % code in answer, answer[:300]
            assert statuses[-1] == status, answer[:300]
    assert all(status < 500 or status in (501, 505) for status in statuses), answer[:300]
    assert livez(running.port) == 200


def test_nothing_is_left_behind(running: Running) -> None:
    # After the fuzzing above (or alone): every connection closed, no fd kept.
    fds = len(os.listdir("/proc/self/fd"))
    for data in SAMPLES * 20:
        exchange(running.port, data)
    assert livez(running.port) == 200
    assert len(os.listdir("/proc/self/fd")) <= fds


def test_an_unknown_transfer_coding_is_501_not_implemented(running: Running) -> None:
    answer = exchange(
        running.port,
        b"POST /decode HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 501 "), answer[:100]
    assert b'"code":"not_implemented"' in answer
    assert livez(running.port) == 200


@pytest.mark.parametrize(
    ("data", "statuses"),
    [
        (SAMPLES[6] + LIVEZ, [505]),
        (SAMPLES[7], [505]),
        (SAMPLES[8] + LIVEZ, [400]),
        (SAMPLES[9] + LIVEZ, [200]),  # both framings: answered, then closed
        (SAMPLES[10] + SAMPLES[11] + LIVEZ, [200, 200]),
    ],
    ids=["version", "http2-preface", "control", "both-framings", "absolute-and-empty-lines"],
)
def test_conformance_samples_are_answered_as_rfc_9112_asks(
    running: Running, data: bytes, statuses: list[int]
) -> None:
    answer = exchange(running.port, data)
    assert [int(m.group(1)) for m in STATUS_LINE.finditer(answer)] == statuses, answer[:300]
    assert livez(running.port) == 200
