"""The binary framing: the sans-IO decoder, and the connection loop over a socketpair."""

from __future__ import annotations

import socket
import struct
from time import perf_counter_ns
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from sprintd.framing import (
    FrameDecoder,
    FrameError,
    PayloadError,
    decode_payload,
    encode_frame,
)
from sprintd.server.framed import framed_listener, timed_framed_listener
from sprintd.server.state import Conn

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)
_arrays = st.lists(_values, max_size=5)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@given(st.lists(_arrays, max_size=8), st.lists(st.integers(0, 10_000), max_size=12))
def test_any_chunking_yields_the_same_frames(arrays: list[list[Any]], cuts: list[int]) -> None:
    stream = b"".join(encode_frame(a) for a in arrays)
    decoder = FrameDecoder()
    got: list[list[Any]] = []
    for chunk in _split(stream, cuts):
        decoder.feed(chunk)
        got += [decode_payload(p) for p in decoder.frames()]
    assert got == arrays
    assert decoder.buffered == 0


@pytest.mark.parametrize("length", [0, 1025])
def test_a_length_that_cannot_be_a_frame_is_fatal(length: int) -> None:
    decoder = FrameDecoder(max_frame=1024)
    decoder.feed(struct.pack(">I", length) + b"x" * 8)
    with pytest.raises(FrameError, match=str(length)):
        list(decoder.frames())


@pytest.mark.parametrize(
    "payload",
    [b"\xc1", msgpack.packb({"a": 1}), msgpack.packb(7), msgpack.packb([1]) + b"\x00"],
    ids=["never-used-byte", "map", "int", "trailing-bytes"],
)
def test_a_payload_that_is_not_one_array_is_rejected(payload: bytes) -> None:
    with pytest.raises(PayloadError):
        decode_payload(payload)


@given(st.binary(max_size=64))
@settings(max_examples=300)
def test_garbage_payloads_never_escape_as_other_errors(payload: bytes) -> None:
    try:
        value = decode_payload(payload)
    except PayloadError:
        return
    assert isinstance(value, list)


# --- the connection loop -----------------------------------------------------


async def _echo(batch: list[list[Any]]) -> list[Any]:
    return [["ok", len(batch), *cmd] for cmd in batch]


async def _talk(data: bytes, max_frame: int = 1 << 20, serve: Any = None) -> list[Any]:
    """Send ``data``, half-close, and decode every reply frame."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    client = trio.socket.from_stdlib_socket(ours)
    received = bytearray()
    serve = serve or framed_listener(_echo, max_frame=max_frame)

    async def run() -> None:
        with theirs:
            await serve(Conn(theirs, bytearray(65536)))

    with client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            await client.send(data)
            client.shutdown(socket.SHUT_WR)
            while chunk := await client.recv(65536):
                received += chunk
    decoder = FrameDecoder()
    decoder.feed(bytes(received))
    return [decode_payload(p) for p in decoder.frames()]


async def test_pipelined_frames_are_answered_in_order_as_one_batch() -> None:
    replies = await _talk(encode_frame(["a"]) + encode_frame(["b", 1]) + encode_frame(["c"]))
    assert replies == [["ok", 3, "a"], ["ok", 3, "b", 1], ["ok", 3, "c"]]


async def test_a_bad_payload_gets_an_error_in_its_place_and_the_connection_goes_on() -> None:
    bad = struct.pack(">I", 1) + b"\xc1"
    replies = await _talk(encode_frame(["a"]) + bad + encode_frame(["c"]))
    assert replies[0] == ["ok", 2, "a"]
    assert replies[1][:2] == ["error", "bad_frame"]
    assert replies[2] == ["ok", 2, "c"]


async def test_a_bad_length_answers_what_came_before_then_closes() -> None:
    replies = await _talk(
        encode_frame(["a"]) + struct.pack(">I", 10_000) + encode_frame(["b"]), max_frame=1024
    )
    assert replies[0] == ["ok", 1, "a"]
    assert replies[1][:2] == ["error", "bad_length"]
    assert len(replies) == 2


async def test_a_timed_handler_gets_the_time_its_batch_was_read() -> None:
    seen: list[int] = []

    async def timed(batch: list[list[Any]], received_ns: int) -> list[Any]:
        seen.append(received_ns)
        return [["at", received_ns <= perf_counter_ns()] for _ in batch]

    before = perf_counter_ns()
    replies = await _talk(
        encode_frame(["a"]) + encode_frame(["b"]), serve=timed_framed_listener(timed)
    )
    assert replies == [["at", True], ["at", True]]
    # One read, one batch, one time: taken after the bytes came, before the handler.
    assert len(seen) == 1
    assert before <= seen[0] <= perf_counter_ns()
