"""The report skeleton every bench writes: targets and their verdicts, the
sections every report.md has, results.json beside it, and the exit status."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common.cli import say
from bench.common.paths import shell, short

__all__ = ["Target", "commands", "finish", "not_measured", "partial", "targets_table", "write"]

VERDICTS = {True: "**met**", False: "**not met**", None: "not evaluated"}


@dataclass(frozen=True)
class Target:
    """A goal from an issue and how a run fared against it."""

    goal: str
    measured: str
    # None when something it compares was not measured.
    met: bool | None


def targets_table(
    targets: Sequence[Target], *, none: str = "No target was evaluated."
) -> list[str]:
    """The "Targets" section: one row a target, with its verdict; ``none`` when
    there is no target."""
    if not targets:
        return ["## Targets", "", none]
    lines = ["## Targets", "", "| Target | Measured | |", "|---|---|---|"]
    return lines + [f"| {t.goal} | {t.measured} | {VERDICTS[t.met]} |" for t in targets]


def partial(interrupted: bool) -> list[str]:
    """The warning an interrupted run's report opens with (nothing otherwise)."""
    return (
        ["", "**The run was interrupted: the figures below are partial.**"] if interrupted else []
    )


def not_measured(failures: Iterable[tuple[str, str]]) -> list[str]:
    """The "Not measured" section, from (what, why) pairs; nothing when there are none."""
    rows = [f"- {what}: {why}" for what, why in failures]
    return ["", "## Not measured", "", *rows] if rows else []


def commands(argvs: Iterable[Sequence[str]]) -> list[str]:
    """A shell block of commands, paths inside the repository relative to it."""
    return ["```sh", *(shell(argv) for argv in argvs), "```"]


def write(out: Path, results: Mapping[str, Any], markdown: Sequence[str]) -> Path:
    """``results.json`` and ``report.md`` into ``out`` (the plots are there
    already); report.md's path."""
    text = json.dumps(results, indent=2, default=str)
    (out / "results.json").write_text(text + "\n", "utf-8")
    path = out / "report.md"
    path.write_text("\n".join(markdown) + "\n", "utf-8")
    return path


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
