"""One measured run of the Rinha load against one set-up, and what it found.

For each mode (``one``: one sprintd, memory store; ``two``: two sprintd on
Redis behind nginx) the set-up is started fresh (``stack.up``), k6 runs
``rinha.js`` against it, and then, from the processors' own admin API and
the backend's summary over the whole run:

- inconsistencies: k6's periodic checks, plus the whole-run difference in
  totalRequests between the backend and the processors;
- lag: payments k6 had accepted (2xx) minus those the processors have, one
  second after the load ended;
- the default/fallback split, the profit (amount less fees) and the
  challenge's score.
"""

from __future__ import annotations

import gzip
import json
import re
import resource
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.common.cli import say
from bench.common.net import call_json
from bench.common.paths import K6
from bench.common.processes import group_cpu_seconds, wait_showing_progress
from bench.rinha.stack import TOKEN, Stack, down, up

__all__ = ["MODES", "ModeResult", "Options", "run_mode", "score"]

HERE = Path(__file__).resolve().parent
MODES = {"one": 1, "two": 2}
# A progress line this often while k6 runs.
PROGRESS_S = 15
# After the load: how long in-flight payments get before lag is counted.
LAG_AFTER_S = 1.0
# The challenge's scoring: a bonus of 2% per ms of p99 under 11 ms, a 35% fine
# for any inconsistency.
BONUS_FROM_MS = 11.0
BONUS_PER_MS = 0.02
FINE = 0.35
_FRACTION = re.compile(r"(\.\d{6})\d+")


@dataclass(frozen=True)
class Options:
    duration: int
    phase: int
    vus: int
    settle_ms: int
    front: int
    tier: str
    pin: bool


@dataclass
class ModeResult:
    mode: str
    instances: int
    command: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    # (seconds since the load began, latency ms) of every 2xx payment
    latencies: list[tuple[float, float]] = field(default_factory=list)
    # (seconds since the load began, inconsistencies found) per periodic check
    checks: list[tuple[float, int]] = field(default_factory=list)
    backend: dict[str, Any] = field(default_factory=dict)
    processors: dict[str, dict[str, Any]] = field(default_factory=dict)
    accepted: int = 0
    failed: int = 0
    lag_at_end: int = 0
    lag: int = 0
    daemons: list[dict[str, Any]] = field(default_factory=list)
    # CPU seconds each part of the set-up (and k6) used during the load
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def p99(self) -> float:
        return float(self.summary["metrics"]["payment_latency"]["p(99)"])

    @property
    def probe_p99(self) -> float:
        return float(self.summary["metrics"]["probe_latency"]["p(99)"])

    @property
    def periodic_inconsistencies(self) -> int:
        return sum(found for _, found in self.checks)

    @property
    def final_inconsistencies(self) -> int:
        return sum(
            abs(self.backend[name]["totalRequests"] - self.processors[name]["totalRequests"])
            for name in ("default", "fallback")
        )

    @property
    def inconsistencies(self) -> int:
        return self.periodic_inconsistencies + self.final_inconsistencies


def score(result: ModeResult) -> dict[str, float]:
    """Profit (amount less fees, as the processors recorded), bonus, fine, score."""
    profit = sum(
        float(Decimal(str(p["totalAmount"])) - Decimal(str(p["totalFee"])))
        for p in result.processors.values()
    )
    bonus = max(0.0, (BONUS_FROM_MS - result.p99) * BONUS_PER_MS)
    fine = FINE if result.inconsistencies else 0.0
    return {
        "profit": profit,
        "bonus": bonus,
        "fine": fine,
        "score": profit * (1 + bonus) * (1 - fine),
    }


def _get(port: int, path: str, admin: bool = False) -> Any:
    headers = {"X-Rinha-Token": TOKEN} if admin else None
    return call_json(port, "GET", path, headers=headers, parse_float=Decimal)


def _processed(stack: Stack) -> dict[str, dict[str, Any]]:
    return {
        name: _get(stack.processors[name], "/admin/payments-summary", admin=True)
        for name in ("default", "fallback")
    }


def _instant(text: str) -> float:
    return datetime.fromisoformat(_FRACTION.sub(r"\1", text)).timestamp()


