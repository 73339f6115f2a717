"""The loads: wrk for closed loops, k6 or h2load for constant rates, and what
their output means.

Every tool's figures come out in the same percentile list and in microseconds
or fractional milliseconds, so every figure in the report has the same
precision whichever tool measured it. h2load prints no percentiles: they are
computed from its per-request log.

k6 starts requests on a schedule whatever the server's latency; from one
shared core it cannot offer much beyond 5,000 requests a second. h2load
(``--rps`` per connection, one request in flight on each) offers 10,000 and
more from a fraction of a core, but a late answer delays that connection's
next request, so past saturation it measures less than the offered rate
instead of the queue: the report shows the rate it achieved beside the one
offered. Each result carries the CPU time the tool itself took.
"""

from __future__ import annotations

import json
import math
import os
import resource
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from bench.common.cli import say
from bench.common.paths import H2LOAD, K6, WRK
from bench.common.pinning import pinned
from bench.serving.payload import ECHO_BODY, ECHO_PATH, GET_PATH

__all__ = [
    "ECHO_CLOSED",
    "ECHO_RATE",
    "GET_CLOSED",
    "GET_PIPELINED",
    "GET_RATE",
    "LOADS",
    "PERCENTILES",
    "Load",
    "LoadError",
    "Result",
    "Settings",
    "command",
    "environment",
    "measured_loads",
    "run_load",
    "warmed_load",
]

HERE = Path(__file__).resolve().parent

# Spaced evenly on the 1/(1-p) axis of an HdrHistogram-style plot (four per
# decade, 0% to 99.999%), plus the quartile and 95th that tables quote.
PERCENTILES: tuple[float, ...] = tuple(
    sorted({round(100 * (1 - 10 ** (-k / 4)), 4) for k in range(21)} | {50.0, 75.0, 95.0})
)
# Tools exit on their own at the end of a run; this is only the backstop
# beyond the run's duration for a tool that hangs.
TOOL_GRACE_S = 30


class LoadError(Exception):
    """A load tool that failed or printed nothing we can read."""


@dataclass(frozen=True)
class Load:
    key: str
    title: str
    tool: Literal["wrk", "k6", "h2load"]
    method: str
    path: str
    body: bytes | None = None
    # Requests written back to back on each connection (wrk only).
    pipeline: int = 1

    @property
    def closed(self) -> bool:
        return self.tool == "wrk"


GET_CLOSED = Load("get-closed", "GET /bench, closed loop (wrk)", "wrk", "GET", GET_PATH)
ECHO_CLOSED = Load(
    "echo-closed", "POST /echo, closed loop (wrk)", "wrk", "POST", ECHO_PATH, ECHO_BODY
)
# Clients that pipeline (and proxies that multiplex): what one read of many
# requests costs, where the closed loop above costs a read and a send each.
GET_PIPELINED = Load(
    "get-pipelined",
    "GET /bench, 16 pipelined a connection (wrk)",
    "wrk",
    "GET",
    GET_PATH,
    pipeline=16,
)
GET_RATE = Load("get-rate", "GET /bench, constant rate (k6)", "k6", "GET", GET_PATH)
ECHO_RATE = Load("echo-rate", "POST /echo, constant rate (k6)", "k6", "POST", ECHO_PATH, ECHO_BODY)
LOADS: tuple[Load, ...] = (GET_CLOSED, ECHO_CLOSED, GET_PIPELINED, GET_RATE, ECHO_RATE)


@dataclass(frozen=True)
class Settings:
    duration_s: int
    connections: int
    rate: int
    vus: int


@dataclass(frozen=True)
class Result:
    requests: int
    duration_s: float
    rps: float
    # Transport errors, timeouts and non-2xx answers together.
    errors: int
    # Constant-rate only: requests k6 could not start because every VU was busy.
    dropped: int
    min_ms: float
    mean_ms: float
    max_ms: float
    # (percentile, milliseconds), in PERCENTILES order.
    percentiles_ms: tuple[tuple[float, float], ...]
    # CPU seconds the load tool itself used (user + system).
    tool_cpu_s: float = 0.0

    def at(self, percentile: float) -> float:
        for p, ms in self.percentiles_ms:
            if p == percentile:
                return ms
        raise KeyError(percentile)


