"""Command-line pieces every bench shares: argument types, Ctrl-C, progress lines."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

__all__ = ["REPO", "choices", "interrupt", "positive", "say", "short"]

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
