"""Hostile clients over real sockets: the daemon keeps serving and cleans up on time.

One daemon for the module, with small timeouts (head and body 0.5 s,
keep-alive 1 s) and a 64 KiB body limit. Each test abuses it one way while
a watcher polls /health on fresh connections every 50 ms, and ends by
checking that every abusive connection was closed by the daemon within a
bound and that its descriptors are back where they started. Bounds are
generous (the reaper runs every 0.1 s, on a shared machine); each test takes
seconds.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemons import FAST_SERVER_ENV, Daemon, DaemonFactory, wait_for

HEADER_TIMEOUT = 0.5
BODY_TIMEOUT = 0.5
KEEPALIVE_TIMEOUT = 1.0
MAX_BODY = 64 * 1024
# How long after its timeout a connection may still be open: reaper ticks,
# scheduling on a loaded machine.
SLACK = 4.0
IDLE_CONNECTIONS = 2000
LIVEZ = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Iterator[Daemon]:
    # The test opens thousands of sockets, and the daemon inherits the limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, max(soft, IDLE_CONNECTIONS * 2 + 512))
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    try:
        env = dict(FAST_SERVER_ENV)
        env |= {
            "SPRINTD_SERVER__HEADER_TIMEOUT": str(HEADER_TIMEOUT),
            "SPRINTD_SERVER__BODY_TIMEOUT": str(BODY_TIMEOUT),
            "SPRINTD_SERVER__KEEPALIVE_TIMEOUT": str(KEEPALIVE_TIMEOUT),
            "SPRINTD_SERVER__MAX_BODY_BYTES": str(MAX_BODY),
            "SPRINTD_SERVER__BACKLOG": "4096",
        }
        yield module_daemon(env=env)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def fds(daemon: Daemon) -> int:
    return len(os.listdir(f"/proc/{daemon.pid}/fd"))


def rss_kib(daemon: Daemon) -> int:
    for line in Path(f"/proc/{daemon.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


class Watcher:
    """Polls /health on a fresh connection every 50 ms in a thread."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.answered = 0
        self.failures: list[str] = []
        self.slowest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                status = self.daemon.get("/health", timeout=5).status
            except OSError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                if status != 200:
                    self.failures.append(f"status {status}")
                self.answered += 1
            self.slowest = max(self.slowest, time.monotonic() - start)
            self._stop.wait(0.05)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self.failures, self.failures[:5]
        assert self.answered >= 3, "the watcher hardly ran"


def connect(daemon: Daemon, buffer: int | None = None) -> socket.socket:
    """A non-blocking connection; ``buffer`` caps its kernel buffers (both ways)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer)
    sock.settimeout(5)
    sock.connect((daemon.host, daemon.port))
    sock.setblocking(False)
    return sock


def closed_by_peer(sock: socket.socket) -> bool:
    """True once the daemon closed it (end of stream or reset); drains what came before."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_all_closed(socks: list[socket.socket], within: float) -> float:
    """Seconds until the daemon had closed every socket; fails after ``within``."""
    start = time.monotonic()
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    while by_fd:
        left = start + within - time.monotonic()
        assert left > 0, f"{len(by_fd)} of {len(socks)} connections still open after {within} s"
        for fd, _ in poller.poll(min(left, 0.2) * 1000):
            if closed_by_peer(by_fd[fd]):
                poller.unregister(fd)
                del by_fd[fd]
    return time.monotonic() - start


@contextlib.contextmanager
def sockets(daemon: Daemon, count: int, buffer: int | None = None) -> Iterator[list[socket.socket]]:
    socks = [connect(daemon, buffer) for _ in range(count)]
    try:
        yield socks
    finally:
        for sock in socks:
            sock.close()


def settle_fds(daemon: Daemon, baseline: int) -> None:
    """The daemon's descriptors come back to where they were."""
    wait_for(lambda: fds(daemon) <= baseline, timeout=10)


# --- the abuse -------------------------------------------------------------------


def test_thousands_of_idle_connections(served: Daemon) -> None:
    baseline = fds(served)
    rss_before = rss_kib(served)
    with Watcher(served) as watcher, sockets(served, IDLE_CONNECTIONS) as idle:
        wait_for(lambda: fds(served) >= baseline + IDLE_CONNECTIONS, timeout=10)
        rss_held = rss_kib(served) - rss_before
        # Others are served while they sit there.
        with connect(served) as other:
            other.setblocking(True)
            other.sendall(LIVEZ)
            assert other.recv(65536).startswith(b"HTTP/1.1 200 ")
        took = wait_all_closed(idle, KEEPALIVE_TIMEOUT + SLACK)
    assert took >= KEEPALIVE_TIMEOUT * 0.5
    settle_fds(served, baseline)
    assert watcher.answered
    # An idle connection costs its task and socket, not a read buffer.
    print(f"idle connections held {rss_held / IDLE_CONNECTIONS:.1f} KiB each")
    assert rss_held / IDLE_CONNECTIONS < 16, f"{rss_held / IDLE_CONNECTIONS:.1f} KiB each"


