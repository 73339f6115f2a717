"""A load generator for the binary order-entry port: pre-encoded frames, a window in flight.

Every frame is encoded before the clock starts, so the client spends its time
on the socket, not on msgpack: replies are counted by their length prefixes
and only a sample is decoded (to check the daemon said "ok"). The client keeps
``window`` frames outstanding on one connection and sends the next as soon as
a reply arrives: a closed loop that finds the port's throughput. The latency
it records per frame (send to reply) is the loop's, coordinated omission
included; the HTTP loads' constant-rate run is where latency is judged.
"""

from __future__ import annotations

import socket
import struct
import time
from array import array
from dataclasses import dataclass

import msgpack

from sprintd.framing import encode_frame

__all__ = ["EntryResult", "drive", "order_frames"]

_LENGTH = struct.Struct(">I")
# One reply in this many is decoded and checked.
CHECK_EVERY = 997


@dataclass(frozen=True)
class EntryResult:
    orders: int
    frames: int
    seconds: float
    # Per frame, send to reply, in microseconds.
    latency_us: array[int]
    refused: int

    @property
    def per_second(self) -> float:
        return self.orders / self.seconds


def order_frames(symbol: str, per_frame: int, count: int) -> list[bytes]:
    """``count`` frames of ``per_frame`` new limit orders, buys and sells at one
    price in turn, so half of them trade and the book stays small."""
    frames = []
    n = 0
    for _ in range(count):
        commands = []
        for _ in range(per_frame):
            side = "buy" if n % 2 == 0 else "sell"
            commands.append(
                ["new", {"symbol": symbol, "side": side, "price": "100.00", "qty": "0.001"}]
            )
            n += 1
        frames.append(encode_frame(commands))
    return frames


def drive(
    host: str, port: int, frames: list[bytes], per_frame: int, window: int, seconds: float
) -> EntryResult:
    """Send ``frames`` round and round for ``seconds`` with ``window`` in flight."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    latency = array("q")
    sent_at: list[int] = []
    clock = time.perf_counter_ns
    total = len(frames)
    sent = answered = refused = 0
    buf = bytearray()
    try:
        began = clock()
        deadline = began + int(seconds * 1e9)
        first = b"".join(frames[i % total] for i in range(window))
        now = clock()
        sent_at.extend([now] * window)
        sock.sendall(first)
        sent = window
        while answered < sent:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            buf += data
            at = 0
            now = clock()
            out = []
            while len(buf) - at >= 4:
                (length,) = _LENGTH.unpack_from(buf, at)
                if len(buf) - at - 4 < length:
                    break
                if answered % CHECK_EVERY == 0:
                    reply = msgpack.unpackb(bytes(buf[at + 4 : at + 4 + length]))
                    refused += sum(1 for r in reply if r[0] != "ok")
                at += 4 + length
                latency.append((now - sent_at[answered]) // 1000)
                answered += 1
                if now < deadline:
                    out.append(frames[sent % total])
                    sent_at.append(now)
                    sent += 1
            del buf[:at]
            if out:
                sock.sendall(b"".join(out))
        elapsed = (clock() - began) / 1e9
    finally:
        sock.close()
    return EntryResult(answered * per_frame, answered, elapsed, latency, refused)
