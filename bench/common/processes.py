"""Processes a bench starts in sessions of their own: stopping one for sure,
the CPU time one used, and waiting for one with a progress line."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["alive", "cpu_seconds", "group_cpu_seconds", "stop_group", "wait_showing_progress"]

_TICK = os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a child of ours that exited is reaped here."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child of ours that exited is a zombie until reaped.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    return True


def stop_group(pid: int, timeout_s: float) -> None:
    """Stop the process group ``pid`` leads: SIGTERM lets it drain, SIGKILL
    takes whatever is left after ``timeout_s``, workers included."""
    # A second Ctrl-C must not cut this short and leave a server running; it
    # is delivered once the group is gone.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _ticks(stat: str) -> tuple[int, int]:
    """(process group, utime + stime in ticks) from a /proc/PID/stat line."""
    # After "(comm)": state, ppid, pgrp, ... utime (12th) and stime (13th).
    fields = stat.rpartition(")")[2].split()
    return int(fields[2]), int(fields[11]) + int(fields[12])


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) ``pid`` has used."""
    return _ticks(Path(f"/proc/{pid}/stat").read_text())[1] / _TICK


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds (user + system) of every live process in a process group."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            group, ticks = _ticks(stat.read_text())
        except OSError:
            continue
        if group == pgid:
            total += ticks
    return total / _TICK


def wait_showing_progress(
    process: subprocess.Popen[bytes], progress: Callable[[float], None], every_s: float
) -> None:
    """Wait for ``process`` to exit, calling ``progress`` with the seconds it
    has run every ``every_s`` seconds (a long load says it is alive)."""
    began, shown = time.monotonic(), 0.0
    while process.poll() is None:
        time.sleep(1)
        elapsed = time.monotonic() - began
        if elapsed >= shown + every_s:
            shown += every_s
            progress(elapsed)
