"""Run the soak: ``python -m bench.soak [--minutes N] [--get-rate R] [--echo-rate R]``.

One sprintd (the serving bench's build: ``GET /bench`` from the fast path,
``POST /echo`` through h11) serves two constant-rate k6 loads at once for
``--minutes``; a sampler reads its RSS and open descriptors from /proc every
second. The report says whether both stayed flat: the least-squares slope
after the warm-up within a stated tolerance.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
import time
from pathlib import Path

from bench.common.cli import add_run_options, positive, say, start
from bench.common.net import ServerError, free_port
from bench.common.paths import short
from bench.common.pinning import Pinning, pinned, plan
from bench.common.report import Target, finish
from bench.serving.load import ECHO_RATE, GET_RATE, Load, LoadError, Result, Settings, run_load
from bench.serving.servers import SERVERS, serving
from bench.soak import report
from bench.soak.sampler import Sample, Sampler, Trend, trend

# A few minutes: long enough for a leak of a KiB a request to show, short
# enough to run while developing. Hours are for a real staging soak.
MINUTES = 3.0
# Warm-up left out of the fit: imports finishing, caches, the first GC cycles.
WARMUP_FRACTION, WARMUP_MAX_S = 0.2, 30.0
# Flat: a slope within these. 1 MiB/min is ~60 bytes a request at 250 req/s:
# a leak of one small object per request shows; the allocator's noise does not.
RSS_TOLERANCE_MIB_PER_MIN = 1.0
FDS_TOLERANCE_PER_MIN = 1.0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=MINUTES)
    parser.add_argument("--get-rate", type=positive, default=1000, help="GET /bench req/s")
    parser.add_argument("--echo-rate", type=positive, default=250, help="POST /echo req/s")
    parser.add_argument("--vus", type=positive, default=20, help="k6 VUs per load")
    parser.add_argument("--tier", default=None, help="sprintd's tier (its default otherwise)")
    parser.add_argument("--rss-tolerance", type=float, default=RSS_TOLERANCE_MIB_PER_MIN)
    parser.add_argument("--fds-tolerance", type=float, default=FDS_TOLERANCE_PER_MIN)
    add_run_options(parser, "soak", pin="no CPU pinning")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    started, out = start("soak", args.out, "raw")
    seconds = max(10, round(args.minutes * 60))
    warmup = min(WARMUP_MAX_S, seconds * WARMUP_FRACTION)
    pinning = plan(args.pin)
    server = next(s for s in SERVERS if s.key == "sprintd")
    port = free_port()
    extra = ("--tier", args.tier) if args.tier else ()
    argv_ = pinned(server.command(port, out / "data", extra), pinning.server)
    loads: list[tuple[Load, int]] = [(GET_RATE, args.get_rate), (ECHO_RATE, args.echo_rate)]
    say(
        f"soak: {seconds}s of GET {args.get_rate}/s + POST {args.echo_rate}/s; "
        f"pinning: {pinning.describe()}; results in {short(out)}"
    )
    results: dict[str, Result] = {}
    failures: list[str] = []
    interrupted = False
    sampler: Sampler | None = None
    try:
        with serving(server, argv_, port, out / "sprintd.log") as process:
            sampler = Sampler(process.pid, port)
            sampler.start()
            threads = [
                threading.Thread(
                    target=_load,
                    args=(load, rate, port, seconds, args.vus, out, pinning, results, failures),
                    daemon=True,
                )
                for load, rate in loads
            ]
            for thread in threads:
                thread.start()
            _progress(sampler, threads, seconds)
            sampler.stop()
    except KeyboardInterrupt:
        interrupted = True
        say("interrupted: sprintd stopped, writing a partial report")
    except ServerError as exc:
        failures.append(f"sprintd: {exc}")
    samples = sampler.samples if sampler is not None else []
    rss, fds = trend(samples, warmup, "rss_mib"), trend(samples, warmup, "other_fds")
    targets = _targets(rss, fds, samples, args, results, loads, failures)
    command = "python -m bench.soak " + shlex.join(sys.argv[1:] if argv is None else argv)
    daemon = f"sprintd, 1 worker, tier {args.tier or 'default'}"
    run = report.Run(
        started,
        command.strip(),
        daemon,
        seconds / 60,
        warmup,
        {load.title: rate for load, rate in loads},
        samples,
        rss,
        fds,
        args.rss_tolerance,
        args.fds_tolerance,
        results,
        targets,
        interrupted,
    )
    return finish(targets, report.write(run, out), interrupted=interrupted, failed=bool(failures))


def _load(
    load: Load,
    rate: int,
    port: int,
    seconds: int,
    vus: int,
    out: Path,
    pinning: Pinning,
    results: dict[str, Result],
    failures: list[str],
) -> None:
    url = f"http://127.0.0.1:{port}{load.path}"
    settings = Settings(seconds, vus, rate, vus)
    try:
        results[load.title] = run_load(
            load, url, seconds, settings, out / "raw" / f"{load.key}.txt", cpus=pinning.tools
        )
    except LoadError as exc:
        failures.append(f"{load.key}: {exc}")


def _progress(sampler: Sampler, threads: list[threading.Thread], seconds: int) -> None:
    """A line every 10 s until both loads are done."""
    start = time.monotonic()
    while alive := [thread for thread in threads if thread.is_alive()]:
        alive[0].join(timeout=10)
        if sampler.samples:
            last = sampler.samples[-1]
            say(
                f"  {time.monotonic() - start:5.0f}/{seconds}s  RSS {last.rss_mib:7.1f} MiB  "
                f"fds {last.fds}"
            )


def _targets(
    rss: Trend | None,
    fds: Trend | None,
    samples: list[Sample],
    args: argparse.Namespace,
    results: dict[str, Result],
    loads: list[tuple[Load, int]],
    failures: list[str],
) -> list[Target]:
    targets = []
    for name, found, unit, tolerance in (
        ("RSS stays flat under steady load", rss, "MiB", args.rss_tolerance),
        (
            "descriptors besides client connections stay flat under steady load",
            fds,
            "fds",
            args.fds_tolerance,
        ),
    ):
        if found is not None:
            measured = (
                f"slope {found.slope_per_min:+.3f} {unit}/min (tolerance ±{tolerance:g}), "
                f"{found.low:.1f} to {found.high:.1f} {unit}"
            )
            targets.append(Target(name, measured, found.flat(tolerance)))
        else:
            targets.append(Target(name, "not enough samples", None))
    # k6 holds at most two VUs' worth of connections per load (maxVUs).
    most = 2 * args.vus * len(loads)
    peak = max((s.connections for s in samples), default=0)
    targets.append(
        Target(
            f"client connections bounded by the load's VUs (at most {most})",
            f"at most {peak} at once",
            peak <= most if samples else None,
        )
    )
    offered = sum(rate for _, rate in loads)
    if len(results) == len(loads):
        served = sum(r.rps for r in results.values())
        errors = sum(r.errors for r in results.values())
        dropped = sum(r.dropped for r in results.values())
        targets.append(
            Target(
                f"the offered {offered} req/s served, no request failed",
                f"{served:.0f} req/s, {errors} failed; {dropped} iterations k6 could not "
                "start in time (its VUs all busy: the load tool's limit, not an error)",
                errors == 0,
            )
        )
    else:
        targets.append(Target(f"the offered {offered} req/s", "; ".join(failures), None))
    return targets


if __name__ == "__main__":
    sys.exit(main())
