"""GET /metrics: Prometheus text that promtool accepts, and counts that add up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .daemons import NO_ORDERS, Daemon, DaemonFactory, wait_for

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon()


def scrape(served: Daemon) -> tuple[str, Samples, dict[str, str]]:
    """The body, every sample by name and labels, and every family's type."""
    result = served.get("/metrics")
    assert result.status == 200
    assert result.headers["content-type"].startswith("text/plain; version=")
    text = result.body.decode("utf-8")
    samples: Samples = defaultdict(dict)
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return text, samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    found = [v for key, v in samples[name].items() if set(labels.items()) <= set(key)]
    assert len(found) == 1, (name, labels, samples.get(name))
    return found[0]


def test_promtool_accepts_the_metrics_after_traffic(served: Daemon) -> None:
    for path in ("/livez", "/readyz", "/health", "/v1/stats", "/nope", "/metrics"):
        served.get(path)
    served.request("DELETE", "/health")
    with served.connect() as conn:
        conn.send(b"NONSENSE\r\n\r\n")
        assert conn.read_response().status == 400
    text, _, _ = scrape(served)
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text.encode(),
        capture_output=True,
        timeout=30,
        check=False,
    )
    complaints = (check.stdout + check.stderr).decode()
    assert check.returncode == 0, complaints
    assert complaints.strip() == ""


def test_families_and_types(served: Daemon) -> None:
    served.get("/livez")
    _, samples, types = scrape(served)
    assert types["sprintd_request_duration_seconds"] == "histogram"
    assert types["sprintd_requests"] == "counter"
    assert types["sprintd_request_errors"] == "counter"
    assert types["sprintd_sla_compliance_ratio"] == "gauge"
    assert types["sprintd_tier_info"] == "gauge"  # an info metric, in the text format
    assert types["sprintd_tuning_applied"] == "gauge"
    assert types["sprintd_gc_pause_seconds"] == "histogram"
    assert "sprintd_requests_total" in samples
    assert "sprintd_request_errors_total" in samples
    # The process and python collectors.
    assert "process_cpu_seconds_total" in samples
    assert "process_resident_memory_bytes" in samples
    assert "python_info" in samples
    assert "python_gc_objects_collected_total" in samples


def test_tier_info_and_sla(served: Daemon) -> None:
    _, samples, _ = scrape(served)
    assert value(samples, "sprintd_tier_info", tier="free", optimization_level="standard") == 1
    assert value(samples, "sprintd_sla_target_seconds") == 1.0
    assert 0.0 <= value(samples, "sprintd_sla_compliance_ratio") <= 1.0


def test_tuning_applied_matches_health(served: Daemon) -> None:
    tuning = served.health()["tuning"]
    _, samples, _ = scrape(served)
    applied = {dict(key)["knob"]: v for key, v in samples["sprintd_tuning_applied"].items()}
    assert applied == {name: 1.0 if knob["ok"] else 0.0 for name, knob in tuning.items()}


def test_gc_pause_histogram_per_generation(served: Daemon) -> None:
    _, samples, _ = scrape(served)
    generations = {dict(key)["generation"] for key in samples["sprintd_gc_pause_seconds_count"]}
    assert generations == {"0", "1", "2"}
    for gen in generations:
        count = value(samples, "sprintd_gc_pause_seconds_count", generation=gen)
        assert value(samples, "sprintd_gc_pause_seconds_bucket", generation=gen, le="+Inf") == count


def test_counts_reflect_the_requests_made(served: Daemon) -> None:
    """N GETs of /livez add exactly N to its counters; M of an unknown path add M errors."""
    _, before, _ = scrape(served)
    n, m = 23, 4

    def livez(samples: Samples, name: str) -> float:
        found = [v for key, v in samples[name].items() if ("route", "/livez") in key]
        return found[0] if found else 0.0

    def unmatched_client_errors(samples: Samples) -> float:
        labels = {("route", "<unmatched>"), ("kind", "client")}
        found = [v for k, v in samples["sprintd_request_errors_total"].items() if labels <= set(k)]
        return found[0] if found else 0.0

    with served.connect() as conn:
        for _ in range(n):
            conn.send(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
            assert conn.read_response().status == 200
    for _ in range(m):
        assert served.get("/no/such/path").status == 404
    _, after, _ = scrape(served)

    assert livez(after, "sprintd_requests_total") - livez(before, "sprintd_requests_total") == n
    count = "sprintd_request_duration_seconds_count"
    assert livez(after, count) - livez(before, count) == n
    assert unmatched_client_errors(after) - unmatched_client_errors(before) == m
    assert value(after, "sprintd_request_errors_total", route="/livez", kind="client") == 0


def test_latency_histogram_is_consistent_per_route(served: Daemon) -> None:
    for _ in range(3):
        served.get("/health")
    _, samples, _ = scrape(served)
    routes = {dict(key)["route"] for key in samples["sprintd_request_duration_seconds_count"]}
    assert {"/health", "/livez", "/metrics"} <= routes
    for route in routes:
        buckets = sorted(
            (float(dict(key)["le"]), v)
            for key, v in samples["sprintd_request_duration_seconds_bucket"].items()
            if dict(key)["route"] == route
        )
        counts = [v for _, v in buckets]
        assert counts == sorted(counts), route
        assert buckets[-1][0] == float("inf")
        total = value(samples, "sprintd_request_duration_seconds_count", route=route)
        assert counts[-1] == total
        assert value(samples, "sprintd_requests_total", route=route) == total
        assert value(samples, "sprintd_request_duration_seconds_sum", route=route) >= 0
    assert value(samples, "sprintd_request_duration_seconds_count", route="/health") >= 3


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_one_scrape_answers_for_every_worker(daemon: DaemonFactory) -> None:
    served = daemon("--workers", "2", workers=2, env=NO_ORDERS)
    # New connections: the kernel spreads them over both workers.
    for _ in range(40):
        assert served.get("/health").status == 200
    for _ in range(6):
        text, samples, _ = scrape(served)
        assert value(samples, "sprintd_worker_up", worker="0") == 1.0
        assert value(samples, "sprintd_worker_up", worker="1") == 1.0
        # Each worker's own series, whichever worker answered the scrape ...
        health = {
            labels: count
            for labels, count in samples["sprintd_requests_total"].items()
            if ("route", "/health") in labels
        }
        assert {dict(labels)["worker"] for labels in health} == {"0", "1"}
        # ... and together they count every request the daemon answered.
        assert sum(health.values()) == 40
        # Series that are per process are told apart by their worker.
        assert {dict(k)["worker"] for k in samples["process_resident_memory_bytes"]} == {"0", "1"}
        check = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, check=False
        )
        assert check.returncode == 0, (check.stdout + check.stderr).decode()


def test_a_scrape_while_a_worker_is_killed_answers_in_time(daemon: DaemonFactory) -> None:
    served = daemon("--workers", "2", workers=2, env=NO_ORDERS)
    victim = _children(served.pid)[0]
    os.kill(victim, signal.SIGKILL)
    # Answered, with what the live workers say, never a hang; the killed
    # worker is restarted by the supervisor and is counted again.
    for _ in range(4):
        _, samples, _ = scrape(served)
        up = [value(samples, "sprintd_worker_up", worker=w) for w in ("0", "1")]
        assert 1.0 in up
    wait_for(
        lambda: (
            [value(scrape(served)[1], "sprintd_worker_up", worker=w) for w in ("0", "1")]
            == [1.0, 1.0]
        ),
        timeout=20,
    )
    assert victim not in _children(served.pid)
