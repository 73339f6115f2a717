"""The run's report: report.md with its PNGs, and results.json with the raw numbers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import facts, report
from bench.common.report import Target
from bench.engine.gcregime import BATCH
from bench.engine.plots import latency_plot, throughput_plot
from bench.engine.results import LoadFigures, StreamFacts, VariantRun, find

__all__ = ["Run", "write"]

# The engines every table is compared against: (variant key, column heading).
_REFERENCES = (("liquibook", "liquibook"), ("lme", "lightmatchingengine"))


@dataclass(frozen=True)
class Run:
    """Everything about a run the report states besides the figures."""

    started: str
    ops: int
    repeat: int
    resting: int
    pinning: str
    facts: Mapping[str, Any]
    streams: list[StreamFacts]
    runs: list[VariantRun]
    targets: list[Target]
    commands: list[list[str]]
    interrupted: bool
    load_end: tuple[float, ...]


def write(run: Run, out: Path) -> Path:
    """Write report.md, results.json and the PNGs into ``out``; return report.md's path."""
    plotted = [s for s in run.streams if any(r.figures(s.key) for r in run.runs)]
    for stream in plotted:
        latency_plot(stream, run.runs, out / f"latency-{stream.key}.png")
    if plotted:
        throughput_plot(plotted, run.runs, out / "throughput.png")
    return report.write(out, _json(run), _markdown(run, plotted))


def _json(run: Run) -> dict[str, Any]:
    return {
        "started": run.started,
        "interrupted": run.interrupted,
        "settings": {
            "ops": run.ops,
            "throughput_runs": run.repeat,
            "resting_orders": run.resting,
            "batch": BATCH,
            "pinning": run.pinning,
        },
        "machine": run.facts,
        "streams": [asdict(s) for s in run.streams],
        "targets": [asdict(t) for t in run.targets],
        "engines": {r.variant.key: r.to_json() for r in run.runs},
        "commands": run.commands,
    }


def _markdown(run: Run, plotted: list[StreamFacts]) -> list[str]:
    lines = [
        f"# Matching-engine benchmark, {run.started}",
        "",
        "sprintd's price-time engine (`sprintd.plugins.orders.engine.PriceTimeEngine`) against "
        "liquibook (a C++ engine behind a SWIG wrapper) and lightmatchingengine (pure Python), "
        "driven in process with the same command streams. Every figure comes from a process "
        "of its own: one engine, one load, one pass.",
    ]
    lines += report.partial(run.interrupted)
    if run.targets:
        lines += ["", *report.targets_table(run.targets)]
    else:
        lines += [
            "",
            "## Targets",
            "",
            "sprintd's engine was not in this run: no target was evaluated.",
        ]
    lines += report.not_measured(
        (f"{r.variant.title}, {what}", why) for r in run.runs for what, why in r.failures.items()
    )
    lines += ["", "## Machine", "", *facts.describe(run.facts, run.pinning, load_end=run.load_end)]
    lines += ["", "## Method", "", *_method(run)]
    for stream in run.streams:
        lines += ["", f"## {stream.title[0].upper()}{stream.title[1:]}", "", *_stream(stream)]
        if stream in plotted:
            lines += [
                "",
                f"![per-command latency, {stream.title}](latency-{stream.key}.png)",
                "",
                *_table(stream, run.runs),
            ]
        else:
            lines += ["", "No engine was measured under this load."]
    if plotted:
        lines += ["", "## Throughput", "", "![ops/s per engine and load](throughput.png)"]
    lines += ["", "## Memory", "", *_memory(run)]
    lines += _slowest(run)
    lines += ["", "## Commands", "", *_commands(run)]
    return lines


