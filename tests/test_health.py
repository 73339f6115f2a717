"""GET /health, /livez, /readyz and /v1/stats on a real daemon."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import msgpack
import pytest

import sprintd
from sprintd.version import COMPILED_MODULES, build

from .daemons import NO_ORDERS, Daemon, DaemonFactory, run_cli

STATUSES = {"pass", "warn", "fail"}


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon()


def test_health_content_type_and_status(served: Daemon) -> None:
    result = served.get("/health")
    assert result.status == 200
    assert result.headers["content-type"] == "application/health+json"
    body = result.json()
    # On a loaded machine the loop probe may warn; fail would be a 503.
    assert body["status"] in {"pass", "warn"}


def test_health_names_the_tier_and_version(served: Daemon) -> None:
    body = served.health()
    assert body["tier"] == "free"
    assert body["optimization_level"] == "standard"
    assert body["version"] == sprintd.__version__


def test_health_and_version_name_the_build(served: Daemon) -> None:
    # The daemon runs this interpreter and this install: the build this test
    # process has (pure in the suite, compiled in make test-compiled).
    mine = build()
    assert served.health()["build"] == mine
    assert mine in (
        {"mode": "pure", "compiled": []},
        {"mode": "compiled", "compiled": list(COMPILED_MODULES)},
    )
    version = run_cli("--version")
    assert version.returncode == 0
    line = " ".join(version.stdout.split())
    assert line.startswith(f"sprintd {sprintd.__version__} (")
    if mine["mode"] == "pure":
        assert line.endswith("(pure Python)")
    else:
        assert line.endswith(f"(compiled with mypyc: {', '.join(COMPILED_MODULES)})")


def test_health_runtime(served: Daemon) -> None:
    runtime = served.health()["runtime"]
    assert runtime["pid"] == served.pid
    assert runtime["workers"] == 1
    assert runtime["worker"] == 0
    # The daemon runs on this interpreter (sys.executable).
    assert runtime["python"] == platform.python_version()
    gc_state = runtime["gc"]
    assert gc_state["mode"] == "default"
    assert gc_state["enabled"] is True
    assert gc_state["gc_percent"] == 100
    assert runtime["cpu_affinity"] == sorted(os.sched_getaffinity(served.pid))
    assert runtime["priority"] == os.getpriority(os.PRIO_PROCESS, served.pid)
    assert runtime["memory_locked_kib"] == 0
    assert runtime["uptime_s"] >= 0


def test_health_tuning_has_requested_and_applied_per_knob(served: Daemon) -> None:
    tuning = served.health()["tuning"]
    for knob in ("cpu_affinity", "priority", "gc", "prealloc_buffers", "lock_memory"):
        assert knob in tuning, knob
    for name, knob in tuning.items():
        assert set(knob) == {"requested", "applied", "ok", "reason"}, name
        assert isinstance(knob["ok"], bool)
        # A refused knob says why; an applied one has nothing to explain.
        assert (knob["reason"] is None) == knob["ok"], (name, knob)


def test_health_performance_stats_count_requests(served: Daemon) -> None:
    before = served.health()["performance_stats"]["requests"]
    for _ in range(5):
        assert served.get("/livez").status == 200
    perf = served.health()["performance_stats"]
    # The five /livez and the /health before this one.
    assert perf["requests"] >= before + 6
    assert perf["sla_target_ms"] == 1000.0
    assert 0.0 <= perf["sla_compliance"] <= 1.0
    assert perf["avg_latency_ms"] > 0
    assert perf["p99_latency_ms"] > 0
    assert perf["p99_latency_ms"] <= perf["max_latency_ms"]
    assert isinstance(perf["sla_met"], bool)


def test_health_checks_one_list_per_component(served: Daemon) -> None:
    checks = served.health()["checks"]
    assert {"sla", "event_loop"} <= set(checks)
    for name, observations in checks.items():
        assert isinstance(observations, list)
        assert observations, name
        for observation in observations:
            assert observation["status"] in STATUSES


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_probes_are_tiny_and_pass(served: Daemon, path: str) -> None:
    result = served.get(path)
    assert result.status == 200
    assert result.headers["content-type"] == "application/json"
    assert len(result.body) <= 64
    assert result.json() == {"status": "pass"}


@pytest.mark.parametrize("path", ["/livez", "/readyz"])
def test_probes_answer_on_both_paths_alike(served: Daemon, path: str) -> None:
    """The fast path (plain GET) and h11 (a Connection header) give the same answer."""
    with served.connect() as conn:
        conn.send(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        fast = conn.read_response()
        conn.send(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: keep-alive\r\n\r\n".encode())
        slow = conn.read_response()
    assert (fast.status, fast.body) == (slow.status, slow.body) == (200, b'{"status":"pass"}')
    assert fast.header("content-length") == slow.header("content-length") == "17"


def _routes(stats: dict[str, Any]) -> dict[str, Any]:
    routes: dict[str, Any] = stats["routes"]
    return routes


def test_stats_per_route(served: Daemon) -> None:
    before = _routes(served.get("/v1/stats").json()).get("/readyz", {"count": 0})["count"]
    for _ in range(7):
        served.get("/readyz")
    served.get("/no/such/route")
    result = served.get("/v1/stats")
    assert result.status == 200
    assert result.headers["content-type"] == "application/json"
    stats = result.json()
    assert stats["tier"] == "free"
    assert stats["sla_target_ms"] == 1000.0
    routes = _routes(stats)
    readyz = routes["/readyz"]
    assert readyz["count"] == before + 7
    assert set(readyz["all_time_ms"]) >= {"count", "mean", "min", "max", "p50", "p99", "p99_9"}
    assert readyz["all_time_ms"]["count"] == readyz["count"]
    assert readyz["recent_ms"]["count"] == readyz["count"]
    assert 0 < readyz["all_time_ms"]["min"] <= readyz["all_time_ms"]["max"]
    assert 0.0 <= readyz["sla_compliance"] <= 1.0
    # Answers for no route are counted apart, as client errors.
    assert routes["<unmatched>"]["client_errors"] >= 1
    assert "/health" in routes
    assert "/v1/stats" in routes


def test_stats_in_msgpack(served: Daemon) -> None:
    result = served.get("/v1/stats", headers={"Accept": "application/msgpack"})
    assert result.status == 200
    assert result.headers["content-type"] == "application/msgpack"
    stats = msgpack.unpackb(result.body, raw=False)
    assert stats["tier"] == "free"
    assert "/v1/stats" in stats["routes"]


def test_health_at_enterprise(daemon: DaemonFactory) -> None:
    served = daemon("--tier", "enterprise")
    body = served.health()
    assert body["tier"] == "enterprise"
    assert body["optimization_level"] == "maximum"
    assert body["performance_stats"]["sla_target_ms"] == 5.0
    assert body["runtime"]["gc"]["mode"] == "manual"
    assert body["runtime"]["gc"]["enabled"] is False


def test_health_and_stats_answer_for_every_worker(daemon: DaemonFactory) -> None:
    served = daemon("--workers", "2", workers=2, env=NO_ORDERS)
    pids = sorted(
        int(p) for p in Path(f"/proc/{served.pid}/task/{served.pid}/children").read_text().split()
    )
    # New connections: the kernel spreads them over both workers.
    for _ in range(40):
        assert served.get("/livez").status == 200
    for _ in range(4):
        body = served.get("/v1/stats").json()
        assert body["workers"] == [0, 1]
        # Every worker's requests, whichever worker answered.
        assert body["routes"]["/livez"]["count"] == 40
        assert body["routes"]["/livez"]["recent_ms"]["count"] == 40
        health = served.get("/health")
        assert health.status == 200
        document = health.json()
        assert sorted(worker["pid"] for worker in document["workers"]) == pids
        assert document["checks"]["workers"][0]["status"] == "pass"
        assert document["performance_stats"]["requests"] >= 40
