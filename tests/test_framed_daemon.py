"""The framed ports of a real daemon: faults, timeouts and memory per connection.

Timeouts are small settings; every wait polls with ``wait_for`` or a bounded
read, never a sleep followed by an assert.
"""

from __future__ import annotations

import re
import socket
import struct
from pathlib import Path

from sprintd.framing import FrameDecoder, decode_payload, encode_frame

from .daemons import PLUGINS_DIR, Daemon, DaemonFactory, wait_for

FRAMED_PLUGIN = {"SPRINTD_PLUGINS": '["sprintd_test_framed"]'}
BOUND = 10.0


def _port(served: Daemon, name: str) -> tuple[str, int]:
    found = re.search(rf"serving {name} on (\S+):(\d+)", served.stderr())
    assert found, served.stderr()
    return found[1], int(found[2])


def _request(sock: socket.socket, frames: list[list[object]]) -> list[object]:
    sock.sendall(b"".join(encode_frame(frame) for frame in frames))
    decoder = FrameDecoder()
    replies: list[object] = []
    while len(replies) < len(frames):
        chunk = sock.recv(65536)
        assert chunk, f"closed after {replies}"
        decoder.feed(chunk)
        replies += [decode_payload(p) for p in decoder.frames()]
    return replies


def _closed(sock: socket.socket) -> bool:
    """Whether the daemon has closed ``sock`` (polled: a non-blocking peek)."""
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def test_a_handler_with_too_few_replies_does_not_take_the_worker_down(
    daemon: DaemonFactory,
) -> None:
    served = daemon(env=FRAMED_PLUGIN, pythonpath=[PLUGINS_DIR])
    address = _port(served, "test-framed")
    with socket.create_connection(address, timeout=BOUND) as other:
        assert _request(other, [["a"]]) == [["ok", "a"]]
        with socket.create_connection(address, timeout=BOUND) as faulty:
            faulty.sendall(encode_frame(["x"]) + encode_frame(["short"]))
            wait_for(lambda: _closed(faulty), timeout=BOUND)
        # The worker, its HTTP port and the other connection are all still up.
        assert served.process.poll() is None
        assert _request(other, [["b"]]) == [["ok", "b"]]
        assert served.get("/livez").status == 200
    assert "test-framed" in served.stderr()
    assert "2 frames got 1 replies" in served.stderr()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


IDLE = 300
# A task, a Conn and a socket object: a few KiB. A 64 KiB read buffer per
# connection (what it cost before) is far over this.
KIB_PER_IDLE_CONNECTION = 24


def test_idle_order_entry_connections_cost_no_buffer_and_are_closed(
    daemon: DaemonFactory,
) -> None:
    env = {"SPRINTD_SERVER__FRAMED_IDLE_TIMEOUT": "3"}
    served = daemon(env=env)
    address = _port(served, "orders-entry")
    # Warm the worker (a first connection, a first request) before measuring.
    with socket.create_connection(address, timeout=BOUND) as warm:
        assert _request(warm, [[]]) == [[]]
    assert served.get("/health").status == 200
    before = _rss_kib(served.pid)
    idle = [socket.create_connection(address, timeout=BOUND) for _ in range(IDLE)]
    try:
        # Every one accepted and registered (the daemon counts its own).
        assert served.get("/health").status == 200
        grown = _rss_kib(served.pid) - before
        assert grown < IDLE * KIB_PER_IDLE_CONNECTION, f"{grown} KiB for {IDLE} connections"

        def all_closed() -> bool:
            # /health answers throughout.
            assert served.get("/health").status == 200
            return all(_closed(sock) for sock in idle)

        wait_for(all_closed, timeout=30, interval=0.2)
    finally:
        for sock in idle:
            sock.close()


def test_a_partial_frame_on_the_order_port_is_closed(daemon: DaemonFactory) -> None:
    env = {"SPRINTD_SERVER__BODY_TIMEOUT": "0.5"}
    served = daemon(env=env)
    address = _port(served, "orders-entry")
    partial = []
    try:
        for _ in range(50):
            sock = socket.create_connection(address, timeout=BOUND)
            partial.append(sock)
            sock.sendall(struct.pack(">I", 1 << 20) + b"\x91")

        def all_closed() -> bool:
            assert served.get("/health").status == 200
            return all(_closed(sock) for sock in partial)

        wait_for(all_closed, timeout=BOUND, interval=0.1)
    finally:
        for sock in partial:
            sock.close()


def test_a_peer_that_never_reads_is_closed(daemon: DaemonFactory) -> None:
    env = {"SPRINTD_SERVER__BODY_TIMEOUT": "0.5"}
    served = daemon(env=env)
    address = _port(served, "orders-entry")
    sock = socket.socket()
    # A small receive window, so the daemon's replies back up quickly.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(address)
    with sock:
        sock.setblocking(False)
        # Frames that do not decode: each gets an error reply ~10x its size.
        bad = (struct.pack(">I", 1) + b"\xc1") * 4096

        def shut_out() -> bool:
            assert served.get("/health").status == 200
            try:
                sock.send(bad)
            except BlockingIOError:
                return False  # the daemon stopped reading: its send is stuck
            except (BrokenPipeError, ConnectionResetError):
                return True
            return False

        wait_for(shut_out, timeout=BOUND * 3, interval=0.05)