def _method(run: Run) -> list[str]:
    return [
        f"- **Streams.** Each load is {run.ops:,} commands built once from a fixed seed, before "
        "any clock starts, against a naive reference book that knows which orders rest (every "
        "cancel names a resting order) and how much the stream trades. Each engine's adapter "
        "translates the stream to its own constants before its clock starts.",
        "- **Processes.** Every pass runs in a fresh `python -m bench.engine.runner` process, "
        "pinned with taskset when there are two CPUs or more: no engine inherits another's "
        "heap or collector state. The stream's tuples are untracked by the collector before "
        "timing (two collections), as a daemon holds no backlog of decoded commands.",
        "- **Guards.** Before timing, each engine plays a scripted scenario (a partial fill, "
        "a cancel, a market order, an IOC whose remainder must not rest) and must trade exactly "
        "as a price-time book does. Then, per load, a full untimed pass sums the quantity each "
        "order took and must equal the reference book's total (liquibook without a listener "
        "cannot say how much it traded; its listener variant is checked instead). An engine "
        "that fails is not timed.",
        f"- **Throughput.** The whole stream under one clock; {run.repeat} run(s) per engine, "
        "runs of different engines taking turns; the median is reported, the range beside it.",
        "- **Latency.** A separate pass: every command timed alone with "
        "`time.perf_counter_ns()`. The harness floor (a no-op engine) shows what the timer, "
        "the loop and one Python call cost by themselves; every figure includes that.",
        f"- **Memory.** A fresh process rests {run.resting:,} GTC limits that never cross "
        "(both sides, 500 levels each); RSS growth from `/proc/self/statm` across the pass.",
        "- **GC.** *GC defaults*: CPython's automatic collector as it comes. *Enterprise GC "
        "policy*: sprintd's `GCPolicy` with the enterprise tier's settings, used as the daemon "
        "uses it: `configure()` before the engine is built, `started()` after it (a full "
        "collection and `gc.freeze()`), automatic collection off, and the policy's governor "
        "running as a Trio task beside the work, collecting the young generation when it "
        f"passes its limit. Commands go in batches of {BATCH} with a Trio checkpoint between "
        "batches (as a connection yields between frames); the governor's collections fall "
        "there, between commands, and are reported as *longest GC pause* rather than inside "
        "any command's time. Its growth trigger for full collections is given a heap baseline "
        "without the stream's blocks. As the daemon at that tier (which preallocates), the "
        "engine reserves its order table up front (`[orders] reserve_orders`), sized for the "
        "most orders the stream can leave resting. The governor measures the heap every 50 ms "
        "(`sys.getallocatedblocks()`, a walk over pymalloc's arenas), and the bench's process "
        f"holds the whole stream ({_stream_blocks(run)}), so each of those looks costs more "
        "here than in a daemon with a small heap (about as much as with a large book). The "
        "tier's other knobs (priority, mlockall) are not applied; pinning is the bench's own.",
        "- **Peers.** liquibook: `DepthOrderBook` (five levels of depth, the book its Python "
        "README builds), a new `SimpleOrder` per order (its own C++ test builds them before "
        "the clock starts; here they are built inside it, as sprintd's engine builds its "
        "own). liquibook cancels by order object, so the adapter keeps by id the objects "
        "of the orders the stream will cancel, and no others: without a listener it cannot "
        "learn that an order filled, and a map of every order sent would stall single "
        "commands on its resizes; kept this way it stays within the resting book, as a "
        "careful caller's would. Market orders go in as price 0 with immediate-or-cancel. *+ fill "
        "listener* adds the `OrderListener` a caller needs to learn its fills, each a call "
        "from C++ into Python. lightmatchingengine: price 0 for market orders; it has no IOC, "
        "so its adapter cancels what an IOC order leaves. It sums a whole price level for "
        "every match and deletes filled orders from the front of a list, so it slows as "
        "levels lengthen: on liquibook's pattern, whose book grows through the run, its "
        "figure (and so the 4x target) depends on the stream's length. Both peers are driven "
        "through a small Python function per command; sprintd's `new` and `cancel` are "
        "called directly.",
    ]


def _stream_blocks(run: Run) -> str:
    counts = [
        figures.latency["stream_blocks"]
        for r in run.runs
        for figures in r.loads.values()
        if figures.latency is not None and "stream_blocks" in figures.latency
    ]
    if not counts:
        return "its size was not measured"
    return f"up to {max(counts) / 1e6:.1f} million pymalloc blocks"


def _stream(stream: StreamFacts) -> list[str]:
    mix = ", ".join(f"{kind} {count / stream.ops:.1%}" for kind, count in stream.mix.items())
    return [
        f"{stream.description[0].upper()}{stream.description[1:]}.",
        "",
        f"- {stream.ops:,} commands: {mix}",
        f"- {stream.taking_orders:,} orders trade, {stream.traded_qty:,} lots in all "
        "(reference book)",
        f"- resting orders: {stream.resting_end:,} at the end, {stream.resting_max:,} at most",
        f"- stream sha256 {stream.sha256[:16]}",
    ]


