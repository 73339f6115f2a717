"""The Rinha de Backend 2025's own test, as the contest ran it, against sprintd.

``official/rinha.js`` and ``official/requests.js`` are the contest's files as
published (their remote imports point at the local copies in
``official/lib``). They want the processors on 8001 and 8002 and the back end
on 9999, all on localhost, and write their verdict to ``partial-results.json``
in k6's working directory: the figures below come from that file alone.

Beside it, a second k6 (``probe.js``) measures the noise floor: a request
that does nothing, through the same front, in the same run.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.cli import say
from bench.common.net import call_json
from bench.common.paths import K6
from bench.common.processes import wait_showing_progress
from bench.common.report import Target
from bench.rinha.stack import down, up

__all__ = ["PUBLISHED", "OfficialResult", "report_lines", "run_official", "targets"]

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "official" / "rinha.js"
PROBE = HERE / "probe.js"
# The ports requests.js names.
PROCESSOR_PORTS = {"default": 8001, "fallback": 8002}
FRONT = 9999
# run-tests.sh's ramp: 550 virtual users.
MAX_REQUESTS = 550
PROGRESS_S = 15
# Issue 14's targets, and issue 13's p99 for every set-up (two instances,
# or one of two workers).
P99_TARGET_MS = 2.0
P99_SETUP_MS = 5.0
LIQUID_TARGET = 370_000.0
# The published results (previa-resultados+participantes-info.json in the
# contest's repository, 256 entries): entry, total_liquido, p99 ms, the
# default / fallback split where noted.
PUBLISHED = [
    ("#1 gabxdev-java-1 (Java)", 380_035.87, 1.25, "16,752 / 0"),
    ("#2 dudebank-bun (Bun)", 376_913.90, 1.30, "16,754 / 0"),
    ("#3 josineyjr-go-1 (Go)", 376_868.91, 1.45, "16,752 / 0"),
    ("#4 joao-xavier (Rust)", 376_846.41, 1.61, "16,751 / 0"),
    ("#5 alan-silva (Rust)", 376_801.42, 1.62, "16,749 / 0"),
    ("best Python", 310_228.0, 41.7, ""),
    ("median of 256", 307_941.0, 8.9, ""),
]


@dataclass
class OfficialResult:
    instances: int
    workers: int
    command: list[str]
    load: str
    # partial-results.json as the official script wrote it
    official: dict[str, Any] = field(default_factory=dict)
    probe_p99_ms: float | None = None
    # p99 of POST /payments inside each sprintd (its own recorder, /v1/stats):
    # the server's share of the p99 above
    server_p99_ms: list[float] = field(default_factory=list)

    @property
    def p99_ms(self) -> float:
        return float(self.official["p99"]["valor"].removesuffix("ms"))

    @property
    def inconsistencies(self) -> int:
        return int(self.official["multa"]["composicao"]["num_inconsistencias"])

    @property
    def lag(self) -> int:
        return int(self.official["lag"]["lag"])

    @property
    def split(self) -> tuple[int, int]:
        return (
            int(self.official["pagamentos_realizados_default"]["num_pagamentos"]),
            int(self.official["pagamentos_realizados_fallback"]["num_pagamentos"]),
        )


def _ms(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.2f}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_official(
    instances: int, tier: str, pin: bool, out: Path, workers: int = 1
) -> OfficialResult:
    """Start the set-up on the official ports, run the official script and the
    probe, stop the set-up (whatever happens)."""
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    directory = out / "stacks" / "official"
    say(
        f"[official] starting the set-up ({instances} sprintd instance(s) of {workers} "
        f"worker(s)); load {_load()}"
    )
    stack = up(
        directory,
        instances=instances,
        front=FRONT,
        tier=tier,
        pin=pin,
        processor_ports=PROCESSOR_PORTS,
        workers=workers,
    )
    try:
        # As run-tests.sh: a fresh token, which setup() gives the processors.
        command = [K6, "run", "--no-usage-report", "-e", f"MAX_REQUESTS={MAX_REQUESTS}"]
        command += ["-e", f"TOKEN={uuid.uuid4()}", str(SCRIPT)]
        probe_summary = raw / "probe-summary.json"
        # Its REST API on a port of its own (the test's k6 has 6565).
        probe = [K6, "run", "--quiet", "--no-usage-report", "--address", "127.0.0.1:0"]
        probe += ["--summary-export", str(probe_summary)]
        probe += ["-e", f"BACKEND={stack.backend}", str(PROBE)]
        result = OfficialResult(instances, workers, command, _load())
        with open(raw / "k6.log", "wb") as log, open(raw / "probe.log", "wb") as probe_log:
            # k6 writes partial-results.json into its working directory.
            process = subprocess.Popen(command, cwd=raw, stdout=log, stderr=subprocess.STDOUT)
            prober = subprocess.Popen(probe, cwd=raw, stdout=probe_log, stderr=subprocess.STDOUT)
            try:
                wait_showing_progress(
                    process,
                    lambda elapsed: say(f"[official] {elapsed:4.0f} s of ~65 s; load {_load()}"),
                    PROGRESS_S,
                )
                prober.wait()
            finally:
                for running in (process, prober):
                    if running.poll() is None:
                        running.terminate()
                        running.wait()
        if process.returncode != 0:
            raise RuntimeError(f"k6 exited with {process.returncode}; see {raw / 'k6.log'}")
        result.official = json.loads((raw / "partial-results.json").read_text())
        for port in stack.sprintd:
            stats = call_json(port, "GET", "/v1/stats")
            result.server_p99_ms.append(float(stats["routes"]["/payments"]["all_time_ms"]["p99"]))
        if probe_summary.exists():
            metrics = json.loads(probe_summary.read_text())["metrics"]
            result.probe_p99_ms = float(metrics["http_req_duration"]["p(99)"])
        say(
            f"[official] total_liquido {result.official['total_liquido']:,.2f}, "
            f"p99 {result.p99_ms} ms (noise floor {_ms(result.probe_p99_ms)} ms, "
            f"in sprintd {result.server_p99_ms} ms), "
            f"inconsistencies {result.inconsistencies}, lag {result.lag}, "
            f"default/fallback {result.split[0]}/{result.split[1]}"
        )
        return result
    finally:
        down(directory)
        say("[official] set-up stopped")


def report_lines(result: OfficialResult) -> list[str]:
    """The run beside the published table."""
    official = result.official
    default, fallback = result.split
    lines = [
        "## The official test",
        "",
        f"Load average when it started: {result.load}. The p99 of POST /payments "
        f"inside each sprintd (its own recorder): {result.server_p99_ms} ms.",
        "",
        "| entry | total_liquido | p99 ms | inconsistencies | lag | default / fallback |",
        "|---|---|---|---|---|---|",
        f"| **sprintd, {result.instances} instance(s) of {result.workers} worker(s)** | "
        f"**{official['total_liquido']:,.2f}** | **{result.p99_ms}** "
        f"(noise floor {_ms(result.probe_p99_ms)}) | {result.inconsistencies} | {result.lag} | "
        f"{default:,} / {fallback:,} |",
    ]
    lines += [
        f"| {name} | {liquid:,.2f} | {p99} | | | {split} |"
        for name, liquid, p99, split in PUBLISHED
    ]
    return [*lines, "", "```json", json.dumps(official, indent=2, ensure_ascii=False), "```"]


def targets(result: OfficialResult | None) -> list[Target]:
    """Issues 13's and 14's targets for one run of the official script."""
    if result is None:
        return [Target("the official script", "not run", None)]
    liquid = float(result.official["total_liquido"])
    return [
        Target("p99 <= 2 ms", f"{result.p99_ms} ms", result.p99_ms <= P99_TARGET_MS),
        # Issue 13's, for every set-up: two instances, or one of two workers.
        Target(
            f"p99 <= {P99_SETUP_MS:g} ms ({result.instances} x {result.workers} worker(s))",
            f"{result.p99_ms} ms",
            result.p99_ms <= P99_SETUP_MS,
        ),
        Target("zero inconsistencies", str(result.inconsistencies), not result.inconsistencies),
        Target("zero lag", str(result.lag), result.lag == 0),
        Target("total_liquido >= 370,000", f"{liquid:,.2f}", liquid >= LIQUID_TARGET),
    ]
