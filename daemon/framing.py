"""Binary frames: a 4-byte big-endian length, then that many bytes of msgpack.

This is the wire format of sprintd's binary ports (order entry, price feeds).
It is sans-IO: ``FrameDecoder`` takes bytes as they arrive and yields whole
payloads; the connection loop that reads sockets is ``server.framed``.

Format:

    frame   = length payload
    length  = uint32, big-endian, the payload's size in bytes (1 .. max_frame)
    payload = a msgpack array

A frame whose payload does not decode is a *recoverable* error: the length
told where it ends, so the next frame starts in the right place and the
connection goes on after an error reply. A length of zero or over
``max_frame`` is *fatal*: nothing after it can be trusted to be a frame
boundary, so the connection is closed with a reason.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import msgpack

__all__ = [
    "DEFAULT_MAX_FRAME",
    "FrameDecoder",
    "FrameError",
    "PayloadError",
    "decode_payload",
    "encode_frame",
]

_LENGTH = struct.Struct(">I")
HEADER = _LENGTH.size
# A frame holds a batch of commands; a megabyte is thousands of them, and a
# larger length from a client is far likelier a desynchronised stream.
DEFAULT_MAX_FRAME = 1 << 20


class FrameError(Exception):
    """The stream cannot be framed any more: close the connection with this reason."""


class PayloadError(ValueError):
    """One frame's payload is not a msgpack array: answer with an error, go on."""


class FrameDecoder:
    """Splits a byte stream into frame payloads.

    Resource handling: at most one incomplete frame (``max_frame`` bytes) is
    buffered; whole frames are handed out as they complete.
    """

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            # Drop what was consumed before growing, so the buffer never holds
            # more than one partial frame plus one read.
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def frames(self) -> Iterator[bytes]:
        """The payloads of every whole frame buffered so far, in order.

        Raises:
            FrameError: a length of zero or over ``max_frame``.
        """
        buf = self._buf
        end = len(buf)
        while end - self._pos >= HEADER:
            (length,) = _LENGTH.unpack_from(buf, self._pos)
            if not 0 < length <= self.max_frame:
                raise FrameError(f"frame length {length} outside 1..{self.max_frame}")
            start = self._pos + HEADER
            if end - start < length:
                return
            self._pos = start + length
            yield bytes(buf[start : self._pos])

    @property
    def buffered(self) -> int:
        return len(self._buf) - self._pos


def decode_payload(payload: bytes) -> list[Any]:
    """A frame's payload as a list.

    Raises:
        PayloadError: not msgpack, trailing bytes, or not an array.
    """
    try:
        value = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.UnpackException) as exc:
        # Some of msgpack's errors (StackError: nested too deep) carry no text.
        reason = str(exc) or type(exc).__name__
        raise PayloadError(f"payload is not msgpack: {reason}") from None
    if not isinstance(value, list):
        raise PayloadError(f"payload is a msgpack {type(value).__name__}, not an array")
    return value


def encode_frame(value: Any) -> bytes:
    payload: bytes = msgpack.packb(value, use_bin_type=True)
    return _LENGTH.pack(len(payload)) + payload
