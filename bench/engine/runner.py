"""One measurement in a process of its own: ``python -m bench.engine.runner ...``.

The parent starts one of these per engine, load and pass, pinned to a CPU, so
no engine inherits another's heap, collector state or warm caches. It reads the
stream the parent wrote (marshal), translates it for its engine, builds the
engine, runs one pass and writes what it measured as JSON.

Passes:
- check: a scripted scenario that a correct engine must trade a certain way;
  a misused API cannot then pass for a fast engine.
- verify: the whole stream, summing what each order took; the parent compares
  it with the reference book's total.
- throughput: the whole stream under one clock.
- latency: the whole stream again, each command timed on its own.
- memory: RSS growth while orders that never cross come to rest.
"""

from __future__ import annotations

import argparse
import json
import marshal
import os
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.engine import stats
from bench.engine.adapters import Bound, open_engine
from bench.engine.gcregime import BATCH, Pauses, Regime, heap_blocks
from bench.engine.loads import BUY, CANCEL, GTC, IOC, LIMIT, MARKET, NEW, SELL, Command
from bench.engine.variants import by_key

__all__ = ["PASSES", "main"]

PASSES = ("check", "verify", "throughput", "latency", "memory")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        result = _run(args)
    except Exception as exc:  # the parent reports it as "not measured"
        result = {"error": f"{type(exc).__name__}: {exc}"}
    Path(args.out).write_text(json.dumps(result) + "\n", "utf-8")
    return 0 if "error" not in result else 1


def _run(args: argparse.Namespace) -> dict[str, Any]:
    variant = by_key(args.variant)
    regime = Regime(variant.gc)
    regime.before_build()
    if args.pass_ == "check":
        return _check(open_engine(variant.adapter))
    before = heap_blocks()
    with open(args.stream, "rb") as f:
        commands: list[Command] = marshal.load(f)
    memory = args.pass_ == "memory"
    # At the maximum tier the daemon's engine reserves its table
    # ([orders] reserve_orders); sized here, as an operator would, for the
    # most orders this stream can leave resting.
    reserve = sum(1 for c in commands if c[0] == NEW) if variant.gc == "tier" and not memory else 0
    bound = open_engine(variant.adapter, keep_all=memory, reserve=reserve)
    native = bound.prepare(commands)
    del commands
    batches = [native[i : i + BATCH] for i in range(0, len(native), BATCH)]
    ops = len(native)
    del native
    if memory:
        return _memory(bound, regime, batches, ops)
    samples = array("q", bytes(8 * ops)) if args.pass_ == "latency" else None
    stream_blocks = heap_blocks() - before
    regime.after_build(stream_blocks)
    with Pauses() as pauses:
        if args.pass_ == "throughput":
            cpu = time.process_time_ns()
            elapsed = regime.drive(batches, _plain(bound))
            cpu = time.process_time_ns() - cpu
            # Below 1.0, something else had this CPU for part of the run.
            result: dict[str, Any] = {"ops": ops, "elapsed_ns": elapsed, "cpu_share": cpu / elapsed}
        elif args.pass_ == "latency":
            assert samples is not None
            elapsed = regime.drive(batches, _timed(bound, samples))
            result = {"ops": ops, "elapsed_ns": elapsed}
        else:
            counts = [0, 0]
            regime.drive(batches, _tallied(bound, counts))
            result = {"ops": ops, "traded_qty": counts[0], "refused": counts[1]}
    if samples is not None:
        # Sorted once the pauses are no longer recorded: its collections are not the engine's.
        result.update(stats.summary(samples))
    result["problems"] = bound.finish()
    result["stream_blocks"] = stream_blocks
    result["gc_pauses"] = pauses.to_json()
    result["gc"] = regime.state()
    return result


