"""The binary frame decoder on hostile streams: payloads or a FrameError, bounded buffers."""

from __future__ import annotations

import struct

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprintd.framing import FrameDecoder, FrameError, PayloadError, decode_payload, encode_frame

from .fuzzing import NOISE_PER_CALL, bounded, corpus, retained_per_call

MAX_FRAME = 4096
GOOD = b"".join(encode_frame(["new", {"symbol": "BTC-USD", "qty": "1"}]) for _ in range(3))
SAMPLES = [GOOD, encode_frame([]), struct.pack(">I", 3) + b"\x93\x01\x02", b"\x00\x00\x00\x01\xc1"]


def _run(chunks: list[bytes]) -> int:
    """Feed ``chunks`` as reads arrive; the payloads decoded, until a fatal length."""
    decoder = FrameDecoder(MAX_FRAME)
    seen = 0
    for chunk in chunks:
        decoder.feed(chunk)
        try:
            for payload in decoder.frames():
                assert 0 < len(payload) <= MAX_FRAME
                seen += 1
                try:
                    assert isinstance(decode_payload(payload), list)
                except PayloadError as exc:
                    assert str(exc)
        except FrameError as exc:
            assert "outside" in str(exc)
            return seen
        # At most one partial frame (and its length) stays buffered.
        assert decoder.buffered < MAX_FRAME + 4
    return seen


_streams = st.one_of(
    st.lists(st.binary(max_size=300), max_size=8),
    st.tuples(st.sampled_from(SAMPLES), st.binary(max_size=16), st.integers(0, 64)).map(
        lambda t: [t[0][: t[2]], t[1], t[0][t[2] :]]
    ),
)


@given(_streams)
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_any_stream_gives_payloads_or_a_frame_error(chunks: list[bytes]) -> None:
    with bounded(5):
        _run(chunks)


def test_a_stream_of_tiny_reads_is_decoded_whole() -> None:
    with bounded(5):
        assert _run([GOOD[i : i + 1] for i in range(len(GOOD))] * 50) == 150


def test_a_frame_that_never_ends_keeps_one_frame_at_most() -> None:
    decoder = FrameDecoder(MAX_FRAME)
    decoder.feed(struct.pack(">I", MAX_FRAME))
    for _ in range(MAX_FRAME - 1):
        decoder.feed(b"\x00")
        assert list(decoder.frames()) == []
    assert decoder.buffered == MAX_FRAME + 3


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xdd\xff\xff\xff\xff", "exceeds max_array_len"),  # an array of 2**32 - 1
        (b"\x91" * 100_000, "StackError"),  # arrays nested 100,000 deep
        (msgpack.packb({1: 2}), "not allowed for map key"),
    ],
    ids=["huge-array", "deep-nesting", "int-map-key"],
)
def test_payloads_that_lie_about_their_size(payload: bytes, reason: str) -> None:
    """Refused with a reason, in bounded time and memory, never half decoded."""
    with bounded(5), pytest.raises(PayloadError) as refused:
        decode_payload(payload)
    assert str(refused.value).startswith("payload is not msgpack: ")
    assert reason in str(refused.value)


def test_decoding_keeps_nothing() -> None:
    inputs = corpus(3, 200, SAMPLES)

    def run() -> None:
        for data in inputs:
            _run([data])

    assert retained_per_call(run, 30) / len(inputs) <= NOISE_PER_CALL
