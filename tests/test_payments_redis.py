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


def test_two_instances_give_one_summary_and_poll_health_once_per_5_s(
    daemon: DaemonFactory, processors: Processors, redis_url: str
) -> None:
    started = time.monotonic()
    one = start(daemon, processors, redis_url)
    two = start(daemon, processors, redis_url)
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

    # Health: over more than two intervals, each processor was asked at most
    # once per 5 s, never refused for asking too often, and the instance
    # that did not poll has the result the other published.
    while time.monotonic() - started < 11.5:
        time.sleep(0.25)
    elapsed = time.monotonic() - started
    for name in ("default", "fallback"):
        stats = processors.stats(name)
        assert stats["health_limited"] == 0, stats
        assert 2 <= stats["health_calls"] <= elapsed // 5 + 1, (stats, elapsed)
    polls = state(one)["health_polls"] + state(two)["health_polls"]
    assert polls == sum(processors.stats(n)["health_calls"] for n in ("default", "fallback"))
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
