"""Run the engine bench: ``python -m bench.engine [--quick] [--engines a,b] [--ops N]``.

Each load's stream is built once, here, and written to a scratch file; every
measurement is then a runner process of its own (bench.engine.runner) that
reads it. Throughput runs of the different engines take turns, so a noisy
minute on the machine spreads over all of them rather than landing on one.
"""

from __future__ import annotations

import argparse
import hashlib
import marshal
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import facts as machine_facts
from bench.common.cli import add_run_options, choices, positive, say, start
from bench.common.paths import short
from bench.common.pinning import plan
from bench.common.report import finish
from bench.engine import loads, report
from bench.engine.launch import Launcher
from bench.engine.results import LoadFigures, StreamFacts, VariantRun
from bench.engine.targets import evaluate
from bench.engine.variants import ENGINES, selected

OPS, QUICK_OPS = 1_000_000, 100_000
REPEAT, QUICK_REPEAT = 5, 1
RESTING = 100_000
PACKAGES = ("sprintd", "liquibook", "lightmatchingengine", "trio", "matplotlib")


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started, out = start("engine", args.out)
    ops = args.ops or (QUICK_OPS if args.quick else OPS)
    repeat = args.repeat or (QUICK_REPEAT if args.quick else REPEAT)
    pinning = plan(args.pin)
    machine = machine_facts.collect(PACKAGES)
    runs = [VariantRun(v) for v in selected(args.engines)]
    say(
        f"engine bench: {', '.join(r.variant.key for r in runs)}; {ops:,} commands per load, "
        f"{repeat} throughput run(s) each; results in {short(out)}"
    )
    say(f"pinning: {_pinning(pinning.server)}")
    streams: list[StreamFacts] = []
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as scratch:
        launcher = Launcher(pinning.server, Path(scratch))
        try:
            _measure(runs, streams, launcher, Path(scratch), ops=ops, repeat=repeat)
        except KeyboardInterrupt:
            interrupted = True
            say("interrupted: writing a partial report")
        commands = launcher.commands
    targets = evaluate(runs)
    path = report.write(
        report.Run(
            started=started,
            ops=ops,
            repeat=repeat,
            resting=RESTING,
            pinning=_pinning(pinning.server),
            facts=machine,
            streams=streams,
            runs=runs,
            targets=targets,
            commands=commands,
            interrupted=interrupted,
            load_end=tuple(round(x, 2) for x in os.getloadavg()),
        ),
        out,
    )
    return finish(targets, path, interrupted=interrupted, failed=any(r.failures for r in runs))


def _measure(
    runs: list[VariantRun],
    streams: list[StreamFacts],
    launcher: Launcher,
    scratch: Path,
    *,
    ops: int,
    repeat: int,
) -> None:
    for run in runs:
        if run.variant.floor:
            continue
        result = launcher.run(run.variant.key, "check")
        why = result.get("error") or "; ".join(result.get("problems", []))
        if why:
            run.failures["check"] = why
            say(f"check   {run.variant.title}: NOT MEASURED: {why}")
        else:
            run.exact = bool(result["exact"])
            say(f"check   {run.variant.title}: trades as it should")
    usable = [run for run in runs if run.usable]
    for load in loads.LOADS:
        began = time.monotonic()
        stream = loads.generate(load, ops)
        path = scratch / f"{load.key}.marshal"
        data = marshal.dumps(stream.commands)
        path.write_bytes(data)
        facts = _facts(stream, hashlib.sha256(data).hexdigest())
        streams.append(facts)
        del stream, data
        say(
            f"{load.key}: stream of {facts.ops:,} commands built in "
            f"{time.monotonic() - began:.1f}s ({_mix(facts)}; {facts.traded_qty:,} lots trade)"
        )
        for run in usable:
            run.loads[load.key] = LoadFigures()
        _verify(usable, facts, launcher, path)
        for index in range(repeat):
            for run in usable:
                _throughput(run, facts, launcher, path, f"{index + 1}/{repeat}")
        for run in usable:
            _latency(run, facts, launcher, path)
    path = scratch / "resting.marshal"
    path.write_bytes(marshal.dumps(loads.resting_stream(RESTING)))
    for run in usable:
        if run.variant.floor:
            continue
        result = launcher.run(run.variant.key, "memory", path)
        if "error" in result:
            run.failures["memory"] = result["error"]
            say(f"memory  {run.variant.title}: FAILED: {result['error']}")
            continue
        run.memory = result
        say(
            f"memory  {run.variant.title:34} {result['growth_bytes'] / 1e6:7.1f} MB "
            f"for {result['orders']:,} resting orders"
        )


