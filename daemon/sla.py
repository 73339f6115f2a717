"""The tier's SLA against what the worker served: one figure set that /health,
/v1/stats and /metrics all report, so they can never disagree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .app import App
from .latency import Recorder, merged

__all__ = ["performance"]


def _served(recorders: Mapping[str, Recorder]) -> list[Recorder]:
    # "<malformed>" and "<unmatched>" record requests no route served.
    return [rec for name, rec in recorders.items() if not name.startswith("<")]


def performance(app: App, recorders: Mapping[str, Recorder] | None = None) -> dict[str, Any]:
    """SLA compliance: the share of requests answered within the tier's p99.9 target,
    over ``recorders`` (the whole daemon's) or, by default, this worker's."""
    target_ms = app.profile.sla_p999_ms
    total = merged("all", _served(app.recorders if recorders is None else recorders))
    summary = total.summary()
    compliance = total.fraction_at_or_below(int(target_ms * 1e6))
    return {
        "sla_target_ms": target_ms,
        "sla_compliance": compliance,
        "sla_met": summary.p999 <= target_ms * 1e6,
        "requests": summary.count,
        "avg_latency_ms": summary.mean / 1e6,
        "p99_latency_ms": summary.p99 / 1e6,
        "p99_9_latency_ms": summary.p999 / 1e6,
        "max_latency_ms": summary.max / 1e6,
    }
