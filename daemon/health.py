"""The core's health plugin: /health, /livez, /readyz and /v1/stats.

/health follows the draft "Health Check Response Format for HTTP APIs"
(application/health+json): a ``status`` of pass, warn or fail, and ``checks``
keyed by component, each a list of observations. Everything under
``runtime`` is read from the process when asked (affinity, priority, GC
state), never from the settings, so it cannot claim what the kernel refused.

/livez and /readyz are fast-path snapshots: a load balancer can poll them at
any rate for nothing. /readyz turns 503 as soon as the worker drains, and
while the journal refuses writes (``{"status":"fail","reason":
"journal_unavailable","message":...}``), republished whenever the journal's
availability changes; /livez stays 200 (restarting would not help).

With workers > 1, /health and /v1/stats answer for the daemon, whichever
worker the kernel hands the connection to: the worker asks its siblings
(``peers``) and merges their recorders' histograms into its figures, and
/health lists every worker with its status (one that does not answer in
time is a warning; the others still serve). /livez and /readyz stay each
worker's own: a balancer that probes a port needs the answer of the worker
it reached.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from typing import Any

import trio

from .app import App, BackgroundTask, CheckStatus, HealthCheck, Route, SnapshotSpec
from .audit import AuditLog
from .hookspecs import hookimpl
from .http import Request, Response
from .latency import Recorder, merged, summarize
from .peers import ASK_TIMEOUT_S, Peers
from .sla import performance
from .tuning import vm_locked_kib
from .version import __version__, build

__all__ = ["HealthPlugin", "daemon_health", "daemon_stats", "health", "stats"]

HEALTH_JSON = b"application/health+json"
LIVE = b'{"status":"pass"}'
READY = b'{"status":"pass"}'
DRAINING = b'{"status":"fail","reason":"draining"}'
# The event loop is "lagging" when a short sleep overshoots by more than this.
LOOP_LAG_WARN_S = 0.05
LOOP_PROBE_INTERVAL_S = 0.5
_STATUS_RANK = {"pass": 0, "warn": 1, "fail": 2}


class _LoopProbe:
    """How late the loop wakes a sleeping task: lag that every request shares."""

    def __init__(self) -> None:
        self.last_lag_s = 0.0
        self.max_lag_s = 0.0

    async def run(self, app: App) -> None:
        while True:
            start = trio.current_time()
            await trio.sleep(LOOP_PROBE_INTERVAL_S)
            lag = trio.current_time() - start - LOOP_PROBE_INTERVAL_S
            self.last_lag_s = lag
            self.max_lag_s = max(self.max_lag_s, lag)

    def check(self) -> tuple[CheckStatus, dict[str, Any]]:
        status: CheckStatus = "warn" if self.last_lag_s > LOOP_LAG_WARN_S else "pass"
        return status, {
            "observedValue": round(self.last_lag_s * 1000, 3),
            "observedUnit": "ms",
            "max_ms": round(self.max_lag_s * 1000, 3),
        }


def _readiness(app: App) -> tuple[bytes, int]:
    """The /readyz body and status as things stand."""
    if app.draining:
        return DRAINING, 503
    for reason, message in app.unready.items():
        return json.dumps({"status": "fail", "reason": reason, "message": message}).encode(), 503
    return READY, 200


def _publish_readiness(app: App) -> None:
    ready = app.snapshots.get("/readyz")
    if ready is not None:
        ready.publish(*_readiness(app))


def _runtime(app: App) -> dict[str, Any]:
    return {
        "worker": app.worker_index,
        "workers": app.settings.server.workers,
        "pid": os.getpid(),
        "uptime_s": round(time.time() - app.started_at, 3),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "gc": app.tuner.gc.state(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "priority": os.getpriority(os.PRIO_PROCESS, 0),
        "memory_locked_kib": vm_locked_kib(),
    }


def health(app: App) -> tuple[int, dict[str, Any]]:
    perf = performance(app)
    checks: dict[str, list[dict[str, Any]]] = {}
    worst = "pass"
    sla_status: CheckStatus = "pass" if perf["sla_met"] else "warn"
    results: list[tuple[str, CheckStatus, dict[str, Any]]] = [
        (
            "sla",
            sla_status,
            {
                "observedValue": perf["p99_9_latency_ms"],
                "observedUnit": "ms",
                "target_ms": perf["sla_target_ms"],
            },
        ),
    ]
    for check in app.health_checks:
        try:
            status, details = check.check()
        except Exception as exc:
            status, details = "fail", {"output": f"check raised {type(exc).__name__}: {exc}"}
        results.append((check.name, status, details))
    for name, status, details in results:
        checks.setdefault(name, []).append({"status": status, **details})
        if _STATUS_RANK[status] > _STATUS_RANK[worst]:
            worst = status
    if app.draining:
        worst = "fail"
    body = {
        "status": worst,
        "tier": app.settings.tier,
        "optimization_level": app.profile.optimization_level,
        "version": __version__,
        "build": build(),
        "runtime": _runtime(app),
        "tuning": app.tuner.report.as_dict(),
        "performance_stats": perf,
        "checks": checks,
    }
    return (503 if worst == "fail" else 200), body


def stats(
    app: App,
    recorders: Mapping[str, Recorder] | None = None,
    recent: Mapping[str, list[int]] | None = None,
) -> dict[str, Any]:
    """Per-route figures over ``recorders`` and their ``recent`` samples (the
    whole daemon's, ``daemon_stats``), or this worker's own by default."""
    routes = {}
    for name, rec in sorted((app.recorders if recorders is None else recorders).items()):
        routes[name] = {
            "count": rec.count,
            "client_errors": rec.client_errors,
            "server_errors": rec.server_errors,
            "all_time_ms": rec.summary().as_ms(),
            "recent_ms": (
                rec.recent_summary() if recent is None else summarize(recent[name])
            ).as_ms(),
            "sla_compliance": rec.fraction_at_or_below(int(app.profile.sla_p999_ms * 1e6)),
        }
    return {
        "tier": app.settings.tier,
        "sla_target_ms": app.profile.sla_p999_ms,
        "uptime_s": round(time.time() - app.started_at, 3),
        "routes": routes,
        "performance_stats": performance(app, recorders),
    }


# --- the daemon's view, with workers > 1 -------------------------------------------


def _worker_health(app: App) -> dict[str, Any]:
    """What a worker tells a sibling answering /health for the daemon."""
    _, body = health(app)
    return {
        "status": body["status"],
        "pid": body["runtime"]["pid"],
        "uptime_s": body["runtime"]["uptime_s"],
        "checks": body["checks"],
        "recorders": {name: rec.export() for name, rec in app.recorders.items()},
    }


def _worker_stats(app: App) -> dict[str, Any]:
    """What a worker tells a sibling answering /v1/stats for the daemon."""
    return {
        "recorders": {name: rec.export() for name, rec in app.recorders.items()},
        "recent": {name: rec.recent() for name, rec in app.recorders.items()},
    }


def _merged(app: App, exports: list[dict[str, Any]]) -> dict[str, Recorder]:
    """This worker's recorders merged with its siblings' ``exports``, by route."""
    recorders: dict[str, list[Recorder]] = {name: [rec] for name, rec in app.recorders.items()}
    for export in exports:
        for name, state in export.items():
            recorders.setdefault(name, []).append(Recorder.restored(name, state))
    return {name: merged(name, recs) for name, recs in recorders.items()}


async def daemon_health(app: App, peers: Peers) -> tuple[int, dict[str, Any]]:
    """/health for the whole daemon: this worker's document, its status the
    worst of every worker's (a worker that does not answer is a warning: the
    others serve), ``workers`` one entry each, ``performance_stats`` over
    every worker's requests."""
    _, body = health(app)
    answers = await peers.ask("health")
    workers: list[dict[str, Any]] = []
    for index in range(peers.count):
        if index == app.worker_index:
            runtime = body["runtime"]
            workers.append({"worker": index, "status": body["status"], "pid": runtime["pid"]})
            continue
        answer = answers.get(index)
        if answer is None:
            output = f"did not answer within {ASK_TIMEOUT_S:g} s (restarting?)"
            workers.append({"worker": index, "status": "warn", "output": output})
            continue
        failing = sorted(
            name
            for name, observations in answer["checks"].items()
            if any(o["status"] != "pass" for o in observations)
        )
        workers.append(
            {"worker": index, "status": answer["status"], "pid": answer["pid"], "checks": failing}
        )
    worst = max((worker["status"] for worker in workers), key=_STATUS_RANK.__getitem__)
    answered = 1 + len(answers)  # this worker, and the siblings that answered
    body["checks"]["workers"] = [
        {
            "status": "pass" if answered == peers.count else "warn",
            "observedValue": answered,
            "observedUnit": "workers answering",
            "target": peers.count,
        }
    ]
    body["status"] = worst
    body["workers"] = workers
    recorders = _merged(app, [answer["recorders"] for answer in answers.values()])
    body["performance_stats"] = performance(app, recorders)
    return (503 if worst == "fail" else 200), body


