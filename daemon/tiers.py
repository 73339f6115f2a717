"""Tier profiles: small TOML files shipped as package data.

A profile is a ``[main]`` table (``summary``, ``optimization_level``,
``sla_p999_ms`` and an optional ``include``) followed by settings sections that
lay over the built-in defaults. As in tuned, inheritance is explicit: the
included parent loads first and the child's keys replace its parent's, so
``enterprise`` is ``turbo`` plus the two lines that differ.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal, get_args

__all__ = ["TIERS", "Tier", "TierProfile", "load_profile"]

Tier = Literal["free", "pro", "business", "turbo", "enterprise"]
TIERS: tuple[Tier, ...] = get_args(Tier)

OptimizationLevel = Literal["standard", "high", "maximum"]

# A chain longer than the number of tiers can only be a cycle.
_MAX_INCLUDE_DEPTH = len(TIERS)


@dataclass(frozen=True)
class TierProfile:
    """A tier's profile (``tiers/NAME.toml``) with its includes merged: the settings
    it sets and the latency it promises."""

    name: Tier
    summary: str
    optimization_level: OptimizationLevel
    sla_p999_ms: float
    # Settings sections as the profile sets them, parents merged in.
    settings: dict[str, Any] = field(default_factory=dict)
    # The include chain, the root first and this profile last.
    chain: tuple[str, ...] = ()


def _read(name: str) -> dict[str, Any]:
    text = resources.files("sprintd.tier_profiles").joinpath(f"{name}.toml").read_text("utf-8")
    return tomllib.loads(text)


def _overlay(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _overlay(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_profile(name: Tier) -> TierProfile:
    """Load a tier profile with its includes resolved.

    Raises:
        ValueError: the name is not a tier, or the include chain is broken.
    """
    if name not in TIERS:
        raise ValueError(f"unknown tier {name!r}; expected one of {', '.join(TIERS)}")
    chain: list[str] = []
    docs: list[dict[str, Any]] = []
    current: str | None = name
    while current is not None:
        if current in chain or len(chain) >= _MAX_INCLUDE_DEPTH:
            raise ValueError(f"tier profile {name!r}: include cycle through {current!r}")
        if current not in TIERS:
            raise ValueError(f"tier profile {chain[-1]!r} includes unknown tier {current!r}")
        doc = _read(current)
        chain.append(current)
        docs.append(doc)
        current = doc.get("main", {}).get("include")
    merged: dict[str, Any] = {}
    for doc in reversed(docs):
        merged = _overlay(merged, doc)
    main = merged.pop("main")
    return TierProfile(
        name=name,
        summary=main["summary"],
        optimization_level=main["optimization_level"],
        sla_p999_ms=float(main["sla_p999_ms"]),
        settings=merged,
        chain=tuple(reversed(chain)),
    )
