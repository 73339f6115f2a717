"""The journal's parts (``sprintd.journal`` and the ``journal_*`` modules) and their order.

Each part may import only the parts below it, so there is no cycle to break
and a lower part can be read, and tested, without the higher ones. Imports
under ``TYPE_CHECKING`` count: a cycle for the type checker is a cycle.
"""

from __future__ import annotations

from pathlib import Path

import sprintd

from .test_layout import _imports

DAEMON = Path(sprintd.__file__).parent
# Lowest first: the format on disk, the open directory's files, availability,
# the writer, snapshots and checkpoints, and the facade over them all.
PARTS = (
    "journal_format",
    "journal_segments",
    "journal_space",
    "journal_writer",
    "journal_checkpoints",
    "journal",
)


def _upward_imports(part: str) -> list[str]:
    lower = PARTS[: PARTS.index(part)]
    found = []
    for line, module in _imports((DAEMON / f"{part}.py").read_text("utf-8"), "sprintd"):
        name = module.removeprefix("sprintd.").split(".")[0]
        if name in PARTS and name not in lower:
            found.append(f"{part}.py:{line} imports {module}")
    return found


def test_every_journal_module_is_a_listed_part() -> None:
    # A new part must take its place in the order, or it goes unchecked.
    assert sorted(p.stem for p in DAEMON.glob("journal*.py")) == sorted(PARTS)


def test_journal_parts_import_only_the_parts_below_them() -> None:
    assert [line for part in PARTS for line in _upward_imports(part)] == []
