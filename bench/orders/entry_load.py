"""A load generator for the binary order-entry port: pre-encoded frames, a window in flight.

Every frame is encoded before the clock starts, so the client spends its time
on the socket, not on msgpack: replies are counted by their length prefixes
and only a sample is decoded (to check the daemon said "ok"). The client keeps
``window`` frames outstanding on one connection and sends the next as soon as
a reply arrives: a closed loop that finds the port's throughput. The latency
it records per frame (send to reply) is the loop's, coordinated omission
included; ``drive_rate`` sends at a constant rate instead, each frame timed
from when it was due, which is where latency is judged.

Both protocols: the map frames of ``order_frames``, and the compact ones of
``compact_frames`` after ``HELLO`` (the session's account is named, so the
fills of its resting orders come back as execution reports: counted apart,
never as replies).
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

import msgpack

from sprintd.framing import encode_frame
from sprintd.plugins.orders.compact import HELLO, NEW, OK, REPLIES, VERSION

__all__ = [
    "HELLO_FRAME",
    "EntryResult",
    "compact_frames",
    "cpu_seconds",
    "drive",
    "drive_rate",
    "order_frames",
]

HELLO_FRAME = encode_frame([VERSION, [HELLO, "bench"]])
"""A compact session's first frame: account ``bench``."""

_LENGTH = struct.Struct(">I")
# One reply in this many is decoded and checked.
CHECK_EVERY = 997


@dataclass(frozen=True)
class EntryResult:
    orders: int
    frames: int
    seconds: float
    # Per frame, send (or, at a constant rate, when it was due) to reply, in microseconds.
    latency_us: array[int]
    refused: int
    # Execution-report frames pushed meanwhile (compact sessions).
    reports: int = 0
    # The daemon's CPU time (user and system, its threads and workers) over
    # the load: the cost per order that a shared machine's neighbours do not
    # change the way they change throughput.
    server_cpu_s: float = 0.0

    @property
    def per_second(self) -> float:
        return self.orders / self.seconds

    @property
    def cpu_us_per_order(self) -> float:
        return self.server_cpu_s / max(self.orders, 1) * 1e6


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) a process and its descendants have used,
    from /proc (a descendant that exited meanwhile is not counted)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            # The fields after the command name, which may hold spaces.
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            tasks = os.listdir(f"/proc/{current}/task")
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
        for task in tasks:
            with contextlib.suppress(FileNotFoundError):
                children = Path(f"/proc/{current}/task/{task}/children").read_text()
                pending += [int(child) for child in children.split()]
    return total


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


def compact_frames(per_frame: int, count: int) -> list[bytes]:
    """``order_frames`` in the compact protocol: the first symbol, 100.00 and
    0.001 as BTC-USD's ticks and lots."""
    frames = []
    n = 0
    for _ in range(count):
        commands: list[list[int]] = []
        for _ in range(per_frame):
            commands.append([NEW, 0, n % 2, 10_000, 10])
            n += 1
        frames.append(encode_frame([VERSION, *commands]))
    return frames


def _connect(host: str, port: int, hello: bytes | None) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hello is not None:
        sock.sendall(hello)
        head = sock.recv(4)
        (length,) = _LENGTH.unpack(head)
        reply = b""
        while len(reply) < length:
            reply += sock.recv(length - len(reply))
        frame = msgpack.unpackb(reply)
        if frame[0] != REPLIES or frame[1][0] != OK:
            raise ConnectionError(f"hello refused: {frame}")
    return sock


def _is_reply(buf: bytearray, at: int) -> bool:
    """Whether the frame at ``at`` is a reply (not a compact report): a map
    reply is an array of arrays; a compact frame's kind follows its array's
    header (fixarray, array 16 or array 32)."""
    head = buf[at + 4]
    if 0x91 <= head <= 0x9F:
        kind = buf[at + 5]
    elif head == 0xDC:
        kind = buf[at + 7]
    elif head == 0xDD:
        kind = buf[at + 9]
    else:
        return True
    return kind == REPLIES or kind >= 0x90  # an int kind, or a map reply's first array


def _refused(payload: bytes) -> int:
    reply = msgpack.unpackb(payload)
    if reply and reply[0] == REPLIES:
        return sum(1 for r in reply[1:] if r[0] != OK)
    return sum(1 for r in reply if r[0] != "ok")


def drive(
    host: str,
    port: int,
    frames: list[bytes],
    per_frame: int,
    window: int,
    seconds: float,
    hello: bytes | None = None,
) -> EntryResult:
    """Send ``frames`` round and round for ``seconds`` with ``window`` in flight
    (after ``hello``, a compact session's first frame)."""
    sock = _connect(host, port, hello)
    latency = array("q")
    sent_at: list[int] = []
    clock = time.perf_counter_ns
    total = len(frames)
    sent = answered = refused = reports = 0
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
                if not _is_reply(buf, at):
                    reports += 1
                    at += 4 + length
                    continue
                if answered % CHECK_EVERY == 0:
                    refused += _refused(bytes(buf[at + 4 : at + 4 + length]))
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
    return EntryResult(answered * per_frame, answered, elapsed, latency, refused, reports)


def drive_rate(
    host: str,
    port: int,
    frames: list[bytes],
    per_frame: int,
    rate: float,
    seconds: float,
    hello: bytes | None = None,
) -> EntryResult:
    """Send ``frames`` at ``rate`` frames/s for ``seconds``, whatever the replies
    do; each frame's latency runs from when it was due (no coordinated omission)."""
    sock = _connect(host, port, hello)
    latency = array("q")
    due_at = array("q")
    clock = time.perf_counter_ns
    total = len(frames)
    interval = int(1e9 / rate)
    sent = answered = refused = reports = 0
    buf = bytearray()
    try:
        began = due = clock()
        deadline = began + int(seconds * 1e9)
        while True:
            now = clock()
            if now < deadline:
                out = []
                while due <= now:
                    out.append(frames[sent % total])
                    due_at.append(due)
                    sent += 1
                    due += interval
                if out:
                    sock.sendall(b"".join(out))
                wait = max(0.0, (due - clock()) / 1e9)
            elif answered >= sent:
                break
            else:
                wait = 1.0
            if not select.select([sock], [], [], wait)[0]:
                continue
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the daemon closed the connection")
            now = clock()
            buf += data
            at = 0
            while len(buf) - at >= 4:
                (length,) = _LENGTH.unpack_from(buf, at)
                if len(buf) - at - 4 < length:
                    break
                if _is_reply(buf, at):
                    if answered % CHECK_EVERY == 0:
                        refused += _refused(bytes(buf[at + 4 : at + 4 + length]))
                    latency.append((now - due_at[answered]) // 1000)
                    answered += 1
                else:
                    reports += 1
                at += 4 + length
            del buf[:at]
        elapsed = (clock() - began) / 1e9
    finally:
        sock.close()
    return EntryResult(answered * per_frame, answered, elapsed, latency, refused, reports)
