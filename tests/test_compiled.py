"""The compiled build held to the pure-Python source it is compiled from.

``setup.py`` compiles ``sprintd.version.COMPILED_MODULES`` with mypyc when
``SPRINTD_COMPILE=1`` asks and it can. The installed modules are whichever
build that was; the ``.py`` files are installed beside them in every build,
and are loaded here a second time (``sprintd.version.load_source``), from
source, as a package of their own (``_pure_orders``, ``_pure_framing``), so both
run in one process. The same random command streams then go through both
engines, which must give the same events after every command and the same book,
order states and snapshot bytes at the end; the same byte streams through both
frame decoders, the same frames and errors.

``make test`` runs this module twice: in the suite on the pure build (where the
two are the same code, and the test checks the harness) and with the engine's
and framing's tests on a compiled build (``make test-compiled``), where it is
the point. ``EXPECTED_BUILD`` tells it which build the Makefile installed,
so a compile that silently fell back to Python fails here instead of passing.
"""

from __future__ import annotations

import importlib.machinery
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sprintd.plugins.orders
from sprintd import framing
from sprintd.plugins.orders import engine as engine_module
from sprintd.plugins.orders.snapshot import snapshot
from sprintd.version import COMPILED_MODULES, build, load_source

from .test_engine import apply, streams

ORDERS = Path(sprintd.plugins.orders.__file__).parent
PURE = "_pure_orders"


def _is_extension(module: ModuleType) -> bool:
    spec = module.__spec__
    return spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)


@pytest.fixture(scope="module")
def pure() -> Iterator[ModuleType]:
    """The orders engine's modules (and snapshot) loaded from source as ``_pure_orders``."""
    yield load_source(PURE, ORDERS, ["engine", "snapshot"])
    for name in [n for n in sys.modules if n == PURE or n.startswith(PURE + ".")]:
        del sys.modules[name]


PURE_FRAMING = load_source("_pure_core", Path(framing.__file__).parent, ["framing"]).framing


def test_the_build_is_what_it_says(pure: ModuleType) -> None:
    # /health and --version read build(); the modules really loaded must agree.
    compiled = build()["mode"] == "compiled"
    installed = [sys.modules[name] for name in COMPILED_MODULES if name in sys.modules]
    assert installed, "the compiled modules are imported by this test module"
    assert all(_is_extension(m) == compiled for m in installed)
    # The reference is Python whatever the build.
    assert not _is_extension(pure.engine)
    assert pure.engine.PriceTimeEngine is not engine_module.PriceTimeEngine


def test_source_loaded_twice_is_whole_both_times(pure: ModuleType) -> None:
    # The bench loads it once per engine it opens in one process.
    again = load_source(PURE, ORDERS, ["engine", "snapshot"])
    assert again.engine.PriceTimeEngine is pure.engine.PriceTimeEngine
    assert again.snapshot.snapshot is pure.snapshot.snapshot


def test_the_build_is_the_one_the_makefile_installed() -> None:
    wanted = os.environ.get("EXPECTED_BUILD", build()["mode"])
    assert build()["mode"] == wanted


def _final_state(engine: Any, ids: set[int]) -> tuple[Any, ...]:
    return (
        list(engine.iter_book()),
        engine.depth(1000),
        engine.open_orders,
        engine.sequence,
        engine.trade_seq,
        [tuple(engine.order(oid) or ()) for oid in sorted(ids)],
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams(max_size=150), st.sampled_from([64, 4096]))
def test_compiled_engine_matches_pure_source(
    pure: ModuleType, cmds: list[tuple[Any, ...]], done_capacity: int
) -> None:
    # A small done store too: generations roll over inside the matching loop.
    compiled = engine_module.PriceTimeEngine("T", done_capacity=done_capacity)
    reference = pure.engine.PriceTimeEngine("T", done_capacity=done_capacity)
    for cmd in cmds:
        assert apply(compiled, cmd) == apply(reference, cmd), cmd
    ids = {cmd[1] for cmd in cmds}
    assert _final_state(compiled, ids) == _final_state(reference, ids)
    assert snapshot(compiled) == pure.snapshot.snapshot(reference)


def _decode_all(module: ModuleType, chunks: list[bytes]) -> list[Any]:
    """What one decoder makes of ``chunks``: each payload or error, in order."""
    decoder = module.FrameDecoder(256)
    out: list[Any] = []
    for chunk in chunks:
        decoder.feed(chunk)
        try:
            for payload in decoder.frames():
                try:
                    out.append(module.decode_payload(payload))
                except ValueError as exc:
                    out.append(("payload error", str(exc)))
        except Exception as exc:
            out.append(("fatal", type(exc).__name__, str(exc)))
            return out
        out.append(("buffered", decoder.buffered))
    return out


# msgpack packs integers of 64 bits.
_values = st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5)
_frames = st.lists(
    st.one_of(
        st.binary(max_size=40).map(lambda b: struct.pack(">I", len(b)) + b),
        st.lists(st.integers(-(2**63), 2**64 - 1) | st.text(max_size=5), max_size=4).map(
            framing.encode_frame
        ),
        st.binary(max_size=8),
    ),
    max_size=10,
)


@settings(max_examples=200, deadline=None)
@given(_frames, st.lists(st.integers(1, 64), min_size=1, max_size=10))
def test_compiled_framing_matches_pure_source(frames: list[bytes], sizes: list[int]) -> None:
    data = b"".join(frames)
    chunks: list[bytes] = []
    at = 0
    while at < len(data):
        size = sizes[len(chunks) % len(sizes)]
        chunks.append(data[at : at + size])
        at += size
    assert _decode_all(framing, chunks) == _decode_all(PURE_FRAMING, chunks)
    assert framing.encode_frame(frames) == PURE_FRAMING.encode_frame(frames)
