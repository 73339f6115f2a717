"""Starting one runner process per measurement, pinned, and reading its answer."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common.paths import REPO
from bench.common.pinning import pinned

__all__ = ["Launcher"]

# The slowest pass seen (lightmatchingengine's latency pass over a million
# commands) takes well under a minute; ten is a hung child, not a slow one.
TIMEOUT_S = 600


@dataclass
class Launcher:
    cpu: str | None
    workdir: Path
    # Every command run, for the report.
    commands: list[list[str]] = field(default_factory=list)
    _count: int = 0

    def run(self, variant: str, pass_: str, stream: Path | None = None) -> dict[str, Any]:
        """Run one pass; its JSON, or ``{"error": why}``."""
        self._count += 1
        out = self.workdir / f"result-{self._count}.json"
        argv = [
            sys.executable,
            "-m",
            "bench.engine.runner",
            "--variant",
            variant,
            "--pass",
            pass_,
            "--out",
            str(out),
        ]
        if stream is not None:
            argv += ["--stream", str(stream)]
        argv = pinned(argv, self.cpu)
        self.commands.append(argv)
        try:
            done = subprocess.run(
                argv, cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": f"no answer in {TIMEOUT_S}s"}
        try:
            result: dict[str, Any] = json.loads(out.read_text("utf-8"))
        except (OSError, ValueError):
            tail = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            return {"error": f"runner failed: {tail}"}
        return result
