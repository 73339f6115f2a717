"""Which CPUs the server and the load tools run on.

On a small machine a load tool and a server on the same core measure each
other's scheduling, not the server; so the server gets a core of its own, the
way a one-worker-per-core deployment runs, and the tools share the rest.
Pinning is done with ``taskset`` in front of the command rather than in a
``preexec_fn``: it covers every thread the program starts, and the recorded
command shows it. A bench's own process (a client it runs in process, an
in-process measurement) moves with ``on_cpus``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["Pinning", "on_cpus", "pinned", "plan"]

TASKSET = "/usr/bin/taskset"


@dataclass(frozen=True)
class Pinning:
    """The CPU lists for the server and for the tools; None: no pinning."""

    server: str | None
    tools: str | None

    def describe(self) -> str:
        if self.server is None or self.tools is None:
            return "none (servers and load tools share every CPU)"
        return f"servers on CPU {self.server}, load tools (wrk, k6) on CPU {self.tools}"


def plan(enabled: bool) -> Pinning:
    cpus = sorted(os.sched_getaffinity(0))
    if not enabled or len(cpus) < 2 or not os.access(TASKSET, os.X_OK):
        return Pinning(None, None)
    return Pinning(str(cpus[-1]), ",".join(str(c) for c in cpus[:-1]))


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    return argv if cpus is None else [TASKSET, "-c", cpus, *argv]


@contextmanager
def on_cpus(cpu_list: str | None) -> Iterator[None]:
    """This process on ``cpu_list`` (``"0,1"``) for a while; None: where it is."""
    before = os.sched_getaffinity(0)
    if cpu_list is not None:
        os.sched_setaffinity(0, {int(c) for c in cpu_list.split(",")})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
