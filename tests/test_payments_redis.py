"""The payments plugin on the Redis store: instances sharing one real redis-server.

Two daemons behind no balancer at all (the test posts to either) must act
as one: one summary, a duplicate accepted once whichever instance sees it,
one health poller per processor, and a killed instance's payments delivered
by the survivor, each to one processor once.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from .daemons import Daemon, DaemonFactory, wait_for
from .servers import Processors
from .test_payments import (
    agree,
    assert_once_each,
    new_id,
    post,
    settled,
    state,
    stream_then_kill,
    summary,
)

pytestmark = pytest.mark.slow

HEALTH_INTERVAL = 1.0


def start(daemon: DaemonFactory, processors: Processors, redis_url: str, **env: str) -> Daemon:
    settings = {f"SPRINTD_PAYMENTS__{k.upper()}": v for k, v in env.items()}
    return daemon(
        env={
            **processors.env(),
            "SPRINTD_PAYMENTS__STORE": "redis",
            "SPRINTD_REDIS__URL": redis_url,
            **settings,
        }
    )


def test_two_instances_give_one_summary_and_poll_health_once_per_interval(
    daemon: DaemonFactory, processors: Processors, redis_url: str
) -> None:
    # The challenge's processors allow a health call per 5 s; the rate is the
    # point, not its size, so both sides use HEALTH_INTERVAL instead.
    for name in ("default", "fallback"):
        processors[name].proc.health_interval = HEALTH_INTERVAL
    started = time.monotonic()
    one = start(daemon, processors, redis_url, health_interval=str(HEALTH_INTERVAL))
    two = start(daemon, processors, redis_url, health_interval=str(HEALTH_INTERVAL))
    cids = []
    for i in range(40):
        cid = new_id()
        cids.append(cid)
        assert post(one if i % 2 else two, {"correlationId": cid, "amount": "10.01"})[0] == 202
    # A duplicate is a duplicate whichever instance accepted the first.
    assert post(one, {"correlationId": cids[0], "amount": "10.01"})[0] == 200
    assert post(two, {"correlationId": cids[1], "amount": "99"})[0] == 409
    wait_for(lambda: settled(one) and settled(two))
    assert_once_each(processors, set(cids))
    assert summary(one) == summary(two) == agree(one, processors) == agree(two, processors)
    assert summary(one)["default"]["totalAmount"] == Decimal("400.40")

    # One instance purges; both see it.
    assert one.request("POST", "/purge-payments").status == 200
    assert summary(two)["default"]["totalRequests"] == 0
    assert post(two, {"correlationId": cids[0], "amount": "10.01"})[0] == 202

    # Health: over more than two intervals (three answered calls each), each
    # processor was asked at most once per interval, never refused for asking
    # too often, and the instance that did not poll has the result the other
    # published.
    def calls() -> list[int]:
        return [processors.stats(name)["health_calls"] for name in ("default", "fallback")]

    wait_for(lambda: min(calls()) >= 3)
    found = {name: processors.stats(name) for name in ("default", "fallback")}
    elapsed = time.monotonic() - started
    for stats in found.values():
        assert stats["health_limited"] == 0, stats
        assert stats["health_calls"] <= elapsed // HEALTH_INTERVAL + 1, (stats, elapsed)
    # Every poll an instance counts is one call a processor answered (equal
    # once no poll is in flight between the two readings).
    wait_for(lambda: state(one)["health_polls"] + state(two)["health_polls"] == sum(calls()))
    assert state(one)["processors"]["default"]["checked_ms"] > 0
    assert state(two)["processors"]["default"]["checked_ms"] > 0


def test_a_killed_instances_payments_are_delivered_by_another_once(
    daemon: DaemonFactory, processors: Processors, redis_url: str
) -> None:
    processors.configure("default", delay=40)
    fast = {"owner_ttl": "1.0", "concurrency": "4"}
    doomed = start(daemon, processors, redis_url, **fast)
    survivor = start(daemon, processors, redis_url, **fast)
    cids = [new_id() for _ in range(150)]
    acked = stream_then_kill(doomed, cids, "3.30", 100)
    got = processors.payments("default")
    assert len(got) < len(acked), "nothing was left to take over"

    wait_for(lambda: acked <= set(processors.payments("default")), timeout=15)
    wait_for(lambda: settled(survivor))
    found = assert_once_each(processors, acked)
    assert state(survivor)["adopted"] > 0
    assert set(found["default"]) <= set(cids)
    agree(survivor, processors)


def test_two_instances_of_two_workers_each_act_as_one(
    daemon: DaemonFactory, processors: Processors, redis_url: str
) -> None:
    # The store is shared, so every worker of every instance takes payments
    # (no owner worker): four processes, one summary, each payment once.
    env = {**processors.env(), "SPRINTD_PAYMENTS__STORE": "redis", "SPRINTD_REDIS__URL": redis_url}
    instances = [daemon("--workers", "2", workers=2, env=env) for _ in range(2)]

    cids = [new_id() for _ in range(60)]
    # A connection each: the kernel spreads them over both workers.
    for i, cid in enumerate(cids):
        assert post(instances[i % 2], {"correlationId": cid, "amount": "2.50"})[0] == 202
    assert post(instances[1], {"correlationId": cids[0], "amount": "2.50"})[0] == 200
    assert post(instances[0], {"correlationId": cids[1], "amount": "9"})[0] == 409

    # Each worker delivers its own: wait on the shared summary, not on the
    # one worker a /health happens to reach.
    def total(served: Daemon) -> Decimal:
        found = summary(served)
        return Decimal(found["default"]["totalAmount"] + found["fallback"]["totalAmount"])

    wait_for(lambda: all(total(served) == Decimal("150.00") for served in instances))
    assert_once_each(processors, set(cids))
    # Whichever worker answers: several reads of each instance agree.
    for served in instances * 3:
        agree(served, processors)
