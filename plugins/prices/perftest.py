"""The performance test anyone can run: N updates through the real path, in process.

``POST /v1/price-engine/performance-test {"num_updates": N}`` builds a
scratch engine (the same class, limits and snapshot encoding as the live one,
with a snapshot table of its own), so the test never overwrites a real price
or mixes its samples into the live figures. Each update is a JSON body,
handed to the same function the ``POST /v1/prices`` route calls, as a
``Request`` stamped with the time just before it: parse, check, apply,
publish, timed by the engine as on the wire. Between slices of ``SLICE``
updates the test yields to the event loop, so the daemon keeps serving while
it runs; no update's timing spans a yield.

The answer is the scratch engine's figures (GET /v1/price-engine/metrics'
shape; the percentiles cover the last 10,000 updates, as the engine's ring
does) with ``throughput`` over the test's wall time (checkpoints included),
``num_updates``, ``duration_ms``, and ``passed``: p95 under 1 ms.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

import trio

from sprintd import HTTPError, Request, Response

from .engine import SLA_P95_US, PriceEngine

__all__ = ["SLICE", "SYMBOLS", "run", "synthetic_bodies"]

# Updates between two checkpoints: ~2-3 ms of the loop at ~10 us each, short
# enough that a request arriving meanwhile waits no longer than that.
SLICE = 256
SYMBOLS = tuple(f"PERF-{n}" for n in range(16))
# Distinct bodies made before the clock starts and cycled through, so making
# them is not timed: enough that the symbols and prices keep moving.
POOL = 4096
_PATH = b"/v1/prices"
_HEADERS = ((b"content-type", b"application/json"),)

Handler = Callable[[PriceEngine, Request], Response]


def synthetic_bodies(count: int, seed: int = 0) -> list[bytes]:
    """``count`` JSON update bodies: a random walk per symbol, as a feed sends."""
    rng = random.Random(seed)
    prices = [rng.uniform(10.0, 50_000.0) for _ in SYMBOLS]
    now_ms = time.time_ns() // 1_000_000
    bodies = []
    for n in range(count):
        which = n % len(SYMBOLS)
        prices[which] = max(0.01, prices[which] * (1 + rng.gauss(0, 0.0005)))
        bodies.append(
            (
                f'{{"symbol":"{SYMBOLS[which]}","price":{prices[which]:.2f},'
                f'"volume":{rng.uniform(0, 1000):.4f},"timestamp_ms":{now_ms + n},'
                f'"change_24h":{rng.uniform(-5, 5):.3f}}}'
            ).encode("ascii")
        )
    return bodies


async def run(num_updates: int, engine: PriceEngine, handle: Handler) -> dict[str, Any]:
    """Run ``num_updates`` updates through ``handle`` on a scratch ``engine``."""
    pool = synthetic_bodies(min(num_updates, POOL))
    size = len(pool)
    began = perf_counter_ns()
    done = 0
    while done < num_updates:
        end = min(done + SLICE, num_updates)
        for n in range(done, end):
            received = perf_counter_ns()
            # try/except, not contextlib.suppress: no context manager per update.
            try:  # noqa: SIM105
                handle(engine, Request(b"POST", _PATH, b"", _HEADERS, pool[n % size], received))
            except HTTPError:
                pass  # the engine counted it among its errors
        done = end
        await trio.sleep(0)
    elapsed_ns = perf_counter_ns() - began
    figures = engine.figures()
    figures["throughput"] = round(num_updates / (elapsed_ns / 1e9), 1)
    figures["num_updates"] = num_updates
    figures["duration_ms"] = round(elapsed_ns / 1e6, 3)
    figures["passed"] = figures["latency"]["p95"] < SLA_P95_US
    return figures
