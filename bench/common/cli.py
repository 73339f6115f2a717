"""Command-line pieces every bench shares: argument types, the common options,
Ctrl-C, progress lines."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from bench.common.paths import results_dir, timestamp

__all__ = ["add_run_options", "choices", "interrupt", "positive", "say", "start"]


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


def add_run_options(
    parser: argparse.ArgumentParser,
    bench: str,
    *,
    quick: str | None = None,
    pin: str | None = "do not pin the server and the load tools to separate CPUs",
) -> None:
    """``--quick`` (when ``quick`` says what it does), ``--no-pin`` (``args.pin``;
    when ``pin`` says what it leaves unpinned) and ``--out DIR``."""
    if quick is not None:
        parser.add_argument("--quick", action="store_true", help=quick)
    if pin is not None:
        parser.add_argument("--no-pin", dest="pin", action="store_false", help=pin)
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help=f"results directory (default bench/results/{bench}-<timestamp>)",
    )


def start(bench: str, out: Path | None, *subdirs: str) -> tuple[str, Path]:
    """A run begins: SIGTERM now stops it as Ctrl-C does, through every
    ``finally`` that stops a server. Its timestamp and results directory."""
    signal.signal(signal.SIGTERM, interrupt)
    started = timestamp()
    return started, results_dir(bench, started, out, *subdirs)


def interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM as Ctrl-C: the bench stops what runs and writes a partial report."""
    raise KeyboardInterrupt


def say(message: str) -> None:
    """A progress line, flushed at once: long runs show where they are."""
    print(message, flush=True)