def _pct(p: float) -> str:
    # The one spelling both tools get and give back as keys ("99.9", "50").
    return f"{p:.10g}"


def command(load: Load, url: str, seconds: int, settings: Settings, summary: Path) -> list[str]:
    """The tool's argv: its own flags; what its script reads is in ``environment``."""
    if load.tool == "wrk":
        return [
            WRK,
            "-t1",
            f"-c{settings.connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(HERE / "wrk_report.lua"),
            url,
        ]
    if load.tool == "h2load":
        rate_per_connection = settings.rate / settings.connections
        argv = [
            H2LOAD,
            "--h1",
            "-t1",
            f"-c{settings.connections}",
            f"--rps={rate_per_connection:g}",
            f"-D{seconds}",
            f"--log-file={summary.with_suffix('.log')}",
        ]
        if load.body is not None:
            argv += [f"-d{summary.with_suffix('.body')}", "-Hcontent-type: application/json"]
        return [*argv, url]
    return [
        K6,
        "run",
        "--quiet",
        "--no-color",
        "--no-usage-report",
        "--summary-export",
        str(summary),
        str(HERE / "k6_rate.js"),
    ]


def environment(load: Load, url: str, seconds: int, settings: Settings) -> dict[str, str]:
    """The variables the tool's script reads (see wrk_report.lua and k6_rate.js)."""
    env = {
        "BENCH_METHOD": load.method,
        "BENCH_PERCENTILES": ",".join(_pct(p) for p in PERCENTILES),
    }
    if load.body is not None:
        env["BENCH_BODY"] = load.body.decode()
    if load.pipeline > 1:
        env["BENCH_PIPELINE"] = str(load.pipeline)
    if load.tool == "k6":
        env |= {
            "BENCH_URL": url,
            "BENCH_RATE": str(settings.rate),
            "BENCH_DURATION": str(seconds),
            "BENCH_VUS": str(settings.vus),
        }
    return env


