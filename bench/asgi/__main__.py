"""The same FastAPI application (``bench.asgi.app``) on sprintd, uvicorn and
hypercorn's trio worker, one after another, each loaded the same way by wrk.

    python -m bench.asgi [--quick] [--servers sprintd,uvicorn,hypercorn] [--duration S]

sprintd serves it through the asgi plugin (``[asgi] app``, its other
plugins off); uvicorn with httptools and uvloop; hypercorn with its trio
worker, the only other ASGI server on trio. Every server is one worker
process, pinned apart from wrk as in ``bench.serving``. Targets (issue 16):
sprintd at least 5x hypercorn-trio and 0.9x uvicorn, for each load.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import sys
from pathlib import Path
from typing import Any

from bench.asgi.app import GET_PATH, POST_BODY, POST_PATH
from bench.common import facts, report
from bench.common.cli import add_run_options, choices, positive, say, start
from bench.common.net import ServerError, free_port, request, running
from bench.common.paths import REPO, short
from bench.common.pinning import Pinning, pinned, plan
from bench.common.report import Target, finish
from bench.serving.load import Load, Settings, measured_loads
from bench.serving.results import ServerRun, find, to_json
from bench.serving.servers import SERVERS as SERVING_SERVERS
from bench.serving.servers import Server

HERE = Path(__file__).resolve().parent
DURATION_S, WARMUP_S = 10, 2
QUICK_DURATION_S, QUICK_WARMUP_S = 3, 1
APP = "bench.asgi.app:app"
LOADS = (
    Load("get", f"GET {GET_PATH}, closed loop (wrk)", "wrk", "GET", GET_PATH),
    Load(
        "post", f"POST {POST_PATH} (JSON), closed loop (wrk)", "wrk", "POST", POST_PATH, POST_BODY
    ),
)


def _ours(arg: str) -> str:
    """An argument of bench.serving's command lines, for this bench's application."""
    if arg.endswith("asgi_app:app"):
        return APP
    if arg.endswith("sprintd.toml"):
        return str(HERE / "sprintd.toml")
    return arg


def _serving(key: str, **changes: Any) -> Server:
    """A server as bench.serving starts it, serving this bench's application instead."""
    server = next(s for s in SERVING_SERVERS if s.key == key)
    return dataclasses.replace(server, argv=tuple(map(_ours, server.argv)), **changes)


SERVERS = (
    # The application is found on the repository's path, as the peers find it.
    _serving(
        "sprintd",
        title="sprintd (asgi plugin, trio)",
        packages=("sprintd", "trio", "h11", "anyio"),
        pythonpath=(REPO,),
        titles={},
    ),
    _serving("uvicorn"),
    _serving("hypercorn"),
)


