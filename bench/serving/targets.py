"""sprintd's serving targets, checked against a run's figures."""

from __future__ import annotations

from bench.common.report import Target
from bench.serving.load import ECHO_CLOSED, GET_CLOSED, Load
from bench.serving.results import ServerRun, find

__all__ = ["evaluate"]


def evaluate(runs: list[ServerRun], connections: int) -> list[Target]:
    """Issue 12's serving targets: reads at twice uvicorn, writes past both peers."""
    p99 = f"p99 <= 2 ms at {connections} connections"
    return [
        _ratio(runs, GET_CLOSED, "uvicorn", 2.0, "sprintd fast path req/s >= 2x uvicorn"),
        _ratio(
            runs, GET_CLOSED, "granian-rsgi", 1.3, "sprintd fast path req/s >= 1.3x granian rsgi"
        ),
        _p99(runs, GET_CLOSED, 2.0, f"sprintd fast path {p99}"),
        _ratio(runs, ECHO_CLOSED, "uvicorn", 1.2, "sprintd dynamic path req/s >= 1.2x uvicorn"),
        _ratio(
            runs,
            ECHO_CLOSED,
            "granian-rsgi",
            1.3,
            "sprintd dynamic path req/s >= 1.3x granian rsgi",
        ),
        _p99(runs, ECHO_CLOSED, 2.0, f"sprintd dynamic path {p99}"),
        _ratio(
            runs,
            ECHO_CLOSED,
            "hypercorn",
            15.0,
            "sprintd dynamic path req/s >= 15x hypercorn trio worker",
        ),
    ]


def _ratio(runs: list[ServerRun], load: Load, peer: str, wanted: float, goal: str) -> Target:
    ours, theirs = find(runs, load, "sprintd"), find(runs, load, peer)
    if ours is None or theirs is None:
        return Target(goal, "not measured", None)
    ratio = ours.rps / theirs.rps
    measured = f"{ratio:.2f}x ({ours.rps:,.0f} vs {theirs.rps:,.0f} req/s)"
    return Target(goal, measured, ratio >= wanted)


def _p99(runs: list[ServerRun], load: Load, limit_ms: float, goal: str) -> Target:
    ours = find(runs, load, "sprintd")
    if ours is None:
        return Target(goal, "not measured", None)
    p99 = ours.at(99.0)
    return Target(goal, f"p99 {p99:.3f} ms", p99 <= limit_ms)
