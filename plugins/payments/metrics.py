"""The payments plugin's families on GET /metrics, read at scrape time.

They read the counts the dispatcher and the processors keep for ``/health``
anyway, and the API's ``accepted`` (one integer a 202). With
``store = "redis"`` every worker counts what it accepted and sent itself:
sum over ``worker`` (and instances) for the gateway's figures.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .api import PaymentsAPI
from .dispatcher import Dispatcher

__all__ = ["PaymentsCollector"]


class PaymentsCollector:
    """Accepted, sent, failed and queued payments; the processors' health."""

    def __init__(self, api: PaymentsAPI, dispatcher: Dispatcher, worker: int) -> None:
        self.api = api
        self.dispatcher = dispatcher
        self.worker = str(worker)

    def collect(self) -> Iterator[Metric]:
        dispatcher, worker = self.dispatcher, self.worker
        w = [worker]
        for name, doc, count in (
            ("accepted", "Payments accepted (202) since start.", self.api.accepted),
            (
                "delivered",
                "Payments a processor has and the store marked done.",
                dispatcher.delivered,
            ),
            (
                "retries",
                "Back-offs before another try (a failed send or store call).",
                dispatcher.retries,
            ),
        ):
            counter = CounterMetricFamily(f"sprintd_payments_{name}", doc, labels=["worker"])
            counter.add_metric(w, count)
            yield counter
        for name, doc, count in (
            (
                "queue_depth",
                "Payments accepted and waiting for a dispatcher worker.",
                dispatcher.queued,
            ),
            ("in_flight", "Payments a dispatcher worker is delivering now.", dispatcher.inflight),
        ):
            gauge = GaugeMetricFamily(f"sprintd_payments_{name}", doc, labels=["worker"])
            gauge.add_metric(w, count)
            yield gauge

        sent = CounterMetricFamily(
            "sprintd_payments_sent",
            "Payment requests sent to each processor, answered or not.",
            labels=["processor", "worker"],
        )
        failed = CounterMetricFamily(
            "sprintd_payments_failed",
            "Of those, the ones not taken (5xx, 429, no answer): retried.",
            labels=["processor", "worker"],
        )
        failing = GaugeMetricFamily(
            "sprintd_payments_processor_failing",
            "1 while the processor's health check says failing.",
            labels=["processor", "worker"],
        )
        min_response = GaugeMetricFamily(
            "sprintd_payments_processor_min_response_seconds",
            "The processor's advertised minimum response time.",
            labels=["processor", "worker"],
        )
        for proc in (dispatcher.default, dispatcher.fallback):
            labels = [proc.name, worker]
            sent.add_metric(labels, proc.sent)
            failed.add_metric(labels, proc.failures)
            failing.add_metric(labels, 1.0 if proc.health.failing else 0.0)
            min_response.add_metric(labels, proc.health.min_response_ms / 1000)
        yield sent
        yield failed
        yield failing
        yield min_response
