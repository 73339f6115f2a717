"""Request bodies on hostile bytes: JSON (cysimdjson) and msgpack decode to a value or a 400."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprintd.http import JSON, MSGPACK, HTTPError, Request

from .fuzzing import NOISE_PER_CALL, bounded, corpus, mutate, retained_per_call

ORDER = {"symbol": "BTC-USD", "side": "buy", "price": "64000.00", "qty": 0.5, "n": [1, None, True]}
JSON_SAMPLES = [json.dumps(ORDER).encode(), b'[1,2,{"a":[]}]', b'"x"', b"12.5e3"]
MSGPACK_SAMPLES = [msgpack.packb(ORDER), msgpack.packb([1, [2, {"k": b"\x00"}]]), b"\xc0"]


def _decode(body: bytes, kind: bytes) -> None:
    request = Request(b"POST", b"/x", b"", [(b"content-type", kind)], body)
    try:
        request.data()
    except HTTPError as exc:
        assert exc.status == 400
        assert exc.code in ("invalid_json", "invalid_body")
        assert exc.message


def _inputs(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    mutated = st.tuples(st.sampled_from(samples), st.randoms(use_true_random=False)).map(
        lambda t: mutate(t[1], t[0], t[1].randint(1, 4))
    )
    return st.one_of(st.binary(max_size=256), mutated)


@given(_inputs(JSON_SAMPLES))
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_any_json_body_is_a_value_or_a_400(body: bytes) -> None:
    with bounded(5):
        _decode(body, JSON)


@given(_inputs(MSGPACK_SAMPLES))
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
def test_any_msgpack_body_is_a_value_or_a_400(body: bytes) -> None:
    with bounded(5):
        _decode(body, MSGPACK)


@pytest.mark.parametrize(
    ("body", "kind"),
    [
        (b"[" * 200_000, JSON),
        (b'{"a":' * 100_000, JSON),
        (b"[" * 5000 + b"]" * 5000, JSON),
        (b"1" * 500_000, JSON),
        (b'{"qty":-9223372036854775809}', JSON),
        (b'"' + b"\\u0000" * 100_000 + b'"', JSON),
        (b"\x91" * 200_000 + b"\xc0", MSGPACK),
        (b"\x81\xa1a" * 100_000 + b"\xc0", MSGPACK),
        # Lengths that claim gigabytes in a few bytes: refused, never allocated.
        (b"\xdb\xff\xff\xff\xff", MSGPACK),
        (b"\xdd\xff\xff\xff\xff", MSGPACK),
        (b"\xdf\xff\xff\xff\xff", MSGPACK),
        (b"\xc6\xff\xff\xff\xff", MSGPACK),
    ],
)
def test_deep_and_lying_bodies_are_bounded(body: bytes, kind: bytes) -> None:
    with bounded(5):
        _decode(body, kind)


@pytest.mark.parametrize(("kind", "samples"), [(JSON, JSON_SAMPLES), (MSGPACK, MSGPACK_SAMPLES)])
def test_decoding_keeps_nothing(kind: bytes, samples: list[bytes]) -> None:
    inputs = corpus(2, 300, samples)

    def run() -> None:
        for body in inputs:
            _decode(body, kind)

    assert retained_per_call(run, 30) / len(inputs) <= NOISE_PER_CALL
