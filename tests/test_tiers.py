"""Tier profiles: the five load, their include chains, levels, SLA targets and knobs."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sprintd import tiers
from sprintd.settings import TuningSettings, load_settings
from sprintd.tiers import TIERS, load_profile

EXPECTED = {
    # tier: (optimization level, SLA p99.9 target in ms, include chain root first)
    "free": ("standard", 1000.0, ("free",)),
    "pro": ("high", 300.0, ("free", "pro")),
    "business": ("high", 300.0, ("free", "pro", "business")),
    "turbo": ("maximum", 5.0, ("free", "pro", "business", "turbo")),
    "enterprise": ("maximum", 5.0, ("free", "pro", "business", "turbo", "enterprise")),
}


def test_there_are_exactly_five_tiers() -> None:
    assert set(TIERS) == set(EXPECTED)
    assert len(TIERS) == 5


@pytest.mark.parametrize("name", list(EXPECTED))
def test_profile_loads_with_its_level_target_and_chain(name: str) -> None:
    level, sla_ms, chain = EXPECTED[name]
    profile = load_profile(name)  # type: ignore[arg-type]
    assert profile.name == name
    assert profile.optimization_level == level
    assert profile.sla_p999_ms == sla_ms
    assert profile.chain == chain
    assert profile.summary
    # Profiles set settings sections only: [main] is metadata, not a setting.
    assert "main" not in profile.settings
    # Every key a profile sets is a real tuning setting with a valid value.
    TuningSettings(**profile.settings.get("tuning", {}))
    loaded = load_settings(environ={"TIER": name})
    assert loaded.profile == profile
    for key, value in profile.settings.get("tuning", {}).items():
        assert getattr(loaded.settings.tuning, key) == value
        assert loaded.origin(("tuning", key)) == f"tier profile {name}"


def _tuning(name: str) -> dict[str, Any]:
    return dict(load_profile(name).settings["tuning"])  # type: ignore[arg-type]


def test_each_profile_is_its_parent_plus_what_it_says() -> None:
    free, pro, business, turbo, enterprise = (_tuning(t) for t in EXPECTED)
    assert free["gc_mode"] == "default"
    assert not any(free[k] for k in ("high_priority", "lock_memory", "prealloc_buffers"))
    # pro: frozen heap and larger thresholds, preallocated buffers, system settings.
    assert pro == free | {"gc_mode": "tuned", "prealloc_buffers": True, "optimize_system": True}
    # business: pro plus priority.
    assert business == pro | {"high_priority": True}
    # turbo: manual GC, the loop thread locked to its core.
    assert turbo == business | {"gc_mode": "manual", "gc_percent": 50, "lock_os_thread": True}
    # enterprise: turbo plus mlockall and full collections at 25% growth.
    assert enterprise == turbo | {"gc_percent": 25, "lock_memory": True}


def test_unknown_tier_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown tier 'gold'"):
        load_profile("gold")  # type: ignore[arg-type]


def test_include_cycle_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {
        "pro": {"main": {"include": "business"}},
        "business": {"main": {"include": "pro"}},
    }
    monkeypatch.setattr(tiers, "_read", lambda name: docs[name])
    with pytest.raises(ValueError, match="include cycle"):
        load_profile("pro")


def test_include_of_an_unknown_tier_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = {"pro": {"main": {"include": "platinum"}}}
    monkeypatch.setattr(tiers, "_read", lambda name: docs[name])
    with pytest.raises(ValueError, match="includes unknown tier 'platinum'"):
        load_profile("pro")


def test_sprintd_tiers_lists_all_five(sprintd_cli: Any) -> None:
    result = sprintd_cli("tiers")
    assert result.returncode == 0, result.stderr
    headers = re.findall(
        r"^(\w+)\s+\((\w+), SLA p99\.9 ([\d.]+) ms\)$", result.stdout, flags=re.MULTILINE
    )
    assert [h[0] for h in headers] == list(EXPECTED)
    for name, level, sla in headers:
        assert (level, float(sla)) == EXPECTED[name][:2]
    assert "includes: free < pro < business < turbo < enterprise" in result.stdout
    # What each profile sets is listed under it.
    enterprise = result.stdout.split("enterprise  (", 1)[1]
    assert "tuning.lock_memory = True" in enterprise
    assert "tuning.gc_mode = manual" in enterprise