def test_slow_loris_heads_are_cut_off_while_they_trickle(served: Daemon) -> None:
    baseline = fds(served)
    with Watcher(served), sockets(served, 200) as slow:
        for sock in slow:
            sock.send(b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        start = time.monotonic()
        open_ = list(slow)
        # One more byte every 0.1 s on each: the head never completes, but
        # the header timeout counts from its first byte.
        while open_ and time.monotonic() - start < HEADER_TIMEOUT + SLACK:
            still = []
            for sock in open_:
                try:
                    sock.send(b"a")
                except (BlockingIOError, OSError):
                    continue
                if not closed_by_peer(sock):
                    still.append(sock)
            open_ = still
            time.sleep(0.1)
        assert not open_, f"{len(open_)} slow heads still open after {HEADER_TIMEOUT + SLACK} s"
    settle_fds(served, baseline)


def test_bodies_that_never_end(served: Daemon) -> None:
    baseline = fds(served)
    with Watcher(served), sockets(served, 100) as slow, sockets(served, 20) as endless:
        for sock in slow:
            sock.send(b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\nab")
        for sock in endless:
            sock.send(b"POST /livez HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        start = time.monotonic()
        chunk = b"400\r\n" + b"z" * 1024 + b"\r\n"
        open_slow, open_endless = list(slow), list(endless)
        while (open_slow or open_endless) and time.monotonic() - start < BODY_TIMEOUT + SLACK:
            open_slow = [s for s in open_slow if _trickle(s, b"c")]
            # Chunks as fast as the socket takes them: the body limit ends it.
            open_endless = [s for s in open_endless if _trickle(s, chunk * 8)]
            time.sleep(0.05)
        assert not open_slow, f"{len(open_slow)} slow bodies still open"
        assert not open_endless, f"{len(open_endless)} endless bodies still open"
    settle_fds(served, baseline)


def _trickle(sock: socket.socket, data: bytes) -> bool:
    """Send a little more; False once the daemon has closed the connection."""
    with contextlib.suppress(BlockingIOError, OSError):
        sock.send(data)
    return not closed_by_peer(sock)


def test_a_pipelined_flood_is_answered_in_order(served: Daemon) -> None:
    count = 20_000
    with Watcher(served), connect(served) as sock:
        sock.setblocking(True)
        received = bytearray()

        def read() -> None:
            while received.count(b"HTTP/1.1 200 ") < count:
                data = sock.recv(1 << 20)
                if not data:
                    return
                received.extend(data)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        post = b"POST /livez HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
        # Mostly the fast path, with an h11 request (a 405) every 100.
        batch = (LIVEZ * 99 + post) * 10
        for _ in range(count // 1000):
            sock.sendall(batch)
        reader.join(30)
    assert received.count(b"HTTP/1.1 200 ") == count // 100 * 99
    assert received.count(b"HTTP/1.1 405 ") == count // 100


def test_a_flood_that_never_reads_is_closed(served: Daemon) -> None:
    baseline = fds(served)
    # Small buffers, as a client that stopped reading soon has: the daemon
    # fills them, blocks sending responses nobody takes, and stops reading.
    with Watcher(served), sockets(served, 20, buffer=16 * 1024) as floods:
        for sock in floods:
            with contextlib.suppress(BlockingIOError):
                while True:
                    sock.send(LIVEZ * 500)
        wait_all_closed(floods, max(KEEPALIVE_TIMEOUT, BODY_TIMEOUT) + SLACK)
    settle_fds(served, baseline)


def test_connection_churn(served: Daemon) -> None:
    baseline = fds(served)
    rss_before = rss_kib(served)
    linger_reset = struct.pack("ii", 1, 0)
    with Watcher(served):
        for n in range(3000):
            sock = socket.create_connection((served.host, served.port), timeout=5)
            kind = n % 3
            if kind == 0:  # a request and an orderly close
                sock.sendall(LIVEZ)
                assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
            elif kind == 1:  # half a request, then a reset
                sock.sendall(LIVEZ[:10])
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_reset)
            # kind 2: connect and close at once
            sock.close()
    settle_fds(served, baseline)
    # Churn leaves nothing behind: a few MiB of allocator noise at most.
    assert rss_kib(served) - rss_before < 16 * 1024