async def daemon_stats(app: App, peers: Peers) -> dict[str, Any]:
    """/v1/stats for the whole daemon: every route over every worker that answered."""
    answers = await peers.ask("stats")
    recorders = _merged(app, [answer["recorders"] for answer in answers.values()])
    # Every worker's last samples, each ring as it stands.
    recent = {name: rec.recent() for name, rec in app.recorders.items()}
    for answer in answers.values():
        for name, samples in answer["recent"].items():
            recent.setdefault(name, []).extend(samples)
    body = stats(app, recorders, recent)
    body["workers"] = sorted([app.worker_index, *answers])
    return body


def _audit_check(audit: AuditLog) -> tuple[CheckStatus, dict[str, Any]]:
    """Warn while the audit log cannot write: security events are being lost."""
    details: dict[str, Any] = {
        "enabled": audit.enabled,
        "written": audit.written,
        "dropped": audit.dropped + audit.lost,
    }
    if audit.failure is not None:
        details["output"] = audit.failure
        return "warn", details
    return "pass", details


# --- the plugin --------------------------------------------------------------


class HealthPlugin:
    """Registered once per plugin manager, so each app has its own loop probe."""

    def __init__(self) -> None:
        self.probe = _LoopProbe()

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        # Health stays open for load balancers; the stats are metrics, and
        # guarded as [auth] metrics_scope says.
        metrics_scope = app.settings.auth.metrics_scope
        peers = app.peers
        if peers is None:

            def get_health(request: Request) -> Response:
                status, body = health(app)
                return Response(status, json.dumps(body).encode("utf-8"), HEALTH_JSON)

            def get_stats(request: Request) -> Response:
                return Response.data(stats(app), msgpack_=request.wants_msgpack())

            return [
                Route("GET", "/health", get_health, scope="open"),
                Route("GET", "/v1/stats", get_stats, scope=metrics_scope),
            ]

        peers.handle("health", functools.partial(_worker_health, app))
        peers.handle("stats", functools.partial(_worker_stats, app))

        async def get_daemon_health(request: Request) -> Response:
            status, body = await daemon_health(app, peers)
            return Response(status, json.dumps(body).encode("utf-8"), HEALTH_JSON)

        async def get_daemon_stats(request: Request) -> Response:
            body = await daemon_stats(app, peers)
            return Response.data(body, msgpack_=request.wants_msgpack())

        return [
            Route("GET", "/health", get_daemon_health, scope="open"),
            Route("GET", "/v1/stats", get_daemon_stats, scope=metrics_scope),
        ]

    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        app.on_readiness.append(functools.partial(_publish_readiness, app))
        body, status = _readiness(app)
        return [
            SnapshotSpec("/livez", LIVE, scope="open"),
            SnapshotSpec("/readyz", body, scope="open", status=status),
        ]

    @hookimpl
    def sprintd_health_checks(self, app: App) -> Sequence[HealthCheck]:
        return [
            HealthCheck("event_loop", self.probe.check),
            HealthCheck("audit", functools.partial(_audit_check, app.audit)),
        ]

    @hookimpl
    def sprintd_background_tasks(self, app: App) -> Sequence[BackgroundTask]:
        return [self.probe.run]

    @hookimpl
    def sprintd_drain(self, app: App) -> None:
        _publish_readiness(app)
