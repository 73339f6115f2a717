"""What a run measures: each engine, in each configuration worth comparing.

sprintd runs in both builds: the pure-Python engine (its source, loaded from
the .py files whatever the build) and the mypyc-compiled one (the installed
build, which must be compiled: setup.py). Each runs twice: with CPython's GC as
it comes, and with the collector policy of its maximum tier (enterprise)
applied the way the daemon applies it.
liquibook runs twice: alone, the way its own figures are taken (add() only
says whether an order traded), and with the order listener a caller needs to
learn its fills. The floor is no engine at all: the cost of the loop and of
one Python call per command, inside every other figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["ENGINES", "VARIANTS", "Variant", "by_key", "selected"]

GCRegime = Literal["defaults", "tier"]


@dataclass(frozen=True)
class Variant:
    key: str
    # The adapter in bench.engine.adapters, and the --engines name that selects it.
    adapter: str
    engine: str
    gc: GCRegime
    title: str
    # Variants the report's ratios, targets and plots leave out.
    floor: bool = False


VARIANTS = (
    Variant("sprintd", "sprintd", "sprintd", "defaults", "sprintd pure (GC defaults)"),
    Variant("sprintd-tier", "sprintd", "sprintd", "tier", "sprintd pure (enterprise GC policy)"),
    Variant(
        "sprintd-compiled",
        "sprintd-compiled",
        "sprintd",
        "defaults",
        "sprintd compiled (GC defaults)",
    ),
    Variant(
        "sprintd-compiled-tier",
        "sprintd-compiled",
        "sprintd",
        "tier",
        "sprintd compiled (enterprise GC policy)",
    ),
    Variant("liquibook", "liquibook", "liquibook", "defaults", "liquibook wrapper"),
    Variant(
        "liquibook-fills",
        "liquibook-fills",
        "liquibook",
        "defaults",
        "liquibook wrapper + fill listener",
    ),
    Variant("lme", "lme", "lme", "defaults", "lightmatchingengine"),
    Variant("floor", "floor", "floor", "defaults", "harness floor (no engine)", floor=True),
)
ENGINES = ("sprintd", "liquibook", "lme")


def by_key(key: str) -> Variant:
    for variant in VARIANTS:
        if variant.key == key:
            return variant
    raise KeyError(key)


def selected(engines: list[str]) -> list[Variant]:
    """The variants of the chosen engines, in report order; the floor always."""
    return [v for v in VARIANTS if v.engine in engines or v.floor]
