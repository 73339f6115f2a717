"""In-process update cost: ``python -m bench.prices.inprocess --regime R --out FILE``.

The parent runs one of these per GC regime, pinned to the server's CPU (a
regime changes the whole process's collector, so each gets a fresh one).
Each variant builds a fresh engine seeded with the run's symbols, warms up,
then times every call on its own with ``perf_counter_ns``:

- ``route``: a JSON body through ``post_prices`` (what ``POST /v1/prices``
  runs once h11 has the body): decode, check, apply, publish, answer.
- ``engine``: an already decoded update through ``PriceEngine.ingest``.
- ``parse``: ``Request.data()`` alone, the floor under ``route``.
- ``feed``: frames of ``FEED_BATCH`` positional updates through
  ``submit`` and one ``publish``, as the feed port runs a read; a sample is
  a frame's time divided by its updates (the amortized cost per update).

Regimes are ``bench.engine.gcregime``'s: CPython's defaults, or the
enterprise tier's GC policy with its governor between batches of updates.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.engine import stats
from bench.engine.gcregime import BATCH, Pauses, Regime
from sprintd.http import Request
from sprintd.latency import Recorder
from sprintd.plugins.prices.api import post_prices
from sprintd.plugins.prices.engine import PriceEngine
from sprintd.plugins.prices.perftest import synthetic_bodies
from sprintd.snapshots import SnapshotTable

__all__ = ["FEED_BATCH", "VARIANTS", "main", "symbols"]

VARIANTS = ("route", "engine", "parse", "feed")
FEED_BATCH = 100
WARMUP_SHARE = 0.05
_HEADERS = ((b"content-type", b"application/json"),)


def symbols(count: int) -> list[str]:
    return [f"SYM-{n}" for n in range(count)]


def _engine(names: Sequence[str]) -> PriceEngine:
    table = SnapshotTable()
    reads = Recorder("reads")
    engine = PriceEngine(
        lambda path, body: table.register(path, body, reads),
        max_symbols=max(1000, len(names)),
        max_batch=10_000,
    )
    engine.ingest([{"symbol": s, "price": 1} for s in names], time.perf_counter_ns())
    return engine


def _inputs(variant: str, count: int, names: Sequence[str]) -> list[Any]:
    """``count`` updates in the variant's form, spread over ``names``."""
    rng = random.Random(count)
    if variant == "feed":
        return [
            [[rng.choice(names), round(rng.uniform(1, 1e5), 2), 1.5] for _ in range(FEED_BATCH)]
            for _ in range(max(1, count // FEED_BATCH))
        ]
    bodies = [
        body.replace(b'"PERF-', b'"SYM-')
        for body in synthetic_bodies(min(count, 8192), seed=len(names))
    ]
    pool = [json.loads(b) for b in bodies] if variant == "engine" else bodies
    return [pool[n % len(pool)] for n in range(count)]


def _step(variant: str, engine: PriceEngine, samples: array[int]) -> Callable[[Any], None]:
    """A function timing each item of a batch into ``samples``, in order."""
    clock = time.perf_counter_ns
    pos = 0

    def route(batch: Sequence[bytes]) -> None:
        nonlocal pos
        for body in batch:
            t0 = clock()
            post_prices(engine, Request(b"POST", b"/v1/prices", b"", _HEADERS, body, t0))
            samples[pos] = clock() - t0
            pos += 1

    def parse(batch: Sequence[bytes]) -> None:
        nonlocal pos
        for body in batch:
            t0 = clock()
            Request(b"POST", b"/v1/prices", b"", _HEADERS, body, t0).data()
            samples[pos] = clock() - t0
            pos += 1

    def ingest(batch: Sequence[dict[str, Any]]) -> None:
        nonlocal pos
        for update in batch:
            t0 = clock()
            engine.ingest(update, t0)
            samples[pos] = clock() - t0
            pos += 1

    def feed(batch: Sequence[list[Any]]) -> None:
        nonlocal pos
        for frame in batch:
            t0 = clock()
            engine.submit(frame)
            engine.publish(t0)
            samples[pos] = (clock() - t0) // len(frame)
            pos += 1

    steps: dict[str, Callable[[Any], None]] = {
        "route": route,
        "parse": parse,
        "engine": ingest,
        "feed": feed,
    }
    return steps[variant]


def measure(variant: str, regime: Regime, count: int, names: Sequence[str]) -> dict[str, Any]:
    engine = _engine(names)
    warm = _inputs(variant, max(1, int(count * WARMUP_SHARE)), names)
    _step(variant, engine, array("q", bytes(8 * len(warm))))(warm)
    items = _inputs(variant, count, names)
    samples = array("q", bytes(8 * len(items)))
    step = _step(variant, engine, samples)
    batch = BATCH if variant != "feed" else max(1, BATCH // FEED_BATCH)
    batches = [items[i : i + batch] for i in range(0, len(items), batch)]
    with Pauses() as pauses:
        elapsed = regime.drive(batches, step)
    updates = len(items) * (FEED_BATCH if variant == "feed" else 1)
    assert engine.errors == 0, f"{variant}: {engine.errors} updates refused"
    return {
        "variant": variant,
        "updates": updates,
        "updates_s": updates / (elapsed / 1e9),
        "latency": stats.summary(samples),
        "gc_pauses": pauses.to_json(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.prices.inprocess")
    parser.add_argument("--regime", choices=("defaults", "tier"), required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--symbols", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    regime = Regime(args.regime)
    regime.before_build()
    names = symbols(args.symbols)
    regime.after_build(0)
    result: dict[str, Any] = {"regime": args.regime, "gc": regime.state(), "variants": {}}
    for variant in VARIANTS:
        try:
            result["variants"][variant] = measure(variant, regime, args.count, names)
        except Exception as exc:  # the parent reports it as "not measured"
            result["variants"][variant] = {"error": f"{type(exc).__name__}: {exc}"}
    args.out.write_text(json.dumps(result) + "\n", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
