"""``python -m bench.rinha up|down|run``: the Rinha set-up on loopback, and its load test.

up    start two processors and sprintd (one instance, or two on Redis behind
      nginx) and leave them running; the front answers the Rinha API on --port
down  stop what ``up`` started
official  the contest's own test (official/rinha.js, 60 s to 550 VUs) on its
          ports (processors 8001, 8002; the back end 9999): its verdict beside
          the published results, in bench/results/rinha-<timestamp>/report.md
run       the soak: for each mode, start a fresh set-up, run the longer k6 load
          (rinha.js), stop it; then write bench/results/rinha-<timestamp>/report.md
          with its plots
"""

from __future__ import annotations

import argparse
import json
import sys

from bench.common.cli import add_run_options, choices, positive, say, start
from bench.common.facts import collect
from bench.common.net import ServerError
from bench.common.paths import REPO, short
from bench.common.report import commands, finish, partial, targets_table
from bench.common.report import write as write_report
from bench.rinha.contest import OfficialResult, report_lines, run_official
from bench.rinha.contest import targets as targets_of_official
from bench.rinha.report import targets, write
from bench.rinha.runner import MODES, ModeResult, Options, run_mode
from bench.rinha.stack import StackError, down, up

STACK_DIR = REPO / "bench" / "results" / "rinha-stack"
# The challenge's schedule: ten phases of 30 s. The ramp is scaled to this
# 2-core machine, which also runs k6, nginx, Redis and both processors
# (bench/rinha/README.md says why 300 of the challenge's 550).
DEFAULT_VUS = 300
DEFAULT_DURATION = 300
DEFAULT_PHASE = 30
# --quick: the whole schedule in a minute.
QUICK = {"duration": 60, "phase": 6}
# The checks compare a window that ends this long before them: longer than
# the slowest answer a processor gives in the schedule (2 s), so that no
# payment in the window is still on its way.
DEFAULT_SETTLE_MS = 3000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.rinha", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    sub = parser.add_subparsers(dest="command", required=True)
    up_ = sub.add_parser("up", help="start the set-up and leave it running")
    up_.add_argument("--instances", type=int, choices=(1, 2), default=2)
    up_.add_argument("--workers", type=positive, default=1, help="workers of each instance")
    sub.add_parser("down", help="stop the set-up that up started")
    official = sub.add_parser("official", help="the contest's test, its verdict beside theirs")
    official.add_argument("--instances", type=int, choices=(1, 2), default=2)
    official.add_argument("--workers", type=positive, default=1, help="workers of each instance")
    add_run_options(official, "rinha", pin=None)
    official.add_argument("--pin", action="store_true", help="each sprintd on a core of its own")
    official.add_argument("--tier", default="turbo", help="sprintd's tier")
    run = sub.add_parser("run", help="the soak: load each mode and write a report")
    run.add_argument("--modes", type=lambda v: choices(v, tuple(MODES)), default=list(MODES))
    run.add_argument("--duration", type=positive, default=DEFAULT_DURATION, help="seconds")
    run.add_argument("--phase", type=positive, default=DEFAULT_PHASE, help="seconds per phase")
    run.add_argument("--vus", type=positive, default=DEFAULT_VUS, help="virtual users at the end")
    run.add_argument(
        "--settle-ms", type=int, default=DEFAULT_SETTLE_MS, help="checks skip the last N ms"
    )
    add_run_options(run, "rinha", quick="60 s, phases of 6 s", pin=None)
    for command in (up_, run):
        command.add_argument(
            "--pin", action="store_true", help="each sprintd on a core of its own (taskset)"
        )
        command.add_argument("--port", type=positive, default=9999, help="the front port")
        command.add_argument("--tier", default="turbo", help="sprintd's tier")
    return parser


def _run(args: argparse.Namespace) -> int:
    started, out = start("rinha", args.out)
    if args.quick:
        args.duration, args.phase = QUICK["duration"], QUICK["phase"]
    options = Options(
        args.duration, args.phase, args.vus, args.settle_ms, args.port, args.tier, args.pin
    )
    facts = collect(("trio", "h11", "hiredis", "k6"))
    results: list[ModeResult] = []
    interrupted = failed = False
    try:
        for mode in args.modes:
            try:
                results.append(run_mode(mode, options, out))
            except (StackError, ServerError, RuntimeError) as exc:
                say(f"[{mode}] not measured: {exc}")
                failed = True
    except KeyboardInterrupt:
        interrupted = True
    report = write(results, options, facts, out, started, interrupted)
    return finish(targets(results), report, interrupted=interrupted, failed=failed)


def _official(args: argparse.Namespace) -> int:
    started, out = start("rinha", args.out)
    facts = collect(("trio", "h11", "hiredis", "k6"))
    result: OfficialResult | None = None
    interrupted = failed = False
    try:
        result = run_official(args.instances, args.tier, args.pin, out, args.workers)
    except (StackError, ServerError, RuntimeError, OSError, ValueError, KeyError) as exc:
        say(f"[official] not measured: {exc}")
        failed = True
    except KeyboardInterrupt:
        interrupted = True
    found = targets_of_official(result)
    lines = [
        f"# Rinha de Backend 2025, the official test ({started})",
        *partial(interrupted),
        "",
        *targets_table(found),
        "",
        *(report_lines(result) if result is not None else []),
        "",
        "## Command",
        "",
        *commands([result.command] if result is not None else []),
        "",
        "## Machine",
        "",
        "```json",
        json.dumps(facts, indent=2, default=str),
        "```",
    ]
    report = write_report(out, {"official": result.official if result else None}, lines)
    return finish(found, report, interrupted=interrupted, failed=failed)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "official":
        return _official(args)
    if args.command == "run":
        return _run(args)
    if args.command == "down":
        stopped = down(STACK_DIR)
        say(f"stopped: {', '.join(stopped) or 'nothing was running'}")
        return 0
    try:
        stack = up(
            STACK_DIR,
            instances=args.instances,
            front=args.port,
            tier=args.tier,
            pin=args.pin,
            workers=args.workers,
        )
    except StackError as exc:
        say(f"cannot start: {exc}")
        return 1
    say(f"up: the Rinha API on {stack.backend} ({args.instances} sprintd instance(s))")
    for name in ("default", "fallback"):
        say(f"  {name} processor: {stack.processor_url(name)} (token 123)")
    if stack.redis:
        say(f"  redis: redis://127.0.0.1:{stack.redis}/0")
    say(f"  logs: {short(STACK_DIR / 'logs')}; stop with: python -m bench.rinha down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
