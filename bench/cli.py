"""Command-line pieces every bench shares: argument types, Ctrl-C, progress lines."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

__all__ = ["REPO", "Target", "choices", "finish", "interrupt", "positive", "say", "short"]

REPO = Path(__file__).resolve().parents[1]


def choices(value: str, allowed: Sequence[str]) -> list[str]:
    """A comma-separated subset of ``allowed``, for ``argparse``'s ``type``."""
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = sorted(set(chosen) - set(allowed))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(f"choose from {','.join(allowed)}; got {value!r}")
    return chosen


def positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return number


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C: the bench stops what runs and writes a partial report."""
    raise KeyboardInterrupt


def say(message: str) -> None:
    """A progress line, flushed at once: long runs show where they are."""
    print(message, flush=True)


def short(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


@dataclass(frozen=True)
class Target:
    """A goal from an issue and how a run fared against it."""

    goal: str
    measured: str
    # None when something it compares was not measured.
    met: bool | None


def finish(targets: Sequence[Target], report: Path, *, interrupted: bool, failed: bool) -> int:
    """Print the targets' verdicts and where the report is; the exit status:
    130 interrupted, 1 when something was not measured, else 0."""
    say("targets:")
    for target in targets:
        verdict = {True: "met", False: "NOT MET", None: "not evaluated"}[target.met]
        say(f"  {verdict:13} {target.goal}: {target.measured}")
    say(f"report: {short(report)}")
    if interrupted:
        return 130
    return 1 if failed else 0
