"""The fast-path matcher on hostile bytes: an answer or a decline, bounded, leaving nothing.

``tests/test_fastpath.py`` holds the matcher to h11 (it accepts only what h11
reads the same way); here it meets what no client would send: random bytes,
damaged heads, and the inputs that make a backtracking regex slow.
"""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprintd.app import App, SnapshotSpec
from sprintd.hookspecs import hookimpl
from sprintd.server.fastpath import guarded, match
from sprintd.testing import make_app

from .fuzzing import NOISE_PER_CALL, bounded, corpus, retained_per_call

MAX_HEAD = 16 * 1024
KEY = b"fuzz-key-0123456789ab"


class _Plugin:
    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        return [SnapshotSpec("/snap", b"{}"), SnapshotSpec("/open", b"{}", scope="open")]


APP = make_app(
    [_Plugin()],
    {
        "SPRINTD_AUTH__ENABLED": "true",
        "SPRINTD_AUTH__KEYS__F__KEY": KEY.decode(),
        "SPRINTD_AUTH__LIMITS__FREE__BURST": "1000000000",
    },
)
LINES = APP.snapshots.lines
assert APP.guard is not None
GUARDED = guarded(APP.guard)
SAMPLES = [
    b"GET /snap HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY + b"\r\n\r\n",
    b"HEAD /open HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n",
    b"GET /snap HTTP/1.1\r\nAuthorization: Bearer " + KEY + b"\r\nHost: x\r\n\r\nGET /open",
]
_heads = st.sampled_from(SAMPLES)
_inputs = st.one_of(
    st.binary(max_size=512),
    st.tuples(_heads, st.binary(max_size=64), st.integers(0, 200)).map(
        lambda t: t[0][: t[2]] + t[1] + t[0][t[2] :]
    ),
)


def _check(data: bytes, pos: int) -> None:
    for matcher in (match, GUARDED):
        found = matcher(LINES, data, pos, MAX_HEAD)
        if found is not None:
            entry, end = found
            assert entry in LINES.values()
            assert pos < end <= len(data)
            assert end - pos <= MAX_HEAD
            assert data[end - 4 : end] == b"\r\n\r\n"


@given(_inputs, st.integers(0, 16))
@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
def test_any_bytes_get_an_entry_or_a_decline(data: bytes, pos: int) -> None:
    with bounded(5):
        _check(data, min(pos, len(data)))


# Each of these made a quadratic regex take seconds over one 64 KiB read.
PATHOLOGICAL = [
    b"GET /snap HTTP/1.1\r\nHost: x\r\nX:" + b"\t" * 65000,
    b"GET /snap HTTP/1.1\r\nHost: x\r\nX: a" + b" " * 65000 + b"b",
    b"GET /snap HTTP/1.1\r\nHost: x\r\nX-API-Key: a" + b" " * 16000 + b"b\r\n\r\n",
    b"GET /snap HTTP/1.1\r\n" + b"X: a\r\n" * 10000,
    b"GET /snap HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"a " * 32000,
]


def test_pathological_heads_are_declined_at_once() -> None:
    for data in PATHOLOGICAL:
        # Linear work is about a millisecond here; the quadratic kind was seconds.
        with bounded(1.0):
            for _ in range(3):
                assert match(LINES, data, 0, 64 * 1024) is None or data.endswith(b"\r\n\r\n")
                GUARDED(LINES, data, 0, 64 * 1024)


def test_the_matchers_keep_nothing() -> None:
    inputs = corpus(1, 300, SAMPLES)

    def run() -> None:
        for data in inputs:
            match(LINES, data, 0, MAX_HEAD)
            GUARDED(LINES, data, 0, MAX_HEAD)

    assert retained_per_call(run, 50) / len(inputs) <= NOISE_PER_CALL
