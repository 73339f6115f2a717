"""What one run measured, per server and load, and its JSON form (results.json)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from bench.serving.load import Load, Result
from bench.serving.servers import Server

__all__ = ["ServerRun", "find", "to_json"]


@dataclass
class ServerRun:
    server: Server
    command: list[str]
    results: dict[str, Result] = field(default_factory=dict)
    # "start" or a load's key -> why it has no result.
    failures: dict[str, str] = field(default_factory=dict)


def find(runs: list[ServerRun], load: Load, key: str) -> Result | None:
    for run in runs:
        if run.server.key == key:
            return run.results.get(load.key)
    return None


def to_json(runs: list[ServerRun], loads: tuple[Load, ...]) -> dict[str, Any]:
    return {
        run.server.key: {
            "title": run.server.title,
            "command": run.command,
            "failures": run.failures,
            "loads": {
                load.key: {
                    "title": run.server.title_for(load.method),
                    **dataclasses.asdict(run.results[load.key]),
                    "percentiles_ms": {
                        f"{p:.10g}": ms for p, ms in run.results[load.key].percentiles_ms
                    },
                }
                for load in loads
                if load.key in run.results
            },
        }
        for run in runs
    }
