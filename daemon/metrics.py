"""The core's metrics plugin: GET /metrics in Prometheus text format.

Request metrics live in sprintd's own recorders (``latency``), which cost a
few integer operations per request; prometheus-client is used only at scrape
time, for the exposition format and its process and platform collectors. Its
own Histogram would take a lock per observation on the hot path.

Histogram buckets are cumulative counts of the recorder's log-linear buckets
whose upper bound lies at or below each ``le`` (a bucket is ~3% wide, so a
sample within 3% under a bound may be counted in the next bound up).

With several workers, the worker a scrape lands on answers for the daemon:
it asks its siblings for their families (``peers``) and gives every series
of every worker, each with a ``worker`` label, so a scrape that lands on
another worker next time never looks like a counter reset, and
``sprintd_worker_up`` says which workers answered in time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from .app import App, Route
from .auth import Guard
from .hookspecs import hookimpl
from .http import Request, Response
from .journal import Journal
from .latency import Recorder
from .peers import Peers
from .sla import performance
from .version import __version__

__all__ = [
    "LATENCY_BUCKETS_S",
    "MetricsPlugin",
    "add_histogram",
    "encode_families",
    "render",
    "render_daemon",
]


def _bounds(low: float, high: float) -> tuple[float, ...]:
    """Bucket bounds in 1, 2.5, 5 steps per decade, from ``low`` to ``high``."""
    steps = (round(m * 10.0**e, 9) for e in range(-6, 2) for m in (1.0, 2.5, 5.0))
    return tuple(b for b in steps if low <= b <= high)


# Request latency: 25 us to 10 s, three buckets a decade around any SLA.
LATENCY_BUCKETS_S = _bounds(0.000025, 10.0)
# GC pauses: 10 us to 250 ms.
GC_BUCKETS_S = _bounds(0.00001, 0.25)
# Records per journal batch: 1 to 10,000 (group commit under a thousand appenders).
BATCH_BUCKETS = tuple(float(m * 10**e) for e in range(5) for m in (1, 2, 5) if m * 10**e <= 10_000)


def add_histogram(
    family: HistogramMetricFamily,
    labels: Sequence[str],
    rec: Recorder,
    bounds: Sequence[float] = LATENCY_BUCKETS_S,
    scale: float = 1e9,
) -> None:
    """Add a recorder's samples to ``family`` as one labelled histogram.

    Args:
        family: the histogram family (its labels' names given when made).
        labels: this series' label values.
        rec: the recorder, read now (a collector runs at scrape time).
        bounds: the ``le`` bounds, in the family's unit (seconds by default).
        scale: recorder units per family unit: 1e9 for nanoseconds recorded
            and seconds exposed, 1 for a count recorded as is.
    """
    counts = rec.cumulative([int(b * scale) for b in bounds])
    buckets = [(repr(b), n) for b, n in zip(bounds, counts, strict=True)]
    buckets.append(("+Inf", rec.count))
    family.add_metric(list(labels), buckets, rec.total / scale)


class _AppCollector:
    def __init__(self, app: App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        worker = str(app.worker_index)
        info = InfoMetricFamily("sprintd_tier", "The tier profile this worker runs.")
        info.add_metric(
            [],
            {
                "tier": app.settings.tier,
                "optimization_level": app.profile.optimization_level,
                "version": __version__,
            },
        )
        yield info

        latency = HistogramMetricFamily(
            "sprintd_request_duration_seconds",
            "Time from reading a request to sending its response, per route.",
            labels=["route", "worker"],
        )
        requests = CounterMetricFamily(
            "sprintd_requests", "Requests answered, per route.", labels=["route", "worker"]
        )
        errors = CounterMetricFamily(
            "sprintd_request_errors",
            "Requests answered with 4xx (client) or 5xx (server), per route.",
            labels=["route", "worker", "kind"],
        )
        for name, rec in sorted(app.recorders.items()):
            add_histogram(latency, [name, worker], rec)
            requests.add_metric([name, worker], rec.count)
            errors.add_metric([name, worker, "client"], rec.client_errors)
            errors.add_metric([name, worker, "server"], rec.server_errors)
        yield latency
        yield requests
        yield errors

        perf = performance(app)
        yield GaugeMetricFamily(
            "sprintd_sla_target_seconds",
            "The tier's p99.9 latency target.",
            value=perf["sla_target_ms"] / 1000,
        )
        yield GaugeMetricFamily(
            "sprintd_sla_compliance_ratio",
            "Share of requests answered within the SLA target since start.",
            value=perf["sla_compliance"],
        )

        applied = GaugeMetricFamily(
            "sprintd_tuning_applied",
            "1 where a tuning knob is in force as requested, 0 where it was refused.",
            labels=["knob"],
        )
        for knob_name, knob in app.tuner.report.knobs.items():
            applied.add_metric([knob_name], 1.0 if knob.ok else 0.0)
        yield applied

        gc_pauses = HistogramMetricFamily(
            "sprintd_gc_pause_seconds",
            "Garbage-collection pauses, per generation.",
            labels=["generation"],
        )
        for gen, rec in enumerate(app.tuner.gc.monitor.recorders):
            add_histogram(gc_pauses, [str(gen)], rec, GC_BUCKETS_S)
        yield gc_pauses
        yield CounterMetricFamily(
            "sprintd_gc_full_collections",
            "Full collections the GC governor ran (heap grown by gc_percent).",
            value=app.tuner.gc.full_collections,
        )

        if app.guard is not None:
            yield _auth_denied(app.guard, worker)
        audit = CounterMetricFamily(
            "sprintd_audit_events",
            "Audit-log events written, and dropped (queue full or write failed).",
            labels=["outcome", "worker"],
        )
        audit.add_metric(["written", worker], app.audit.written)
        audit.add_metric(["dropped", worker], app.audit.dropped + app.audit.lost)
        yield audit

        journal = app.journal_opened
        if journal is not None:
            yield from _journal_families(journal, worker)

        # Plugins' collectors, read at scrape time: they register after this route.
        for collector in app.collectors:
            yield from collector.collect()


def _auth_denied(guard: Guard, worker: str) -> Metric:
    """401 (no key known: ``key=""``), 403 and 429 by the key's name."""
    denied = CounterMetricFamily(
        "sprintd_auth_denied",
        "Requests refused by the API-key guard, by reason (unauthorized 401, "
        "forbidden 403, rate_limited 429) and key name (none for 401).",
        labels=["reason", "key", "worker"],
    )
    denied.add_metric(["unauthorized", "", worker], guard.unauthorized)
    for key in guard.keys:
        denied.add_metric(["forbidden", key.name, worker], key.forbidden)
        denied.add_metric(["rate_limited", key.name, worker], key.rate_limited)
    return denied


def _journal_families(journal: Journal, worker: str) -> Iterator[Metric]:
    """The write-ahead journal's counts since open, and its state now."""
    w = [worker]
    counters = (
        (
            "records_written",
            "Records written (in the page cache) since start.",
            journal.records_written,
        ),
        (
            "batches_written",
            "Batches written since start: one write() each.",
            journal.batches_written,
        ),
        ("written_bytes", "Record bytes written since start.", journal.bytes_written),
        ("fsyncs", "Fsyncs of the active segment since start.", journal.fsyncs),
        (
            "checkpoints",
            "Checkpoints (every stream snapshotted) written since start.",
            journal.checkpoints,
        ),
        (
            "checkpoint_failures",
            "Snapshots the disk refused (each retried).",
            journal.checkpoint_failures,
        ),
    )
    for name, doc, count in counters:
        counter = CounterMetricFamily(f"sprintd_journal_{name}", doc, labels=["worker"])
        counter.add_metric(w, count)
        yield counter
    batches = HistogramMetricFamily(
        "sprintd_journal_batch_size_records",
        "Records per batch written (group commit's fan-in).",
        labels=["worker"],
    )
    add_histogram(batches, w, journal.batch_records, BATCH_BUCKETS, scale=1.0)
    yield batches
    fsync = HistogramMetricFamily(
        "sprintd_journal_fsync_duration_seconds",
        "Fsyncs of the active segment, from asking to done.",
        labels=["worker"],
    )
    add_histogram(fsync, w, journal.fsync_latency)
    yield fsync
    last_time = journal.last_checkpoint_time
    gauges = (
        (
            "disk_bytes",
            "Bytes of the journal's files: segments, spare, snapshots.",
            journal.disk_bytes,
        ),
        ("segments", "Segment files in the journal.", journal.segment_count),
        ("last_seq", "Sequence number of the last record appended.", journal.last_seq),
        ("synced_seq", "Records up to this sequence number are fsynced.", journal.synced_seq),
        (
            "last_checkpoint_seq",
            "Sequence number the last checkpoint covers.",
            journal.last_checkpoint_seq,
        ),
        (
            "last_checkpoint_timestamp_seconds",
            "Unix time of the last checkpoint written since start (0: none yet).",
            0.0 if last_time is None else last_time,
        ),
        (
            "available",
            "1 while writes are admitted, 0 while they are refused.",
            float(journal.writable),
        ),
    )
    for name, doc, value in gauges:
        gauge = GaugeMetricFamily(f"sprintd_journal_{name}", doc, labels=["worker"])
        gauge.add_metric(w, value)
        yield gauge


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


def encode_families(families: Iterable[Metric]) -> list[Any]:
    """Metric families as msgpack takes them, for a sibling worker's scrape."""
    return [
        [m.name, m.documentation, m.type, m.unit, [[s.name, s.labels, s.value] for s in m.samples]]
        for m in families
    ]


class _Families:
    """Families gathered from several workers, as a collector to render."""

    def __init__(self) -> None:
        self.by_name: dict[str, Metric] = {}

    def add(self, encoded: list[Any], worker: str) -> None:
        for name, documentation, kind, unit, samples in encoded:
            family = self.by_name.get(name)
            if family is None:
                family = self.by_name[name] = Metric(name, documentation, kind, unit)
            for sample_name, labels, value in samples:
                # Series that are per process (process_*, python_gc_*) have no
                # worker label of their own: every series gets one here.
                family.add_sample(sample_name, {"worker": worker} | labels, value)

    def collect(self) -> Iterator[Metric]:
        yield from self.by_name.values()


def render_daemon(registry: CollectorRegistry, peers: Peers, others: dict[int, list[Any]]) -> bytes:
    """This worker's families and its siblings' (``others``, by worker index), as one text."""
    families = _Families()
    families.add(encode_families(registry.collect()), str(peers.index))
    for index, encoded in sorted(others.items()):
        families.add(encoded, str(index))
    up = GaugeMetricFamily(
        "sprintd_worker_up",
        "1 for each worker that answered this scrape in time, 0 for one that did not.",
        labels=["worker"],
    )
    for index in range(peers.count):
        up.add_metric([str(index)], 1.0 if index == peers.index or index in others else 0.0)
    families.by_name[up.name] = up
    merged = CollectorRegistry(auto_describe=False)
    merged.register(families)
    return generate_latest(merged)


class MetricsPlugin:
    """Registered once per plugin manager: each app gets its own registry."""

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_AppCollector(app))
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        content_type = CONTENT_TYPE_LATEST.encode("ascii")
        scope = app.settings.auth.metrics_scope
        peers = app.peers
        if peers is None:

            def get_metrics(request: Request) -> Response:
                return Response(200, render(registry), content_type)

            return [Route("GET", "/metrics", get_metrics, scope=scope)]

        peers.handle("metrics", lambda: encode_families(registry.collect()))

        async def get_daemon_metrics(request: Request) -> Response:
            others = await peers.ask("metrics")
            return Response(200, render_daemon(registry, peers, others), content_type)

        return [Route("GET", "/metrics", get_daemon_metrics, scope=scope)]