def _verify(runs: list[VariantRun], facts: StreamFacts, launcher: Launcher, path: Path) -> None:
    for run in runs:
        if run.variant.floor or not run.exact:
            continue
        result = launcher.run(run.variant.key, "verify", path)
        what = f"{facts.key} verify"
        if "error" in result:
            run.failures[what] = result["error"]
        elif result["traded_qty"] != facts.traded_qty or result["refused"] or result["problems"]:
            run.failures[what] = "; ".join(
                [
                    f"traded {result['traded_qty']:,} lots, the reference book "
                    f"{facts.traded_qty:,}",
                    f"{result['refused']:,} commands refused",
                    *result["problems"],
                ]
            )
        else:
            run.loads[facts.key].traded_qty = result["traded_qty"]
            say(f"verify  {facts.key:9} {run.variant.title:34} traded {facts.traded_qty:,} lots")
            continue
        say(f"verify  {facts.key:9} {run.variant.title:34} FAILED: {run.failures[what]}")
        # A wrong engine's speed is no figure to compare: it is not timed.
        del run.loads[facts.key]


def _throughput(
    run: VariantRun, facts: StreamFacts, launcher: Launcher, path: Path, which: str
) -> None:
    figures = run.loads.get(facts.key)
    if figures is None:
        return
    result = launcher.run(run.variant.key, "throughput", path)
    if "error" in result:
        run.failures[f"{facts.key} throughput"] = result["error"]
        say(f"ops/s   {facts.key:9} {run.variant.title:34} FAILED: {result['error']}")
        return
    rate = result["ops"] / result["elapsed_ns"] * 1e9
    figures.runs.append(rate)
    figures.cpu_shares.append(result["cpu_share"])
    figures.throughput_gc.append(result["gc_pauses"])
    say(
        f"ops/s   {facts.key:9} {run.variant.title:34} {rate:12,.0f}  "
        f"(run {which}, cpu {min(result['cpu_share'], 1.0):.0%})"
    )


def _latency(run: VariantRun, facts: StreamFacts, launcher: Launcher, path: Path) -> None:
    figures = run.loads.get(facts.key)
    if figures is None or not figures.runs:
        return
    result = launcher.run(run.variant.key, "latency", path)
    if "error" in result:
        run.failures[f"{facts.key} latency"] = result["error"]
        say(f"latency {facts.key:9} {run.variant.title:34} FAILED: {result['error']}")
        return
    figures.latency = result
    say(
        f"latency {facts.key:9} {run.variant.title:34} p50 {figures.at_us(50):.2f}  "
        f"p99 {figures.at_us(99):.2f}  p99.9 {figures.at_us(99.9):.2f}  "
        f"max {figures.max_us:,.0f} us; longest GC pause {figures.gc_max_us:,.0f} us"
    )


def _facts(stream: loads.Stream, digest: str) -> StreamFacts:
    return StreamFacts(
        key=stream.load.key,
        title=stream.load.title,
        description=stream.load.description,
        ops=len(stream.commands),
        mix=stream.mix,
        traded_qty=stream.traded_qty,
        taking_orders=stream.trades_orders,
        resting_end=stream.resting_end,
        resting_max=stream.resting_max,
        sha256=digest,
    )


def _mix(facts: StreamFacts) -> str:
    return ", ".join(f"{kind} {count / facts.ops:.1%}" for kind, count in facts.mix.items())


def _pinning(cpu: str | None) -> str:
    return "none" if cpu is None else f"every runner on CPU {cpu} (taskset)"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.engine",
        description="Drive sprintd's matching engine and its peers in process on the same "
        "command streams, and write a Markdown report with plots.",
    )
    add_run_options(
        parser,
        "engine",
        quick=f"{QUICK_OPS:,} commands per load, {QUICK_REPEAT} throughput run: a smoke run",
        pin="do not pin the runners to a CPU",
    )
    parser.add_argument(
        "--engines",
        type=lambda v: choices(v, ENGINES),
        default=list(ENGINES),
        help=f"comma-separated subset of {','.join(ENGINES)} (default: all)",
    )
    parser.add_argument(
        "--ops", type=positive, metavar="N", help=f"commands per load (default {OPS:,})"
    )
    parser.add_argument(
        "--repeat",
        type=positive,
        metavar="R",
        help=f"throughput runs per engine and load, median reported (default {REPEAT})",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
