"""The payments plugin's pieces in process: the wire format, routing, the memory store."""

from __future__ import annotations

import json
import socket
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from sprintd.http import HTTPError, Request
from sprintd.journal import Journal
from sprintd.plugins.payments.contract import (
    amount_text,
    bound_ms,
    iso_ms,
    parse_bound,
    parse_payment,
    summary_body,
)
from sprintd.plugins.payments.dispatcher import Pacer, choose
from sprintd.plugins.payments.processors import Processor
from sprintd.plugins.payments.store import Accepted, MemoryStore, _Done

CID = "4a7901b8-7d26-4d9d-aa19-4dc1c7cf60b3"


def _decoded(body: bytes, content_type: bytes = b"application/json") -> Any:
    """A body as the daemon decodes it (cysimdjson, or msgpack)."""
    return Request(b"POST", b"/payments", b"", [(b"content-type", content_type)], body).data()


def _error(data: Any) -> str:
    with pytest.raises(HTTPError) as caught:
        parse_payment(data)
    assert caught.value.status == 400
    return caught.value.code


def test_a_payment_is_read_exactly() -> None:
    assert parse_payment(_decoded(b'{"correlationId":"%s","amount":19.90}' % CID.encode())) == (
        CID,
        Decimal("19.9"),
    )
    assert parse_payment({"correlationId": CID.upper(), "amount": "0.01"}) == (
        CID,
        Decimal("0.01"),
    )
    assert parse_payment({"correlationId": CID, "amount": 7})[1] == Decimal(7)
    packed = msgpack.packb({"correlationId": CID, "amount": "12.5"})
    assert parse_payment(_decoded(packed, b"application/msgpack"))[1] == Decimal("12.5")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ([], "invalid_body"),
        ({"amount": 1}, "invalid_correlation_id"),
        ({"correlationId": "not-a-uuid", "amount": 1}, "invalid_correlation_id"),
        ({"correlationId": 42, "amount": 1}, "invalid_correlation_id"),
        ({"correlationId": CID + "0", "amount": 1}, "invalid_correlation_id"),
        ({"correlationId": CID}, "invalid_amount"),
        ({"correlationId": CID, "amount": 0}, "invalid_amount"),
        ({"correlationId": CID, "amount": -1.5}, "invalid_amount"),
        ({"correlationId": CID, "amount": "abc"}, "invalid_amount"),
        ({"correlationId": CID, "amount": "NaN"}, "invalid_amount"),
        ({"correlationId": CID, "amount": "Infinity"}, "invalid_amount"),
        ({"correlationId": CID, "amount": True}, "invalid_amount"),
        ({"correlationId": CID, "amount": [1]}, "invalid_amount"),
        ({"correlationId": CID, "amount": "1" * 21}, "invalid_amount"),
    ],
)
def test_bad_payments_name_the_field(data: Any, code: str) -> None:
    assert _error(data) == code


@given(
    st.decimals(
        min_value=Decimal("0.01"), max_value=Decimal("99999999.99"), places=2, allow_nan=False
    )
)
def test_any_cents_amount_sent_as_a_json_number_is_read_as_written(amount: Decimal) -> None:
    body = f'{{"correlationId":"{CID}","amount":{amount_text(amount)}}}'
    assert parse_payment(_decoded(body.encode()))[1] == amount


def test_bounds_and_instants() -> None:
    assert parse_bound(None, "from") is None
    assert parse_bound("", "to") is None
    assert parse_bound("1970-01-01T00:00:01.5Z", "from") == 1_500_000
    assert parse_bound("1970-01-01T00:00:01.000001", "from") == 1_000_001
    assert parse_bound("1970-01-01T01:00:00+01:00", "to") == 0
    for bad in ("yesterday", "2025-13-01T00:00:00Z", "2025-07-10 25:00"):
        with pytest.raises(HTTPError) as caught:
            parse_bound(bad, "from")
        assert (caught.value.status, caught.value.code) == (400, "invalid_from")
    assert iso_ms(1_752_000_000_123) == "2025-07-08T18:40:00.123Z"
    assert parse_bound(iso_ms(1_752_000_000_123), "to") == 1_752_000_000_123_000


def test_the_summary_body_has_the_challenges_fields_and_exact_numbers() -> None:
    body = summary_body(
        {"default": (3, Decimal("0.30")), "fallback": (0, Decimal(0))},
    )
    assert json.loads(body, parse_float=Decimal) == {
        "default": {"totalRequests": 3, "totalAmount": Decimal("0.30")},
        "fallback": {"totalRequests": 0, "totalAmount": 0},
    }
    assert amount_text(Decimal("1E+2")) == "100"


def _proc(
    name: str,
    failing: bool = False,
    min_ms: int = 0,
    suspect: float = 0.0,
    ok_since_check: bool = False,
) -> Processor:
    proc = Processor(name, "http://127.0.0.1:1", connect_timeout=1)
    proc.health.failing, proc.health.min_response_ms = failing, min_ms
    proc.health.suspect_until = suspect
    proc.health.checked_ms = 1000
    proc.health.ok_ms = 2000 if ok_since_check else 0
    return proc