def _read_points(path: Path, result: ModeResult) -> None:
    start: float | None = None
    latencies, checks = [], []
    with gzip.open(path, "rt") as lines:
        for line in lines:
            if '"Point"' not in line:
                continue
            point = json.loads(line)
            metric = point["metric"]
            if metric not in ("payment_latency", "inconsistencies", "payments_ok"):
                continue
            at = _instant(point["data"]["time"])
            start = at if start is None else min(start, at)
            if metric == "payment_latency":
                latencies.append((at, float(point["data"]["value"])))
            elif metric == "inconsistencies":
                checks.append((at, int(point["data"]["value"])))
    origin = start or 0.0
    result.latencies = sorted((at - origin, ms) for at, ms in latencies)
    result.checks = sorted((at - origin, n) for at, n in checks)


def run_mode(mode: str, options: Options, out: Path) -> ModeResult:
    """Start the set-up, load it, measure, stop it (whatever happens)."""
    directory = out / "stacks" / mode
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    say(f"[{mode}] starting the set-up ({MODES[mode]} sprintd instance(s)) in {directory}")
    stack = up(
        directory, instances=MODES[mode], front=options.front, tier=options.tier, pin=options.pin
    )
    try:
        summary_path = raw / f"summary-{mode}.json"
        points = raw / f"k6-{mode}.json.gz"
        command = [
            K6,
            "run",
            "--quiet",
            "--no-color",
            "--summary-export",
            str(summary_path),
            "--out",
            f"json={points}",
            "-e",
            f"BACKEND={stack.backend}",
            "-e",
            f"DEFAULT_PP={stack.processor_url('default')}",
            "-e",
            f"FALLBACK_PP={stack.processor_url('fallback')}",
            "-e",
            f"TOKEN={TOKEN}",
            "-e",
            f"MAX_VUS={options.vus}",
            "-e",
            f"DURATION={options.duration}",
            "-e",
            f"PHASE={options.phase}",
            "-e",
            f"SETTLE_MS={options.settle_ms}",
            str(HERE / "rinha.js"),
        ]
        result = ModeResult(mode, MODES[mode], command)
        say(
            f"[{mode}] k6: {options.duration} s, 1 -> {options.vus} VUs, "
            f"phases of {options.phase} s"
        )
        cpu_before = {name: group_cpu_seconds(pid) for name, pid in stack.pids.items()}
        k6_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(raw / f"k6-{mode}.log", "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_showing_progress(
                    process,
                    lambda elapsed: say(f"[{mode}] {elapsed:4.0f} s of ~{options.duration + 8} s"),
                    PROGRESS_S,
                )
            finally:
                # Interrupted: k6 goes too, before the set-up it loads.
                if process.poll() is None:
                    process.terminate()
                    process.wait()
        k6_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result.cpu = {
            name: round(group_cpu_seconds(pid) - cpu_before[name], 1)
            for name, pid in stack.pids.items()
        }
        result.cpu["k6"] = round(
            k6_after.ru_utime + k6_after.ru_stime - k6_before.ru_utime - k6_before.ru_stime, 1
        )
        if process.returncode != 0:
            raise RuntimeError(f"k6 exited with {process.returncode}; see {raw / f'k6-{mode}.log'}")
        result.summary = json.loads(summary_path.read_text())
        metrics = result.summary["metrics"]
        result.accepted = int(metrics["payments_ok"]["count"])
        result.failed = int(metrics.get("payments_failed", {}).get("count", 0))
        processed = _processed(stack)
        result.lag_at_end = result.accepted - sum(p["totalRequests"] for p in processed.values())
        time.sleep(LAG_AFTER_S)
        result.processors = _processed(stack)
        result.lag = result.accepted - sum(p["totalRequests"] for p in result.processors.values())
        result.backend = _get(stack.front, "/payments-summary")
        result.daemons = [_get(port, "/health")["checks"]["payments"][0] for port in stack.sprintd]
        _read_points(points, result)
        say(
            f"[{mode}] p99 {result.p99:.2f} ms, {result.accepted} accepted, "
            f"lag {result.lag}, inconsistencies {result.inconsistencies}"
        )
        return result
    finally:
        down(directory)
        say(f"[{mode}] set-up stopped")
