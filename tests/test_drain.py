"""Draining a real daemon: the pre-stop delay, clean closes, the last responses.

Every daemon has small timeouts from the environment; waits poll with
``wait_for`` or block on a read, never sleep and then assert.
"""

from __future__ import annotations

import signal
import socket
import struct
from collections.abc import Sequence

import trio

from sprintd.app import App, SnapshotSpec
from sprintd.hookspecs import hookimpl
from sprintd.testing import make_app, make_server

from .daemons import (
    FAST_SERVER_ENV,
    PLUGINS_DIR,
    Daemon,
    DaemonFactory,
    wait_for,
)
from .test_framed_daemon import _port

SLOW_PLUGIN = {"SPRINTD_PLUGINS": '["sprintd_test_slow"]'}
BIG = 4 * 1024 * 1024  # sprintd_test_slow's /test/big
BOUND = 10.0


def _get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode()


def _refused(served: Daemon) -> bool:
    try:
        socket.create_connection((served.host, served.port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _end_of_stream(sock: socket.socket) -> bytes:
    """What the daemon sends until its FIN; a reset fails the test."""
    sock.settimeout(BOUND)
    received = bytearray()
    while chunk := sock.recv(65536):
        received += chunk
    return bytes(received)


def test_readyz_fails_first_while_everything_is_still_served(daemon: DaemonFactory) -> None:
    # Long enough that nothing below can outlast it; the second SIGTERM ends it.
    env = FAST_SERVER_ENV | {"SPRINTD_SERVER__DRAIN_DELAY": "60"}
    served = daemon(env=env)
    with served.connect() as kept:
        kept.send(_get("/livez"))
        assert kept.read_response().status == 200
        served.signal(signal.SIGTERM)
        # New connections are still taken: each get() below is one.
        wait_for(lambda: served.get("/readyz").status == 503)
        assert served.get("/livez").status == 200
        assert served.get("/v1/stats").status == 200
        # ... and a kept-alive connection is still served, still kept alive.
        kept.send(_get("/livez"))
        response = kept.read_response()
        assert response.status == 200
        assert response.header("connection") is None
        assert served.process.poll() is None
        served.signal(signal.SIGTERM)
        wait_for(lambda: _refused(served), timeout=BOUND)
    assert served.wait() == 0


def test_an_idle_keep_alive_connection_gets_a_clean_close(daemon: DaemonFactory) -> None:
    served = daemon(env=FAST_SERVER_ENV)
    with served.connect() as idle:
        idle.send(_get("/livez"))
        assert idle.read_response().status == 200
        served.signal(signal.SIGTERM)
        # FIN, not RST: recv() gives the end of the stream, not ECONNRESET.
        assert _end_of_stream(idle.sock) == b""
    assert served.wait() == 0


def test_a_busy_connection_gets_connection_close_on_its_last_response(
    daemon: DaemonFactory,
) -> None:
    served = daemon(env=FAST_SERVER_ENV | SLOW_PLUGIN, pythonpath=[PLUGINS_DIR])
    with served.connect() as busy:
        # Wherever the drain finds this request (queued, read, in its handler),
        # it is answered, and the answer says it is the last.
        busy.send(_get("/test/slow?seconds=1"))
        served.signal(signal.SIGTERM)
        response = busy.read_response()
        assert response.status == 200
        assert response.json() == {"slept": 1.0}
        assert response.header("connection") == "close"
        assert _end_of_stream(busy.sock) == b""
    assert served.wait() == 0


class _Fast:
    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        return [SnapshotSpec("/fast", b"{}")]


async def test_a_fast_path_request_read_while_draining_is_the_last_and_says_so() -> None:
    # In-process, so the drain lands exactly between a request's arrival and
    # its read: the connection is resting but readable, and is answered.
    app = make_app([_Fast()])
    server = make_server(app)
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    client = trio.socket.from_stdlib_socket(ours)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.connection, theirs)
        with client, trio.fail_after(BOUND):
            await client.send(_get("/fast"))
            first = await client.recv(65536)
            assert first.startswith(b"HTTP/1.1 200") and b"connection: close" not in first
            ours.send(_get("/fast"))  # no checkpoint: the connection has not read it
            server.drain()
            received = bytearray()
            while chunk := await client.recv(65536):
                received += chunk
    head = bytes(received).partition(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 200")
    assert b"\r\nconnection: close" in head
    assert not server.connections


def test_a_slow_reader_gets_the_whole_fast_path_response_across_the_drain(
    daemon: DaemonFactory,
) -> None:
    # The keep-alive timeout is far shorter than the read takes: a response
    # being sent is SEND (body timeout), not IDLE.
    env = (
        FAST_SERVER_ENV
        | SLOW_PLUGIN
        | {
            "SPRINTD_SERVER__KEEPALIVE_TIMEOUT": "0.3",
            "SPRINTD_SERVER__BODY_TIMEOUT": "30",
        }
    )
    served = daemon(env=env, pythonpath=[PLUGINS_DIR])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
    sock.connect((served.host, served.port))
    with sock:
        sock.settimeout(BOUND)
        sock.sendall(_get("/test/big"))
        received = bytearray(sock.recv(4096))
        assert received.startswith(b"HTTP/1.1 200")
        served.signal(signal.SIGTERM)
        # Slowly: a small window, small reads, each waiting for the daemon.
        while chunk := sock.recv(4096):
            received += chunk
        body = bytes(received).partition(b"\r\n\r\n")[2]
        assert len(body) == BIG, f"{len(body)} of {BIG} bytes"
    assert served.wait() == 0


def test_an_idle_framed_connection_is_closed_cleanly_by_the_drain(
    daemon: DaemonFactory,
) -> None:
    served = daemon(env=FAST_SERVER_ENV)
    address = _port(served, "orders-entry")
    with socket.create_connection(address, timeout=BOUND) as idle:
        idle.sendall(struct.pack(">I", 1) + b"\x90")  # [] : an empty batch of commands
        assert idle.recv(65536) == struct.pack(">I", 1) + b"\x90"
        served.signal(signal.SIGTERM)
        assert _end_of_stream(idle) == b""
    assert served.wait() == 0
