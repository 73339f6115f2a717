"""The run's report: report.md with its PNGs, and results.json with the raw numbers."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import facts, report
from bench.common.paths import shell
from bench.common.pinning import Pinning, pinned
from bench.common.report import Target
from bench.serving.load import LOADS, Load, Result, Settings, command, environment
from bench.serving.payload import ECHO_BODY, GET_BODY
from bench.serving.plots import latency_plot, throughput_plot
from bench.serving.results import ServerRun, find, to_json

__all__ = ["Run", "write"]

# The rows every table is compared against, as (server key, column heading).
_REFERENCES = (("sprintd", "sprintd"), ("uvicorn", "uvicorn"), ("hypercorn", "hypercorn"))


@dataclass(frozen=True)
class Run:
    """Everything about a run the report states besides the figures."""

    started: str
    settings: Settings
    warmup_s: int
    pinning: Pinning
    facts: Mapping[str, Any]
    runs: list[ServerRun]
    targets: list[Target]
    interrupted: bool


def write(run: Run, out: Path) -> Path:
    """Write report.md, results.json and the PNGs into ``out``; return report.md's path."""
    for load in _measured(run.runs):
        subtitle = _subtitle(run.settings, load)
        latency_plot(load, run.runs, subtitle, out / f"latency-{load.key}.png")
    closed = tuple(load for load in _measured(run.runs) if load.closed)
    if closed:
        throughput_plot(
            closed, run.runs, _subtitle(run.settings, closed[0]), out / "throughput.png"
        )
    return report.write(out, _json(run), _markdown(run))


def _measured(runs: list[ServerRun]) -> tuple[Load, ...]:
    """The loads at least one server has a result for: the rest get no plot."""
    return tuple(load for load in LOADS if any(load.key in run.results for run in runs))


def _subtitle(settings: Settings, load: Load) -> str:
    if load.closed:
        how = f"{settings.connections} connections"
    else:
        how = f"{settings.rate:,} req/s offered"
    return f"{how}, {settings.duration_s}s, one worker process per server"


def _json(run: Run) -> dict[str, Any]:
    return {
        "started": run.started,
        "interrupted": run.interrupted,
        "settings": {
            **asdict(run.settings),
            "warmup_s": run.warmup_s,
            "pinning": run.pinning.describe(),
        },
        "machine": run.facts,
        "targets": [asdict(t) for t in run.targets],
        "servers": to_json(run.runs, LOADS),
    }


def _markdown(run: Run) -> list[str]:
    s = run.settings
    lines = [
        f"# Serving benchmark, {run.started}",
        "",
        "Each server runs alone as one worker process on 127.0.0.1 and is loaded in turn, "
        f"never two at once. All serve the same bytes: `GET /bench` answers a "
        f"{len(GET_BODY)}-byte JSON body and `POST /echo` echoes a {len(ECHO_BODY)}-byte JSON "
        "body. sprintd answers the GET from its pre-encoded fast path and the POST through "
        "its strict parser (h11 reads what that declines); the peers serve raw ASGI/RSGI "
        "apps (no framework).",
    ]
    lines += report.partial(run.interrupted)
    lines += ["", *report.targets_table(run.targets)]
    lines += report.not_measured(
        (f"{r.server.title}, {what}", why) for r in run.runs for what, why in r.failures.items()
    )
    lines += ["", "## Machine", "", *facts.describe(run.facts, run.pinning.describe())]
    lines += [
        "",
        "## Loads",
        "",
        f"Every load lasts {s.duration_s}s per server. Closed loops are wrk with one thread and "
        f"{s.connections} keep-alive connections, after a {run.warmup_s}s warm-up of the same "
        f"load; constant-rate loads are k6's constant-arrival-rate executor at {s.rate:,} req/s "
        f"with {s.vus} pre-allocated VUs (at most {s.vus * 2}). Latencies are in ms.",
        "",
        "A closed loop sends the next request only when an answer comes back, so a stalled "
        "server also stalls the clock (coordinated omission): its percentiles flatter slow "
        "servers. The constant-rate loads start requests on schedule whatever the latency, and "
        "count a request k6 could not start (every VU busy) as *dropped*; compare latencies "
        "there.",
    ]
    measured = _measured(run.runs)
    for load in LOADS:
        lines += ["", f"### {load.title}", ""]
        if load in measured:
            lines += [f"![{load.title}](latency-{load.key}.png)", "", *_table(load, run.runs)]
        else:
            lines.append("No server was measured under this load.")
    if any(load.closed for load in measured):
        lines += ["", "## Throughput", "", "![req/s, closed loop](throughput.png)"]
    lines += ["", "## Commands", "", *_commands(run)]
    return lines


def _table(load: Load, runs: list[ServerRun]) -> list[str]:
    if load.closed:
        note = "Ratios: the server's req/s over the reference's (higher is better)."
    else:
        note = "Ratios: the server's p99 over the reference's (lower is better)."
    heads = ["Server", "req/s", "p50", "p90", "p99", "p99.9", "max", "errors"]
    if not load.closed:
        heads.append("dropped")
    heads += [f"vs {name}" for _, name in _REFERENCES]
    lines = [note, "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    refs = [find(runs, load, key) for key, _ in _REFERENCES]
    for run in runs:
        result = run.results.get(load.key)
        if result is None:
            continue
        cells = [
            run.server.title_for(load.method),
            f"{result.rps:,.0f}",
            *(f"{result.at(p):.3f}" for p in (50.0, 90.0, 99.0, 99.9)),
            f"{result.max_ms:.3f}",
            f"{result.errors:,}",
        ]
        if not load.closed:
            cells.append(f"{result.dropped:,}")
        cells += [_ratio(load, result, ref) for ref in refs]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ratio(load: Load, result: Result, ref: Result | None) -> str:
    if ref is None:
        return "n/a"
    if load.closed:
        return f"{result.rps / ref.rps:.2f}x"
    return f"{result.at(99.0) / ref.at(99.0):.2f}x"


def _commands(run: Run) -> list[str]:
    lines = ["Servers (port and data dir chosen per run; logs in `logs/`):", ""]
    lines += report.commands(r.command for r in run.runs)
    lines += ["", "Loads (tool output in `raw/`):", "", "```sh"]
    for load in LOADS:
        url = f"http://127.0.0.1:PORT{load.path}"
        env = environment(load, url, run.settings.duration_s, run.settings)
        argv = pinned(
            command(load, url, run.settings.duration_s, run.settings, Path("summary.json")),
            run.pinning.tools,
        )
        assignments = [f"{name}={shlex.quote(value)}" for name, value in env.items()]
        lines.append(" ".join(assignments) + " " + shell(argv))
    lines.append("```")
    return lines
