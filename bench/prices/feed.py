"""Load clients for the binary feed port: a constant rate, and the maximum rate.

Both run in one thread on one non-blocking socket, waiting in ``select`` (its
timeout has microseconds; epoll's and poll's have milliseconds), so an ack is
timed when it is read (no second thread waiting for the GIL in between) and a
frame goes out when it is due.

``constant_rate``: frame k is due at ``start + k * batch / rate``; every due
frame is sent as soon as the loop sees it, and each update's latency runs
from its frame's due time to its ack. A client or server that falls behind
makes the next frames late and that lateness is counted (no coordinated
omission), as k6's constant-arrival-rate does for HTTP.

``max_rate``: ``window`` frames of ``batch`` updates in flight at all times
(a new one goes out as each ack comes back); throughput is the updates acked
over the run, latency runs from a frame's send to its ack (a closed loop:
it measures the queue the window makes, not an offered rate).

The frames are made before the clock starts, from a pool cycled through, so
encoding them costs the measurement nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import random
import select
import socket
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sprintd.framing import FrameDecoder, decode_payload, encode_frame

__all__ = ["FeedError", "FeedResult", "constant_rate", "frames", "max_rate"]

POOL = 256
# prctl(2): the thread's timer slack, in nanoseconds.
PR_SET_TIMERSLACK = 29
CONNECT_TIMEOUT_S = 10.0
# An ack not back this long after the last frame went out is a hung run.
DRAIN_TIMEOUT_S = 30.0


class FeedError(Exception):
    """The daemon refused a frame or the connection broke."""


@dataclass(frozen=True)
class FeedResult:
    updates: int
    frames: int
    batch: int
    seconds: float
    # Per frame (each of its updates has the same), nanoseconds.
    latency_ns: array[int]
    # Frames that went out later than due by more than 1 ms (constant rate only).
    late_frames: int
    # Constant rate only: from each frame's real send to its ack, the part of
    # the latency that is not the client's own lateness.
    from_send_ns: array[int] | None = None

    @property
    def updates_s(self) -> float:
        return self.updates / self.seconds if self.seconds else 0.0


def frames(symbols: Sequence[str], batch: int, count: int = POOL, seed: int = 7) -> list[bytes]:
    """``count`` encoded frames of ``batch`` positional updates each."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        updates: list[Any] = [
            [rng.choice(symbols), round(rng.uniform(1, 1e5), 2), round(rng.uniform(0, 100), 3)]
            for _ in range(batch)
        ]
        out.append(encode_frame(updates))
    return out


class _Conn:
    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.decoder = FrameDecoder()
        self.out = bytearray()

    def flush(self) -> None:
        while self.out:
            try:
                sent = self.sock.send(self.out)
            except BlockingIOError:
                return
            del self.out[:sent]

    def wait(self, seconds: float) -> bool:
        """Wait for acks (or room to send); True when there may be acks to read."""
        # select(), not epoll or poll: their timeouts are whole milliseconds,
        # and at 10,000 frames a second the next one is due in 100 us.
        readable, _, _ = select.select(
            [self.sock], [self.sock] if self.out else [], [], max(0.0, seconds)
        )
        return bool(readable)

    def acks(self) -> int:
        """Read what has come; how many acks that completed.

        Raises:
            FeedError: a frame was refused, or the daemon closed.
        """
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return 0
        if not data:
            raise FeedError("the daemon closed the connection")
        self.decoder.feed(data)
        count = 0
        for payload in self.decoder.frames():
            reply = decode_payload(payload)
            if reply[0] != "ok":
                raise FeedError(f"frame refused: {reply}")
            count += 1
        return count

    def close(self) -> None:
        self.sock.close()


def _tight_timers() -> None:
    """Ask Linux to wake this thread on time (timer slack 1 ns, not 50 us): at
    10,000 frames a second the next one is due every 100 us."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)


def constant_rate(
    host: str, port: int, pool: Sequence[bytes], batch: int, rate: int, seconds: float
) -> FeedResult:
    """Offer ``rate`` updates a second in frames of ``batch`` for ``seconds``."""
    _tight_timers()
    total = max(1, int(rate * seconds / batch))
    interval = batch * 1_000_000_000 / rate
    latency = array("q", bytes(8 * total))
    sent_at = array("q", bytes(8 * total))
    conn = _Conn(host, port)
    clock = time.perf_counter_ns
    late = sent = acked = 0
    start = clock() + 5_000_000
    try:
        while acked < total:
            now = clock()
            first = sent
            while sent < total and start + int(sent * interval) <= now:
                if now - (start + int(sent * interval)) > 1_000_000:
                    late += 1
                conn.out += pool[sent % len(pool)]
                sent += 1
            conn.flush()
            now = clock()
            for k in range(first, sent):
                sent_at[k] = now
            if sent < total:
                wait_s = (start + int(sent * interval) - clock()) / 1e9
            else:
                wait_s = DRAIN_TIMEOUT_S
            if conn.wait(wait_s):
                now = clock()
                for _ in range(conn.acks()):
                    latency[acked] = now - (start + int(acked * interval))
                    sent_at[acked] = now - sent_at[acked]
                    acked += 1
            elif sent == total and not conn.out:
                raise FeedError(f"no ack for {DRAIN_TIMEOUT_S:.0f}s; {acked}/{total} acked")
        elapsed = clock() - start
    finally:
        conn.close()
    return FeedResult(total * batch, total, batch, elapsed / 1e9, latency, late, sent_at)


def max_rate(
    host: str, port: int, pool: Sequence[bytes], batch: int, window: int, seconds: float
) -> FeedResult:
    """Keep ``window`` frames of ``batch`` updates in flight for ``seconds``."""
    conn = _Conn(host, port)
    clock = time.perf_counter_ns
    sent_at: list[int] = []
    latency = array("q")
    start = clock()
    stop = start + int(seconds * 1e9)
    try:
        while True:
            now = clock()
            while len(sent_at) - len(latency) < window and now < stop:
                conn.out += pool[len(sent_at) % len(pool)]
                sent_at.append(now)
            conn.flush()
            if len(latency) == len(sent_at):
                break
            if not conn.wait(DRAIN_TIMEOUT_S):
                if conn.out:
                    continue
                raise FeedError(f"no ack for {DRAIN_TIMEOUT_S:.0f}s")
            now = clock()
            for _ in range(conn.acks()):
                latency.append(now - sent_at[len(latency)])
        elapsed = clock() - start
    finally:
        conn.close()
    return FeedResult(len(latency) * batch, len(latency), batch, elapsed / 1e9, latency, 0)
