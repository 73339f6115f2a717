"""The payments plugin's families on GET /metrics (``plugins/payments/metrics.py``),
from a real daemon and the two emulated processors: accepted, sent and failed
per processor, retries, the queue, and the processors' health."""

from __future__ import annotations

import json
import uuid

from .daemons import Daemon, DaemonFactory, wait_for
from .scraping import Samples, promtool_complaints, scrape, value
from .servers import Processors

HEALTH_INTERVAL = "0.3"


def pay(served: Daemon, cid: str) -> int:
    body = json.dumps({"correlationId": cid, "amount": "1.50"}).encode()
    return served.request("POST", "/payments", body, {"Content-Type": "application/json"}).status


def metrics(served: Daemon) -> Samples:
    return scrape(served)[1]


def per_processor(samples: Samples, name: str) -> dict[str, float]:
    return {proc: value(samples, name, processor=proc) for proc in ("default", "fallback")}


def test_payments_families_follow_the_processors(
    daemon: DaemonFactory, processors: Processors
) -> None:
    for proc in (processors.default, processors.fallback):
        proc.proc.health_interval = float(HEALTH_INTERVAL)
    served = daemon(
        env={
            **processors.env(),
            "SPRINTD_PAYMENTS__HEALTH_INTERVAL": HEALTH_INTERVAL,
            # One sender: the payments behind it wait in the queue.
            "SPRINTD_PAYMENTS__CONCURRENCY": "1",
            # The fallback takes them as soon as the default is down.
            "SPRINTD_PAYMENTS__FALLBACK_AFTER_S": "0",
        }
    )
    wait_for(
        lambda: served.health()["checks"]["payments"][0]["processors"]["default"]["checked_ms"]
    )

    # Both healthy: five payments, each sent once to the default.
    cids = [str(uuid.uuid4()) for _ in range(5)]
    assert [pay(served, cid) for cid in cids] == [202] * 5
    assert pay(served, cids[0]) == 200  # a duplicate is not accepted again
    wait_for(lambda: value(metrics(served), "sprintd_payments_delivered_total") == 5)
    text, healthy, types = scrape(served)
    assert promtool_complaints(text) == ""
    assert types["sprintd_payments_queue_depth"] == "gauge"
    assert value(healthy, "sprintd_payments_accepted_total") == 5
    assert per_processor(healthy, "sprintd_payments_sent_total") == {"default": 5, "fallback": 0}
    assert per_processor(healthy, "sprintd_payments_failed_total") == {"default": 0, "fallback": 0}
    assert value(healthy, "sprintd_payments_retries_total") == 0
    assert value(healthy, "sprintd_payments_queue_depth") == 0
    assert value(healthy, "sprintd_payments_in_flight") == 0
    failing = "sprintd_payments_processor_failing"
    assert per_processor(healthy, failing) == {"default": 0, "fallback": 0}

    # Both failing: the health gauges say so, one payment is retried in
    # flight and the next two wait in the queue.
    processors.configure("default", failure=True)
    processors.configure("fallback", failure=True)
    wait_for(lambda: per_processor(metrics(served), failing) == {"default": 1, "fallback": 1})
    stuck = [str(uuid.uuid4()) for _ in range(3)]
    assert [pay(served, cid) for cid in stuck] == [202] * 3
    wait_for(lambda: value(metrics(served), "sprintd_payments_retries_total") >= 3)
    down = metrics(served)
    assert value(down, "sprintd_payments_in_flight") == 1
    assert value(down, "sprintd_payments_queue_depth") == 2
    sent, failed = (
        per_processor(down, n)
        for n in ("sprintd_payments_sent_total", "sprintd_payments_failed_total")
    )
    assert sum(failed.values()) >= 3
    # Every send after the first five failed.
    assert {p: sent[p] - failed[p] for p in sent} == {"default": 5, "fallback": 0}
    assert value(down, "sprintd_payments_delivered_total") == 5

    # The fallback recovers: the queue drains through it.
    processors.configure("fallback", failure=False)
    wait_for(lambda: value(metrics(served), "sprintd_payments_delivered_total") == 8, timeout=15)
    after = metrics(served)
    assert value(after, "sprintd_payments_accepted_total") == 8
    assert value(after, "sprintd_payments_queue_depth") == 0
    assert value(after, "sprintd_payments_in_flight") == 0
    sent, failed = (
        per_processor(after, n)
        for n in ("sprintd_payments_sent_total", "sprintd_payments_failed_total")
    )
    assert sent["fallback"] - failed["fallback"] == 3
    wait_for(lambda: per_processor(metrics(served), failing) == {"default": 1, "fallback": 0})
