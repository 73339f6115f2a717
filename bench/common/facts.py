"""The machine and software a run measured, so two reports can be told apart."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.common.paths import K6, REPO, WRK

__all__ = ["collect", "describe"]


def collect(packages: tuple[str, ...]) -> dict[str, object]:
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "kernel": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "git": _git_revision(),
        "packages": {name: _version(name) for name in packages},
        "tools": {
            "wrk": _output([WRK, "-v"]),
            "k6": _output([K6, "version"]),
        },
    }


def describe(
    f: Mapping[str, Any], pinning: str, *, load_end: Sequence[float] | None = None
) -> list[str]:
    """The report's "Machine" section: bullet lines, then a table of package versions."""
    load = f"- load average at start: {', '.join(str(x) for x in f['load_average_at_start'])}"
    if load_end is not None:
        load += f"; at the end: {', '.join(str(x) for x in load_end)}"
    lines = [
        f"- CPU: {f['cpu_model']}, nproc {f['nproc']} ({f['cpus_usable']} usable)",
        f"- memory: {f['memory_gib']} GiB; {f['kernel']}; {f['python']}",
        f"- CPU pinning: {pinning}",
        load,
        f"- git: {f['git']}",
        *(f"- {tool}: {version}" for tool, version in f.get("tools", {}).items()),
        "",
        "| Package | Version |",
        "|---|---|",
    ]
    lines += [f"| {name} | {version} |" for name, version in f["packages"].items()]
    return lines


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 1)
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text("utf-8")
    except OSError:
        return ""


def _git_revision() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    # A repository without commits has no revision to describe.
    return done.stdout.strip() if done.returncode == 0 else "no commit"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _output(argv: list[str]) -> str:
    """The first line a command prints, or why there is none."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    # wrk -v prints its version and then its usage, with exit status 1.
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else f"unavailable (exit {done.returncode})"