def _check(port: int) -> None:
    """Each server answers the application's bytes: a 404 or a 422 is no throughput."""
    for method, path, body in (("GET", GET_PATH, None), ("POST", POST_PATH, POST_BODY)):
        try:
            status, answer = request(port, method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise ServerError(f"{method} {path} failed: {exc!r}") from None
        expected = json.loads(POST_BODY) if body else {"item_id": 42, "q": "book"}
        if status != 200 or json.loads(answer) != expected:
            raise ServerError(f"{method} {path} answered {status} {answer[:80]!r}")


def _bench(
    server: Server,
    extra: tuple[str, ...],
    settings: Settings,
    warmup: int,
    out: Path,
    pinning: Pinning,
) -> ServerRun:
    port = free_port()
    argv = pinned(server.command(port, out / f"{server.key}-data", extra), pinning.server)
    run = ServerRun(server, argv)
    log = out / "logs" / f"{server.key}.log"
    try:
        with running(argv, port, server.pythonpath, log, ready_path="/items/1", check=_check):
            for load, result in measured_loads(
                LOADS,
                port,
                server.key,
                settings,
                out,
                run.failures,
                warmup=warmup,
                cpus=pinning.tools,
                prefix=f"  {server.key}",
            ):
                run.results[load.key] = result
                say(
                    f"  {server.key:9} {load.key:5} {result.rps:9,.0f} req/s  "
                    f"p50 {result.at(50.0):.3f}  p99 {result.at(99.0):.3f} ms  "
                    f"errors {result.errors}"
                )
    except ServerError as exc:
        run.failures["start"] = str(exc)
        say(f"  {server.key}: NOT MEASURED: {exc}")
    return run


def _targets(runs: list[ServerRun]) -> list[Target]:
    targets = []
    for load in LOADS:
        for peer, wanted in (("hypercorn", 5.0), ("uvicorn", 0.9)):
            goal = f"{load.key}: sprintd req/s >= {wanted:g}x {peer}"
            ours, theirs = find(runs, load, "sprintd"), find(runs, load, peer)
            if ours is None or theirs is None:
                targets.append(Target(goal, "not measured", None))
                continue
            ratio = ours.rps / theirs.rps
            measured = f"{ratio:.2f}x ({ours.rps:,.0f} vs {theirs.rps:,.0f} req/s)"
            targets.append(Target(goal, measured, ratio >= wanted))
    return targets


def _markdown(
    runs: list[ServerRun],
    targets: list[Target],
    settings: Settings,
    machine: dict[str, Any],
    pinning: Pinning,
    *,
    started: str,
    interrupted: bool,
) -> list[str]:
    lines = [
        f"# One FastAPI application on three ASGI servers, {started}",
        "",
        "The application is `bench/asgi/app.py`, unchanged on each server: one worker "
        f"process each, loaded by wrk (one thread, {settings.connections} connections, "
        f"{settings.duration_s} s after a warm-up). Pinning: {pinning.describe()}.",
        *report.partial(interrupted),
        "",
        *report.targets_table(targets),
        "",
        "## Results",
        "",
        "| server | load | req/s | p50 ms | p99 ms | p99.9 ms | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for load in LOADS:
            r = run.results.get(load.key)
            if r is not None:
                lines.append(
                    f"| {run.server.title} | {load.title} | {r.rps:,.0f} | {r.at(50.0):.3f} "
                    f"| {r.at(99.0):.3f} | {r.at(99.9):.3f} | {r.errors} |"
                )
    failures = [(f"{r.server.key} {k}", why) for r in runs for k, why in r.failures.items()]
    lines += report.not_measured(failures)
    lines += ["", "## Commands", "", *report.commands(run.command for run in runs)]
    lines += ["", "## Machine", "", *facts.describe(machine, pinning.describe())]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.asgi", description=__doc__)
    add_run_options(parser, "asgi", quick=f"{QUICK_DURATION_S}s loads, {QUICK_WARMUP_S}s warm-ups")
    keys = [s.key for s in SERVERS]
    parser.add_argument(
        "--servers", type=lambda v: choices(v, keys), default=keys, help="a subset, comma-separated"
    )
    parser.add_argument("--duration", type=positive, metavar="S", help="seconds per load")
    parser.add_argument("--connections", type=positive, default=50, help="wrk connections")
    parser.add_argument(
        "--sprintd-tier",
        metavar="TIER",
        help="run sprintd with --tier TIER (default: its configured tier)",
    )
    args = parser.parse_args(argv)
    started, out = start("asgi", args.out, "logs", "raw")
    duration = args.duration or (QUICK_DURATION_S if args.quick else DURATION_S)
    warmup = QUICK_WARMUP_S if args.quick else WARMUP_S
    settings = Settings(duration, args.connections, 0, 0)
    pinning = plan(args.pin)
    servers = [s for s in SERVERS if s.key in args.servers]
    machine = facts.collect((*dict.fromkeys(p for s in servers for p in s.packages), "fastapi"))
    say(f"asgi bench: {len(servers)} servers x {len(LOADS)} loads, {duration}s each; {short(out)}")
    say(f"pinning: {pinning.describe()}")
    runs: list[ServerRun] = []
    interrupted = False
    try:
        for server in servers:
            say(f"{server.key}: starting")
            tier = args.sprintd_tier if server.key == "sprintd" else None
            extra = ("--tier", tier) if tier else ()
            runs.append(_bench(server, extra, settings, warmup, out, pinning))
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: servers stopped, writing a partial report")
    targets = _targets(runs)
    results = {
        "started": started,
        "interrupted": interrupted,
        "settings": dataclasses.asdict(settings),
        "pinning": pinning.describe(),
        "machine": machine,
        "targets": [dataclasses.asdict(t) for t in targets],
        "servers": to_json(runs, LOADS),
    }
    markdown = _markdown(
        runs, targets, settings, machine, pinning, started=started, interrupted=interrupted
    )
    path = report.write(out, results, markdown)
    failed = any(run.failures for run in runs)
    return finish(targets, path, interrupted=interrupted, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
