"""The payments plugin end to end, one daemon on the memory store: real sockets,
real processors (``sprintd.plugins.payments.emulator``), and kill -9.

Delivery is checked against what the processors recorded (their admin API),
never against the daemon's word alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest

from .daemons import Daemon, DaemonFactory, wait_for
from .servers import Processors

pytestmark = pytest.mark.slow

JSON = {"Content-Type": "application/json"}


def new_id() -> str:
    return str(uuid.uuid4())


def post(served: Daemon, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    result = served.request("POST", "/payments", data, JSON)
    return result.status, (result.json() if result.body else None)


def summary(served: Daemon, query: str = "") -> dict[str, Any]:
    result = served.get("/payments-summary" + query)
    assert result.status == 200, result.body
    found: dict[str, Any] = json.loads(result.body, parse_float=Decimal)
    return found


def state(served: Daemon) -> dict[str, Any]:
    check: dict[str, Any] = served.health()["checks"]["payments"][0]
    return check


def settled(served: Daemon) -> bool:
    now = state(served)
    return now["pending"] == 0 if "pending" in now else now["inflight"] == now["queued"] == 0


def recorded(processors: Processors) -> dict[str, dict[str, int]]:
    return {name: processors.payments(name) for name in ("default", "fallback")}


def assert_once_each(processors: Processors, cids: set[str]) -> dict[str, dict[str, int]]:
    """Every id in ``cids`` is at exactly one processor; returns what each has."""
    found = recorded(processors)
    both = set(found["default"]) & set(found["fallback"])
    assert not both, f"sent to both processors: {sorted(both)[:5]}"
    missing = cids - set(found["default"]) - set(found["fallback"])
    assert not missing, f"{len(missing)} never reached a processor"
    return found


def agree(served: Daemon, processors: Processors, query: str = "") -> dict[str, Any]:
    """The daemon's summary equals the processors', count for count and amount for amount."""
    ours = summary(served, query)
    for name in ("default", "fallback"):
        theirs = processors.summary(name, query)
        assert ours[name] == {
            "totalRequests": theirs["totalRequests"],
            "totalAmount": theirs["totalAmount"],
        }, (name, query, ours, theirs)
    return ours


def stream_then_kill(served: Daemon, cids: list[str], amount: str, answered: int) -> set[str]:
    """Pipeline a POST per id on one connection, read ``answered`` answers
    (each a 202), SIGKILL the daemon; the ids it acknowledged."""
    acked: set[str] = set()
    with served.connect() as conn:
        for cid in cids:
            body = json.dumps({"correlationId": cid, "amount": amount}).encode()
            conn.send(
                b"POST /payments HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
        for cid in cids[:answered]:
            assert conn.read_response().status == 202
            acked.add(cid)
        served.process.send_signal(signal.SIGKILL)
    served.process.wait()
    return acked


def start(daemon: DaemonFactory, processors: Processors, **env: str) -> Daemon:
    settings = {f"SPRINTD_PAYMENTS__{k.upper()}": v for k, v in env.items()}
    return daemon(env={**processors.env(), **settings})


# --- the contract --------------------------------------------------------------------


def test_accept_validate_and_deduplicate(daemon: DaemonFactory, processors: Processors) -> None:
    served = start(daemon, processors)
    cid = new_id()
    assert post(served, {"correlationId": cid, "amount": 19.90}) == (202, {"status": "accepted"})
    assert post(served, {"correlationId": cid, "amount": "19.9"}) == (200, {"status": "duplicate"})
    status, body = post(served, {"correlationId": cid, "amount": 20})
    assert (status, body["error"]["code"]) == (409, "duplicate_correlation_id")
    bad = [
        ({"amount": 1}, "invalid_correlation_id"),
        ({"correlationId": "nope", "amount": 1}, "invalid_correlation_id"),
        ({"correlationId": new_id(), "amount": 0}, "invalid_amount"),
        ({"correlationId": new_id(), "amount": -3}, "invalid_amount"),
        ({"correlationId": new_id(), "amount": "ten"}, "invalid_amount"),
        ({"correlationId": new_id()}, "invalid_amount"),
    ]
    for body_in, code in bad:
        status, body = post(served, body_in)
        assert (status, body["error"]["code"]) == (400, code), body_in
        assert body["error"]["message"]
    status, body = post(served, None, raw=b'{"correlationId": ')
    assert (status, body["error"]["code"]) == (400, "invalid_json")
    packed = served.request(
        "POST",
        "/payments",
        msgpack.packb({"correlationId": new_id(), "amount": "5.25"}),
        {"Content-Type": "application/msgpack"},
    )
    assert packed.status == 202
    for query, code in (("?from=yesterday", "invalid_from"), ("?to=2025-99-01", "invalid_to")):
        result = served.get("/payments-summary" + query)
        assert (result.status, result.json()["error"]["code"]) == (400, code)
    late_first = "?from=2025-07-15T12:00:01Z&to=2025-07-15T12:00:00Z"
    assert served.get("/payments-summary" + late_first).json()["error"]["code"] == "invalid_range"
    assert served.get("/payments").status == 405

    wait_for(lambda: settled(served))
    found = assert_once_each(processors, {cid})
    assert sum(len(v) for v in found.values()) == 2  # the first id once, and the msgpack one
    assert summary(served) == {
        "default": {"totalRequests": 2, "totalAmount": Decimal("25.15")},
        "fallback": {"totalRequests": 0, "totalAmount": 0},
    }
    # The daemon stays healthy after all that.
    assert served.get("/readyz").status == 200


def test_the_summary_agrees_with_the_processors_inclusive_bounds(
    daemon: DaemonFactory, processors: Processors
) -> None:
    # The fallback takes over as soon as the default is down.
    served = start(daemon, processors, fallback_after_s="0")
    amounts = ["0.01", "19.90", "1234.5", "7", "99999.99"] * 8
    cids = set()
    for i, amount in enumerate(amounts):
        cid = new_id()
        cids.add(cid)
        assert post(served, {"correlationId": cid, "amount": amount})[0] == 202
        if i == 19:
            # Half of them go to the fallback: the default fails, for sure,
            # from the first 500 on (and the health poll says so too).
            wait_for(lambda: settled(served))
            processors.configure("default", failure=True)
    wait_for(lambda: settled(served))
    found = assert_once_each(processors, cids)
    assert found["fallback"], "the fallback was never used"
    agree(served, processors)
    # Bounds are inclusive, to the millisecond the processors recorded.
    times = sorted({at for got in found.values() for at in got.values()})
    first, middle, last = times[0], times[len(times) // 2], times[-1]

    def iso(us: int) -> str:
        seconds, rest = divmod(us, 1_000_000)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
        return f"{stamp}.{rest // 1000:03d}Z"

    for low, high in ((first, last), (middle, last), (first, middle), (middle, middle)):
        query = f"?from={iso(low)}&to={iso(high)}"
        ours = agree(served, processors, query)
        expected = sum(1 for got in found.values() for at in got.values() if low <= at <= high)
        assert ours["default"]["totalRequests"] + ours["fallback"]["totalRequests"] == expected
    assert agree(served, processors, f"?from={iso(last + 1000)}")["default"]["totalRequests"] == 0
    agree(served, processors, f"?to={iso(middle)}")


def test_purge_forgets_everything(daemon: DaemonFactory, processors: Processors) -> None:
    served = start(daemon, processors)
    cid = new_id()
    assert post(served, {"correlationId": cid, "amount": 3})[0] == 202
    wait_for(lambda: settled(served))
    result = served.request("POST", "/purge-payments")
    assert result.status == 200
    assert summary(served)["default"] == {"totalRequests": 0, "totalAmount": 0}
    # Accepted again as new (and the processor, which was not purged, says 422).
    assert post(served, {"correlationId": cid, "amount": 3})[0] == 202
    wait_for(lambda: settled(served))
    assert summary(served)["default"]["totalRequests"] == 1
    assert processors.stats("default")["duplicates"] == 1


# --- routing, retries, failover ------------------------------------------------------------


def lateness(processors: Processors, name: str) -> dict[str, int]:
    found: dict[str, int] = processors.admin(name, "GET", "/admin/lateness")
    return found


def test_a_failing_default_is_waited_for_not_paid_around(
    daemon: DaemonFactory, processors: Processors
) -> None:
    for proc in (processors.default, processors.fallback):
        proc.proc.health_interval = 0.5
    processors.configure("default", failure=True)
    served = start(daemon, processors, health_interval="0.5")
    wait_for(lambda: state(served)["processors"]["default"]["failing"], timeout=5)
    cids = {new_id() for _ in range(20)}
    for cid in cids:
        assert post(served, {"correlationId": cid, "amount": "3.10"})[0] == 202
    # Waiting: the default is probed (each probe a 500 it counts), nobody
    # records anything, and the summary says so.
    wait_for(lambda: processors.stats("default")["failed"] >= 3)
    assert agree(served, processors)["fallback"]["totalRequests"] == 0
    assert not recorded(processors)["default"]
    processors.configure("default", failure=False)
    wait_for(lambda: settled(served), timeout=10)
    found = assert_once_each(processors, cids)
    assert set(found["default"]) == cids
    assert processors.stats("fallback")["received"] == 0
    agree(served, processors)
    assert processors.stats("default")["health_limited"] == 0


def test_the_fallback_pays_once_the_default_was_down_fallback_after_s(
    daemon: DaemonFactory, processors: Processors
) -> None:
    processors.configure("default", failure=True)
    served = start(daemon, processors, fallback_after_s="0.3")
    cids = {new_id() for _ in range(20)}
    for cid in cids:
        assert post(served, {"correlationId": cid, "amount": 1})[0] == 202
    wait_for(lambda: settled(served), timeout=10)
    found = assert_once_each(processors, cids)
    assert set(found["fallback"]) == cids
    agree(served, processors)


@pytest.mark.parametrize("limit", ["concurrency", "inflight"])
def test_requested_at_is_the_send_not_the_accept(
    daemon: DaemonFactory, processors: Processors, limit: str
) -> None:
    # One payment at a time, 50 ms each: the last of 50 waits ~2.5 s (in the
    # queue for a task, or in a task for a send slot). Sent with the instant
    # of its accept or of its wait's start, it would be recorded that late
    # after its requestedAt, inside the contest's check window (which ends
    # 1.5 s back) while the daemon's answer was still on its way.
    processors.configure("default", delay=50)
    served = start(daemon, processors, **{limit: "1"})
    cids = [new_id() for _ in range(50)]
    for cid in cids:
        assert post(served, {"correlationId": cid, "amount": 1})[0] == 202
    wait_for(lambda: settled(served), timeout=30)
    assert_once_each(processors, set(cids))
    late = lateness(processors, "default")
    assert max(late.values()) < 1500, sorted(late.values())[-5:]
    agree(served, processors)


def test_sends_in_flight_are_capped_per_100_ms_of_delay(
    daemon: DaemonFactory, processors: Processors
) -> None:
    # A flooded processor records payments late after their requestedAt (its
    # own queue): the daemon keeps `inflight` per 100 ms of its delay there.
    processors.configure("default", delay=50)
    served = start(daemon, processors, inflight="4")
    cids = {new_id() for _ in range(40)}
    for cid in cids:
        assert post(served, {"correlationId": cid, "amount": 1})[0] == 202
    wait_for(lambda: settled(served), timeout=20)
    assert_once_each(processors, cids)
    assert 1 < processors.stats("default")["peak_inflight"] <= 4
    agree(served, processors)


def test_retries_after_500_and_429_reach_each_processor_once(
    daemon: DaemonFactory, processors: Processors
) -> None:
    served = start(daemon, processors, fallback_after_s="0")
    # The health poll said healthy; from now on the default fails (a 500
    # makes the dispatcher avoid it for suspect_s), and the fallback takes
    # one payment at a time, answering 429 to the rest.
    wait_for(lambda: state(served)["processors"]["default"]["checked_ms"] > 0)
    processors.configure("default", failure=True)
    processors.fallback.proc.max_inflight = 1
    processors.configure("fallback", delay=20)
    cids = {new_id() for _ in range(30)}
    for cid in cids:
        assert post(served, {"correlationId": cid, "amount": "2.50"})[0] == 202
    wait_for(lambda: settled(served), timeout=20)
    found = assert_once_each(processors, cids)
    assert processors.stats("default")["failed"] > 0
    assert processors.stats("fallback")["overloaded"] > 0
    assert len(found["fallback"]) + len(found["default"]) == 30
    agree(served, processors)


def test_a_timeout_keeps_the_payment_with_that_processor(
    daemon: DaemonFactory, processors: Processors
) -> None:
    for proc in (processors.default, processors.fallback):
        proc.proc.health_interval = 1.0
    served = start(
        daemon, processors, request_timeout="0.2", retry_cap="0.3", health_interval="1.0"
    )
    wait_for(lambda: state(served)["processors"]["default"]["checked_ms"] > 0)
    # Slower than the timeout, until the next health result says so (the
    # timeout then grows by the minResponseTime it reports).
    processors.configure("default", delay=700)
    cid = new_id()
    assert post(served, {"correlationId": cid, "amount": 8})[0] == 202
    wait_for(lambda: settled(served), timeout=10)
    found = assert_once_each(processors, {cid})
    # Never moved to the fallback, though the default timed out: it might
    # have (and did) record the first try; a later one got 422.
    assert cid in found["default"]
    assert processors.stats("default")["duplicates"] >= 1
    assert processors.stats("fallback")["received"] == 0
    agree(served, processors)


# --- kill -9 ------------------------------------------------------------------------------


def test_acknowledged_payments_survive_kill_9_and_reach_one_processor_once(
    daemon: DaemonFactory, processors: Processors, tmp_path: Path
) -> None:
    data_dir = tmp_path / "payments-data"
    env = {**processors.env(), "SPRINTD_PAYMENTS__CONCURRENCY": "8"}
    # Slow processors keep payments queued and in flight when the kill comes.
    processors.configure("default", delay=30)
    first = daemon(env=env, data_dir=data_dir)
    cids = [new_id() for _ in range(400)]
    acked = stream_then_kill(first, cids, "1.10", 250)
    before = recorded(processors)
    assert len(before["default"]) + len(before["fallback"]) < len(acked), "nothing was left"

    second = daemon(env=env, data_dir=data_dir)
    wait_for(lambda: settled(second), timeout=20)
    found = assert_once_each(processors, acked)
    # Nothing was received twice: the processors saw no duplicate that a
    # second, uncommitted send would cause (a pinned resend may get 422).
    sent = set(found["default"]) | set(found["fallback"])
    assert sent <= set(cids)
    agree(second, processors)
    assert summary(second)["default"]["totalRequests"] + summary(second)["fallback"][
        "totalRequests"
    ] == len(sent)


# --- no processors configured ---------------------------------------------------------------


def _outgoing(sid: int) -> list[str]:
    """The TCP connections (IPv4 and IPv6, any state but LISTEN) that the
    processes of session ``sid`` (a daemon and its forked workers) opened to
    somewhere else: local port not one they listen on. From /proc."""
    inodes = set()
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The session is the 6th field of stat, after the ")" that ends the name.
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[3]) != sid:
                continue
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    rows = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                rows.append(fields)
    listening = {row[1].rsplit(":", 1)[1] for row in rows if row[3] == "0A"}
    return [row[2] for row in rows if row[3] != "0A" and row[1].rsplit(":", 1)[1] not in listening]


def test_without_processor_urls_it_answers_not_configured_and_calls_nobody(
    daemon: DaemonFactory,
) -> None:
    served = daemon(env={"SPRINTD_PAYMENTS__ENABLED": "true"})
    status, body = post(served, {"correlationId": new_id(), "amount": 1})
    assert status == 503 and body["error"]["code"] == "not_configured", body
    for method, path in (("GET", "/payments-summary"), ("POST", "/purge-payments")):
        result = served.request(method, path)
        assert result.status == 503, (path, result.body)
        assert result.json()["error"]["code"] == "not_configured"
    assert state(served)["configured"] is False
    # A configured plugin polls each processor's health at once: a second is
    # four of its polling passes. Not one connection leaves the daemon, to
    # the old default ports or anywhere (a connect under way shows too).
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert _outgoing(served.pid) == [], "the daemon opened a connection"
        time.sleep(0.005)