def _table(stream: StreamFacts, runs: list[VariantRun]) -> list[str]:
    heads = [
        "Engine",
        "ops/s (median)",
        "range",
        "CPU share",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "longest GC pause us",
        *(f"vs {name}" for _, name in _REFERENCES),
    ]
    lines = [
        "Latencies are per command, in microseconds; ratios are ops/s over the peer's "
        "(higher is better). CPU share: the lowest CPU time over wall time of the throughput "
        "runs; well under 100%, something else ran on that CPU and the figure is low. GC "
        "pauses: the longest collection during the latency pass, inside a command or between "
        "two, with the number of collections per generation (young/middle/full).",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    refs = [find(runs, key, stream.key) for key, _ in _REFERENCES]
    for run in runs:
        figures = run.figures(stream.key)
        if figures is None:
            continue
        cells = [
            run.variant.title,
            f"{figures.ops_s:,.0f}",
            _range(figures),
            f"{min(*figures.cpu_shares, 1.0):.0%}",
            *_latency_cells(figures),
        ]
        cells += [
            "n/a" if ref is None or run.variant.floor else f"{figures.ops_s / ref.ops_s:.2f}x"
            for ref in refs
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _latency_cells(figures: LoadFigures) -> list[str]:
    if figures.latency is None:
        return ["not measured"] * 5
    pauses = figures.latency["gc_pauses"]
    counts = "/".join(str(c) for c in pauses["count"])
    return [
        f"{figures.at_us(50):.2f}",
        f"{figures.at_us(99):.2f}",
        f"{figures.at_us(99.9):.2f}",
        f"{figures.max_us:,.0f}",
        f"{figures.gc_max_us:,.0f} ({counts})",
    ]


def _range(figures: LoadFigures) -> str:
    if len(figures.runs) < 2:
        return "one run"
    return f"{min(figures.runs) / 1e6:.3f}-{max(figures.runs) / 1e6:.3f}M"


def _slowest(run: Run) -> list[str]:
    """sprintd's slowest commands by place in the stream: the same places under
    both GC regimes point at the engine, not at the collector."""
    rows = []
    for r in run.runs:
        if r.variant.engine != "sprintd":
            continue
        for stream in run.streams:
            figures = r.figures(stream.key)
            if figures is None or figures.latency is None:
                continue
            worst = ", ".join(
                f"#{index:,} {ns / 1000:,.0f} us" for index, ns in figures.latency["slowest"][:5]
            )
            rows.append(f"| {r.variant.title} | {stream.title} | {worst} |")
    if not rows:
        return []
    return [
        "",
        "## sprintd's slowest commands",
        "",
        "The five slowest commands of each latency pass, by their place in the stream (from "
        "0). A place that is slow under both GC regimes is the engine's own work (a container "
        "growing, say), not a collection; results.json has ten per pass.",
        "",
        "| Engine | Load | slowest commands |",
        "|---|---|---|",
        *rows,
    ]


def _memory(run: Run) -> list[str]:
    lines = [
        f"RSS growth while {run.resting:,} orders that never cross come to rest, in a fresh "
        "process per engine (decimal MB).",
        "",
        "| Engine | RSS growth | per order |",
        "|---|---|---|",
    ]
    for r in run.runs:
        if r.memory is None:
            continue
        growth = r.memory["growth_bytes"]
        lines.append(
            f"| {r.variant.title} | {growth / 1e6:.1f} MB | {growth / r.memory['orders']:.0f} B |"
        )
    return lines


def _commands(run: Run) -> list[str]:
    lines = [
        "The run, from the repository root:",
        "",
        "```sh",
        ".venv/bin/python -m bench.engine " + _args(run),
        "```",
        "",
        "Each measurement it made (streams in a scratch directory):",
        "",
    ]
    return lines + report.commands(map(_scratch, run.commands))


def _args(run: Run) -> str:
    engines = sorted({r.variant.engine for r in run.runs if not r.variant.floor})
    return f"--ops {run.ops} --repeat {run.repeat} --engines {','.join(engines)}"


def _scratch(argv: list[str]) -> list[str]:
    """A runner's command with its scratch files as ``$SCRATCH/name``."""
    return [f"$SCRATCH/{Path(arg).name}" if "/bench-engine-" in arg else arg for arg in argv]
