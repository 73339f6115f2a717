"""What one run of the orders bench measured."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.orders.entry_load import EntryResult
from bench.orders.journal_load import AppendResult, ReplayResult
from bench.serving.load import Result, Settings

__all__ = ["PortRun", "Run"]


@dataclass
class PortRun:
    """One daemon, at one tier, through both ports."""

    tier: str
    argv: list[str]
    entry: dict[str, EntryResult] = field(default_factory=dict)
    http: dict[str, Result] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


@dataclass
class Run:
    started: str
    seconds: int
    pinning: str
    machine: dict[str, Any]
    http: Settings
    appends: list[AppendResult] = field(default_factory=list)
    replay: ReplayResult | None = None
    ports: list[PortRun] = field(default_factory=list)

    @property
    def failures(self) -> dict[str, str]:
        return {f"{p.tier}/{k}": v for p in self.ports for k, v in p.failures.items()}