def _plain(bound: Bound) -> Any:
    new, cancel = bound.new, bound.cancel

    def step(batch: Sequence[Command]) -> None:
        for op, oid, side, price, qty, kind, tif in batch:
            if op:
                cancel(oid)
            else:
                new(oid, side, price, qty, kind, tif)

    return step


def _timed(bound: Bound, samples: array[int]) -> Any:
    new, cancel, clock = bound.new, bound.cancel, time.perf_counter_ns
    at = 0

    def step(batch: Sequence[Command]) -> None:
        nonlocal at
        i = at
        for op, oid, side, price, qty, kind, tif in batch:
            began = clock()
            if op:
                cancel(oid)
            else:
                new(oid, side, price, qty, kind, tif)
            samples[i] = clock() - began
            i += 1
        at = i

    return step


def _tallied(bound: Bound, counts: list[int]) -> Any:
    """Sum what each order took (counts[0]) and the commands refused (counts[1])."""
    new, cancel, tally, refused = bound.new, bound.cancel, bound.tally, bound.refused

    def step(batch: Sequence[Command]) -> None:
        total = bad = 0
        for op, oid, side, price, qty, kind, tif in batch:
            if op:
                result = cancel(oid)
            else:
                result = new(oid, side, price, qty, kind, tif)
                total += tally(result)
            if refused(result):
                bad += 1
        counts[0] += total
        counts[1] += bad

    return step


def _memory(bound: Bound, regime: Regime, batches: list[list[Command]], ops: int) -> dict[str, Any]:
    regime.after_build(0)
    before = _rss()
    regime.drive(batches, _plain(bound))
    after = _rss()
    return {
        "orders": ops,
        "rss_before": before,
        "rss_after": after,
        "growth_bytes": after - before,
        "problems": bound.finish(),
    }


def _rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


# (command, quantity it must take) in order; ids 1, 2, 3... as in every stream.
_SCENARIO: tuple[tuple[Command, int], ...] = (
    ((NEW, 1, BUY, 100, 10, LIMIT, GTC), 0),
    # Crosses the resting bid: a partial fill of 4.
    ((NEW, 2, SELL, 100, 4, LIMIT, GTC), 4),
    ((CANCEL, 1, 0, 0, 0, 0, 0), 0),
    # The bid is gone, so this one rests.
    ((NEW, 3, SELL, 100, 1, LIMIT, GTC), 0),
    ((NEW, 4, BUY, 99, 1, LIMIT, GTC), 0),
    ((NEW, 5, BUY, 0, 1, MARKET, IOC), 1),
    # Takes the bid at 99; the other 4 must not rest...
    ((NEW, 6, SELL, 99, 5, LIMIT, IOC), 1),
    # ...or this would trade with them.
    ((NEW, 7, BUY, 99, 1, LIMIT, GTC), 0),
)


def _check(bound: Bound) -> dict[str, Any]:
    problems: list[str] = []
    native = bound.prepare([command for command, _ in _SCENARIO])
    for step, ((command, wanted), translated) in enumerate(zip(_SCENARIO, native, strict=True), 1):
        op, oid, side, price, qty, kind, tif = translated
        if op:
            result = bound.cancel(oid)
            took = 0
        else:
            result = bound.new(oid, side, price, qty, kind, tif)
            took = bound.tally(result)
        # An engine that only says whether an order traded is held to that.
        ok = took == wanted if bound.exact else (took > 0) == (wanted > 0)
        if not ok:
            problems.append(f"step {step} {command}: traded {took}, expected {wanted}")
        if bound.refused(result):
            problems.append(f"step {step} {command}: refused ({result!r})")
    problems += bound.finish()
    return {"problems": problems, "exact": bound.exact}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.engine.runner")
    parser.add_argument("--variant", required=True)
    parser.add_argument("--pass", dest="pass_", choices=PASSES, required=True)
    parser.add_argument("--stream", help="marshal file of commands (all passes but check)")
    parser.add_argument("--out", required=True, help="where to write the JSON result")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