@pytest.mark.parametrize(
    ("default", "fallback", "waited", "backlog", "chosen"),
    [
        ({}, {}, 0, 0, "default"),
        # Latency reaches no client: a slow default is still the cheaper one.
        ({"min_ms": 1000}, {}, 0, 0, "default"),
        ({"min_ms": 1000}, {"failing": True}, 0, 0, "default"),
        # Down: waited for, up to fallback_after_s (30 here) ...
        ({"failing": True}, {}, 0, 0, None),
        ({"suspect": 10.0}, {}, 29.9, 0, None),  # a 500 or a timeout seen here
        # ... then the fallback pays, if it can take it.
        ({"failing": True}, {}, 30, 0, "fallback"),
        ({"failing": True}, {"failing": True}, 60, 0, None),
        ({"suspect": 10.0}, {"suspect": 10.0}, 60, 0, None),
        # A payment went through since the health result said failing.
        ({"failing": True, "ok_since_check": True}, {}, 30, 0, "default"),
        ({}, {"suspect": 10.0}, 0, 0, "default"),
        # More queued than the default gets through in fallback_after_s.
        ({"min_ms": 100}, {}, 0, 31, "fallback"),
        ({"min_ms": 100}, {"min_ms": 200}, 0, 31, "default"),  # not faster there
        ({"min_ms": 100}, {"failing": True}, 0, 31, "default"),
    ],
)
def test_routing(
    default: dict[str, Any], fallback: dict[str, Any], waited: float, backlog: float, chosen: str
) -> None:
    picked = choose(
        _proc("default", **default),
        _proc("fallback", **fallback),
        now=5.0,
        waited_s=waited,
        backlog_s=backlog,
        fallback_after_s=30,
    )
    assert (picked.name if picked else None) == chosen


def test_a_processors_delay_is_the_smaller_of_reported_and_measured() -> None:
    health = _proc("default", min_ms=2000).health
    assert health.delay_s() == 2.0  # nothing measured yet
    health.latency_s = 0.02  # back to 20 ms before the next health result
    assert health.delay_s() == 0.02
    health.min_response_ms, health.latency_s = 20, 1.5  # queued, not slow
    assert health.delay_s() == 0.02


async def test_the_memory_store_replays_to_the_same_state(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal", fsync="os")
    journal.open()
    store = MemoryStore(journal)
    assert store.load() == (0, 0)  # and registered: the journal checkpoints it
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        made = []
        for i in range(6):
            outcome, payment = await store.accept(
                f"{i:08d}-0000-0000-0000-000000000000", Decimal(i + 1), "default", 1000
            )
            assert outcome is Accepted.NEW and payment is not None
            made.append(payment)
        assert (await store.accept(made[0].cid, Decimal(1), "default", 1))[0] is Accepted.SAME
        assert (await store.accept(made[0].cid, Decimal(2), "default", 1))[0] is Accepted.CONFLICT
        for payment in made[:3]:  # sent where accept committed them
            await store.done(payment, "default", 1000)
        # Refused by the default, then in flight to the fallback at the "crash".
        await store.release(made[3])
        assert made[3].committed is None
        assert await store.commit(made[3], "fallback", 2000)
        await store.release(made[4])  # refused: free to go anywhere
        # made[5] is still committed where accept put it.
        before = await store.summary(None, None)
        nursery.cancel_scope.cancel()
    journal.close()

    again = Journal(tmp_path / "journal", fsync="os")
    again.open()
    try:
        reloaded = MemoryStore(again)
        after, _ = reloaded.load()
        assert after > 0  # the journal's checkpoint at close
        assert (
            await reloaded.summary(None, None)
            == before
            == {
                "default": (3, Decimal(6)),
                "fallback": (0, Decimal(0)),
            }
        )
        pins = {p.cid[:8]: (p.committed, p.pinned) for p in reloaded.recovered()}
        assert pins == {
            "00000003": (("fallback", 2000), True),
            "00000004": (None, False),
            "00000005": (("default", 1000), True),
        }
        assert await reloaded.summary(1_000_000, 1_000_000) == before
        assert (await reloaded.summary(1_000_001, None))["default"] == (0, Decimal(0))
    finally:
        again.close()


@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.decimals(Decimal("0.01"), Decimal(100), places=2)),
        max_size=40,
    ),
    st.one_of(st.none(), st.integers(-1000, 51_000)),
    st.one_of(st.none(), st.integers(-1000, 51_000)),
)
def test_done_payments_are_summed_by_inclusive_bounds_in_any_order(
    done: list[tuple[int, Decimal]], low_us: int | None, high_us: int | None
) -> None:
    kept = _Done()
    for at, amount in done:
        kept.add(at, amount)
    low_ms = bound_ms(low_us, low=True)
    high_ms = bound_ms(high_us, low=False)
    inside = [
        amount
        for at, amount in done
        if (low_us is None or at * 1000 >= low_us) and (high_us is None or at * 1000 <= high_us)
    ]
    assert kept.between(low_ms, high_ms) == (len(inside), sum(inside, Decimal(0)))


async def test_the_pacer_lets_a_waiting_connection_in_between_slices() -> None:
    """Background tasks that each do a step longer than a slice let a socket
    that became readable be served after a step or two, not after every task's."""
    pacer = Pacer()
    steps = 0
    served_after: list[int] = []
    ours, theirs = socket.socketpair()
    reader = trio.socket.from_stdlib_socket(ours)

    async def backlog() -> None:
        nonlocal steps
        while True:
            await pacer.turn()
            time.sleep(pacer.slice_s * 2)  # CPU work (the loop is blocked)
            steps += 1
            await trio.lowlevel.checkpoint()  # as a send or a store call would

    async def connection() -> None:
        await reader.recv(1)
        served_after.append(steps - sent_at)

    async with trio.open_nursery() as nursery:
        for _ in range(50):
            nursery.start_soon(backlog)
        nursery.start_soon(connection)
        await trio.sleep(0.05)
        sent_at = steps
        theirs.send(b"x")
        while not served_after:
            await trio.sleep(0)
        nursery.cancel_scope.cancel()
    reader.close()
    theirs.close()
    assert served_after[0] <= 3, f"{served_after[0]} backlog steps ran first"