def run_load(
    load: Load,
    url: str,
    seconds: int,
    settings: Settings,
    raw_path: Path,
    *,
    cpus: str | None,
) -> Result:
    """Drive ``url`` with ``load`` for ``seconds``; the tool's output goes to ``raw_path``.

    Raises:
        LoadError: the tool failed, overran, or its output is unreadable.
    """
    summary = raw_path.with_suffix(".summary.json")
    if load.tool == "h2load" and load.body is not None:
        summary.with_suffix(".body").write_bytes(load.body)
    argv = pinned(command(load, url, seconds, settings, summary), cpus)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            argv,
            # A BENCH_BODY left in the caller's environment must not leak into a GET.
            env={k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
            | environment(load, url, seconds, settings),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=seconds + TOOL_GRACE_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise LoadError(f"{load.tool} still running {TOOL_GRACE_S}s after its end") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    raw_path.write_text(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}", "utf-8")
    if done.returncode != 0:
        raise LoadError(f"{load.tool} exited with {done.returncode}; see {raw_path}")
    if load.tool == "wrk":
        result = parse_wrk(done.stdout)
    elif load.tool == "h2load":
        result = parse_h2load(summary.with_suffix(".log"), seconds)
    else:
        try:
            result = parse_k6(json.loads(summary.read_text("utf-8")))
        except (OSError, ValueError, KeyError) as exc:
            raise LoadError(f"k6 summary {summary}: {exc!r}") from None
    return replace(result, tool_cpu_s=cpu)


def warmed_load(
    load: Load, url: str, settings: Settings, raw_path: Path, *, warmup: int, cpus: str | None
) -> Result:
    """``run_load`` for ``settings.duration_s``, after ``warmup`` seconds of the
    same load (its output beside ``raw_path``); none for a constant-rate load,
    which follows a closed loop on the same path that has warmed the server.

    Raises:
        LoadError: as ``run_load``.
    """
    if load.closed and warmup:
        run_load(load, url, warmup, settings, raw_path.with_suffix(".warmup.txt"), cpus=cpus)
    return run_load(load, url, settings.duration_s, settings, raw_path, cpus=cpus)


def measured_loads(
    loads: Iterable[Load],
    port: int,
    server_key: str,
    settings: Settings,
    out: Path,
    failures: dict[str, str],
    *,
    warmup: int,
    cpus: str | None,
    prefix: str,
) -> Iterator[tuple[Load, Result]]:
    """Each of ``loads``, warmed and measured (``warmed_load``) against the server
    on ``port``, its output in ``out/raw``; a load that fails is said, noted in
    ``failures`` under its key, and skipped."""
    for load in loads:
        url = f"http://127.0.0.1:{port}{load.path}"
        raw = out / "raw" / f"{server_key}-{load.key}.txt"
        try:
            result = warmed_load(load, url, settings, raw, warmup=warmup, cpus=cpus)
        except LoadError as exc:
            failures[load.key] = str(exc)
            say(f"{prefix}: {load.key} FAILED: {exc}")
            continue
        yield load, result


def parse_wrk(stdout: str) -> Result:
    """Read the ``BENCH_JSON`` line that ``wrk_report.lua`` prints (microseconds)."""
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data: dict[str, Any] = json.loads(line.removeprefix("BENCH_JSON "))
            break
    else:
        raise LoadError("wrk printed no BENCH_JSON line")
    seconds = data["duration_us"] / 1e6
    latency = data["latency_us"]
    points = data["percentiles_us"]
    return Result(
        requests=data["requests"],
        duration_s=seconds,
        rps=data["requests"] / seconds,
        errors=sum(data["errors"].values()),
        dropped=0,
        min_ms=latency["min"] / 1e3,
        mean_ms=latency["mean"] / 1e3,
        max_ms=latency["max"] / 1e3,
        percentiles_ms=tuple((p, points[_pct(p)] / 1e3) for p in PERCENTILES),
    )


def parse_k6(summary: dict[str, Any]) -> Result:
    """Read k6's ``--summary-export`` JSON, where trend values are in milliseconds."""
    metrics = summary["metrics"]
    duration = metrics["http_req_duration"]
    reqs = metrics["http_reqs"]
    count = int(reqs["count"])
    # A Rate's "passes" are the true samples, i.e. the failed requests here.
    failed = int(metrics["http_req_failed"]["passes"])
    dropped = int(metrics.get("dropped_iterations", {}).get("count", 0))
    return Result(
        requests=count,
        duration_s=count / reqs["rate"] if reqs["rate"] else 0.0,
        rps=reqs["rate"],
        errors=failed,
        dropped=dropped,
        min_ms=duration["min"],
        mean_ms=duration["avg"],
        max_ms=duration["max"],
        percentiles_ms=tuple((p, duration[f"p({_pct(p)})"]) for p in PERCENTILES),
    )


def parse_h2load(log: Path, seconds: int) -> Result:
    """Read h2load's ``--log-file``: a line a request, tab-separated start time
    (us since the epoch), status (-1 for a failed one) and duration (us)."""
    durations: list[int] = []
    errors = 0
    try:
        with log.open(encoding="ascii") as lines:
            for line in lines:
                _, status, duration = line.split("\t")[:3]
                if not 200 <= int(status) < 300:
                    errors += 1
                    continue
                durations.append(int(duration))
    except (OSError, ValueError) as exc:
        raise LoadError(f"h2load log {log}: {exc!r}") from None
    if not durations:
        raise LoadError(f"h2load log {log}: no successful request")
    durations.sort()
    count = len(durations)

    def at(p: float) -> float:
        # Nearest rank, as wrk and k6 report theirs.
        return durations[min(count - 1, max(0, math.ceil(p / 100 * count) - 1))] / 1e3

    return Result(
        requests=count + errors,
        duration_s=float(seconds),
        rps=(count + errors) / seconds,
        errors=errors,
        dropped=0,
        min_ms=durations[0] / 1e3,
        mean_ms=sum(durations) / count / 1e3,
        max_ms=durations[-1] / 1e3,
        percentiles_ms=tuple((p, at(p)) for p in PERCENTILES),
    )
