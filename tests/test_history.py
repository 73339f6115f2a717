"""The history plugin on real daemons and a real PostgreSQL (``servers.PostgresServer``).

Each failure the projector must survive is provoked for real: sprintd killed
with SIGKILL while orders flow, PostgreSQL stopped and started again while
orders flow, the journal checkpointing (and so compacting) while PostgreSQL
is away. Each test then compares what PostgreSQL holds with what the daemon
acknowledged and what its journal holds: every seq once, none missing.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import psycopg
import pytest
import trio

from sprintd import Journal
from sprintd.plugins.history import schema
from sprintd.plugins.history.config import HistorySection
from sprintd.plugins.history.decoders import Decoder, OrdersDecoder, new_rows
from sprintd.plugins.history.projector import Projector
from sprintd.plugins.orders.client import EntryClient, EntryError
from sprintd.plugins.orders.commands import NEW, Parser
from sprintd.plugins.orders.config import OrdersSection
from sprintd.plugins.orders.plugin import _PriceTime
from sprintd.plugins.orders.service import OrderService, batch_records

from .daemons import Daemon, DaemonFactory, run_cli, wait_for
from .servers import PostgresServer

pytestmark = pytest.mark.slow

ENTRY = re.compile(r"serving orders-entry on (\S+):(\d+)")
# Small batches and frequent state commits, so that a kill lands between and
# inside them, and a restart replays from a committed state.
FAST = {
    "SPRINTD_HISTORY__BATCH_RECORDS": "50",
    "SPRINTD_HISTORY__STATE_RECORDS": "120",
    "SPRINTD_HISTORY__POLL_INTERVAL_MS": "5",
    "SPRINTD_HISTORY__RETRY_INTERVAL": "0.1",
}
# Long enough for a loaded two-core machine to catch up a few thousand records.
CATCH_UP_S = 60.0


def _env(url: str, **extra: str) -> dict[str, str]:
    return {"SPRINTD_HISTORY__POSTGRES_URL": url, **FAST, **extra}


def _check(served: Daemon, name: str) -> dict[str, Any]:
    found: dict[str, Any] = served.health()["checks"][name][0]
    return found


def _caught_up(served: Daemon) -> bool:
    history = _check(served, "history")
    return bool(history["connected"] and history["lag_records"] == 0)


def _query(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql).fetchall()


class Flow:
    """Orders entered on the binary port from a thread, crossing so that they
    trade: the ids acknowledged, until ``stop`` or the daemon goes away."""

    def __init__(self, served: Daemon, frame: int = 10) -> None:
        found = ENTRY.search(served.stderr())
        assert found is not None, served.stderr()
        self.client = EntryClient(found.group(1), int(found.group(2)))
        self.frame = frame
        self.acknowledged: list[int] = []
        self.broken: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        try:
            while not self._stop.is_set():
                commands = []
                for _ in range(self.frame):
                    side = "buy" if n % 2 == 0 else "sell"
                    body = {"symbol": "BTC-USD", "side": side, "price": "100.00", "qty": "0.1"}
                    commands.append(["new", body])
                    n += 1
                for reply in self.client.request(commands):
                    assert reply[0] == "ok", reply
                    self.acknowledged.append(reply[1]["order_id"])
        except (EntryError, OSError) as exc:
            self.broken = str(exc)

    def wait_for(self, count: int) -> None:
        wait_for(lambda: len(self.acknowledged) >= count or self.broken, timeout=CATCH_UP_S)
        assert self.broken is None, self.broken

    def stop(self) -> list[int]:
        self._stop.set()
        self._thread.join(30)
        self.client.close()
        return list(self.acknowledged)


@contextmanager
def flowing(served: Daemon) -> Iterator[Flow]:
    flow = Flow(served)
    try:
        yield flow
    finally:
        flow.stop()


def _assert_exactly_once(url: str, served: Daemon, acknowledged: list[int]) -> None:
    """Every orders record once: seqs 1..last with no gap (a frame's orders
    share its batch record's), orders numbered without a gap or a repeat,
    every acknowledged one among them, trades likewise."""
    last = _check(served, "journal")["last_seq"]
    seqs = [seq for (seq,) in _query(url, "SELECT DISTINCT seq FROM orders ORDER BY seq")]
    assert seqs == list(range(1, last + 1))
    ids = [order_id for (order_id,) in _query(url, "SELECT order_id FROM orders ORDER BY 1")]
    assert ids == list(range(1, len(ids) + 1))
    assert set(acknowledged) <= set(ids)
    trades = [t for (t,) in _query(url, "SELECT trade_id FROM trades ORDER BY trade_id")]
    assert trades == list(range(1, len(trades) + 1))
    # Buys and sells alternate at one price: each sell fills the buy before it.
    assert len(trades) == len(ids) // 2
    assert _query(url, "SELECT seq FROM history_progress") == [(last,)]


# --- the schema ---------------------------------------------------------------------


def test_schema_is_created_once_and_again_changes_nothing(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert schema.create(conn) == (0, 0, None)
        conn.execute("UPDATE history_progress SET seq = 7, state_seq = 5, state = 'x'")
        assert schema.create(conn) == (7, 5, b"x")
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchall()
        assert {t for (t,) in tables} == {"history_schema", "history_progress", *schema.COLUMNS}
        for table, columns in schema.COLUMNS.items():
            found = conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                " ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            assert tuple(c for (c,) in found) == columns
        assert conn.execute("SELECT version FROM history_schema").fetchall() == [
            (schema.SCHEMA_VERSION,)
        ]
        conn.execute(
            "INSERT INTO history_schema (version) VALUES (%s)", (schema.SCHEMA_VERSION + 1,)
        )
        with pytest.raises(schema.SchemaError, match="this sprintd writes"):
            schema.create(conn)


def test_schema_made_by_two_projectors_at_once(postgres_url: str) -> None:
    errors: list[BaseException] = []

    def make() -> None:
        try:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                schema.create(conn)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _query(postgres_url, "SELECT seq, state_seq FROM history_progress") == [(0, 0)]


# --- the projector in process -------------------------------------------------------


class CancellingJournal(Journal):
    """A journal whose ``read_after`` cancels ``scope`` on its ``at``-th call: a
    projector cancelled between the reads of one batch (PostgreSQL failing
    while the next batch is read), made to happen every time."""

    scope: trio.CancelScope | None = None
    at = 0

    async def read_after(self, *args: Any, **kwargs: Any) -> Any:
        self.at -= 1
        if self.at == 0 and self.scope is not None:
            self.scope.cancel()
        return await super().read_after(*args, **kwargs)


def test_a_batch_record_decodes_to_its_commands_rows() -> None:
    # The order port journals a read's commands as one batch record: the
    # rows are the commands' own, at the record's seq, and its events are
    # numbered on through the record, so (seq, n) names one event each.
    kinds = {"price_time": _PriceTime(done_capacity=1000, reserve=0)}
    live = OrderService(OrdersSection(), kinds)
    parse = Parser(live.specs)
    payloads = []
    for side, price in (("buy", "100.00"), ("buy", "99.00"), ("sell", "100.00")):
        body = {"symbol": "BTC-USD", "side": side, "price": price, "qty": "0.1"}
        payloads.append(live.submit(parse.new(body))[0])
    payloads.append(live.cancel(2)[0])
    body = {"symbol": "BTC-USD", "side": "sell", "price": "1.00", "qty": "0.1", "tif": "IOC"}
    payloads.append(live.submit(parse.new(body))[0])
    single, batched = new_rows(), new_rows()
    # The same seq for each command's record, to compare the rows whole.
    decoder = OrdersDecoder(OrderService(OrdersSection(), kinds))
    for payload in payloads:
        decoder.apply(7, payload, single)
    [record] = batch_records(payloads)
    OrdersDecoder(OrderService(OrdersSection(), kinds)).apply(7, record, batched)
    assert batched["orders"] == single["orders"] and len(single["orders"]) == 4
    assert batched["trades"] == single["trades"] and len(single["trades"]) == 1
    events = batched["order_events"]
    assert [e[2:] for e in events] == [e[2:] for e in single["order_events"]]
    assert [e[4] for e in events] == ["cancelled", "expired"]  # the cancel, the IOC's rest
    keys = [e[:2] for e in events]
    assert len(set(keys)) == len(keys) == 2


async def test_a_batch_cancelled_between_its_reads_is_read_again_whole(tmp_path: Path) -> None:
    journal = CancellingJournal(tmp_path / "j", fsync="os", segment_bytes=4096)
    journal.open()
    kinds = {"price_time": _PriceTime(done_capacity=1000, reserve=0)}

    def decoders() -> list[Decoder]:
        return [OrdersDecoder(OrderService(OrdersSection(), kinds))]

    section = HistorySection(postgres_url="postgresql://u@127.0.0.1:1/db", batch_records=200)
    projector = Projector(journal, section, decoders)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(journal.run)
        for i in range(300):
            command = [NEW, i + 1, "BTC-USD", i % 2, 0, 10_000, 10, 0, False, "", 0, None, i]
            await journal.append("orders", msgpack.packb(command))
        assert len(journal.segments()) > 3  # a batch takes several reads
        await projector._resume(0, 0, None)
        with trio.CancelScope() as scope:
            journal.scope, journal.at = scope, 2
            await projector._next_batch()
        assert scope.cancelled_caught
        journal.scope = None
        batches = [await projector._next_batch(), await projector._next_batch()]
        nursery.cancel_scope.cancel()
    journal.close()
    seqs = [row[1] for batch in batches if batch is not None for row in batch.rows["orders"]]
    assert seqs == list(range(1, 301))


# --- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "mysql://user@127.0.0.1:5432/db",
        "postgresql://user@127.0.0.1:notaport/db",
        "postgresql://user@127.0.0.1:5432",
        "postgresql:///db",
    ],
)
def test_a_bad_postgres_url_stops_start_up_with_one_line(url: str, tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path),
        env={"SPRINTD_HISTORY__POSTGRES_URL": url},
    )
    assert result.returncode == 2, result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    assert "history.postgres_url" in result.stderr_lines[0]


def test_history_is_off_by_default(daemon: DaemonFactory) -> None:
    served = daemon()
    assert "history" not in served.health()["checks"]


# --- projection ---------------------------------------------------------------------


def test_orders_trades_and_cancels_are_projected(daemon: DaemonFactory, postgres_url: str) -> None:
    served = daemon(env=_env(postgres_url))
    found = ENTRY.search(served.stderr())
    assert found is not None
    with EntryClient(found.group(1), int(found.group(2))) as client:
        replies = client.request(
            [
                ["new", {"symbol": "BTC-USD", "side": "sell", "price": "101.50", "qty": "0.3",
                         "client_order_id": "s1", "account": "alice"}],
                ["new", {"symbol": "BTC-USD", "side": "buy", "price": "102.00", "qty": "0.1",
                         "account": "bob"}],
                ["new", {"symbol": "ETH-USD", "side": "buy", "price": "10.00", "qty": "1",
                         "tif": "IOC"}],
                ["new", {"symbol": "BTC-USD", "side": "buy", "price": "1.005", "qty": "1"}],
            ]
        )  # fmt: skip
        maker = replies[0][1]["order_id"]
        client.request([["cancel", maker]])
    wait_for(lambda: _caught_up(served), timeout=CATCH_UP_S)
    orders = _query(
        postgres_url,
        "SELECT side, price::text, qty::text, account, client_order_id, accepted, tif"
        " FROM orders ORDER BY order_id",
    )
    assert orders == [
        ("sell", "101.50", "0.3000", "alice", "s1", True, "GTC"),
        ("buy", "102.00", "0.1000", "bob", None, True, "GTC"),
        ("buy", "10.00", "1.000", "", None, True, "IOC"),
    ]
    # The off-grid price was refused before the journal: no row.
    trades = _query(
        postgres_url,
        "SELECT symbol, price::text, qty::text, taker_side, maker_order_id FROM trades",
    )
    assert trades == [("BTC-USD", "101.50", "0.1000", "buy", maker)]
    events = _query(
        postgres_url, "SELECT order_id, kind, qty::text, reason FROM order_events ORDER BY seq, n"
    )
    assert events == [
        (maker + 2, "expired", "1.000", "ioc"),
        (maker, "cancelled", "0.2000", "user"),
    ]


def test_payments_are_projected(daemon: DaemonFactory, postgres_url: str, processors: Any) -> None:
    served = daemon(env={**_env(postgres_url), **processors.env()})
    for i in range(5):
        body = b'{"correlationId": "%d0000000-0000-4000-8000-000000000000", "amount": 19.9}' % i
        result = served.request("POST", "/payments", body, {"Content-Type": "application/json"})
        assert result.status < 300, result.body
    wait_for(lambda: len(processors.payments("default")) == 5, timeout=CATCH_UP_S)
    wait_for(lambda: _caught_up(served), timeout=CATCH_UP_S)
    payments = _query(postgres_url, "SELECT amount::text, processor FROM payments")
    assert sorted(payments) == [("19.9", "default")] * 5
    done = _query(
        postgres_url,
        "SELECT p.correlation_id, e.requested_at_ms FROM payments p"
        " JOIN payment_events e ON e.correlation_id = p.correlation_id AND e.kind = 'done'",
    )
    recorded = processors.payments("default")
    assert {cid: at // 1000 for cid, at in recorded.items()} == dict(done)


# --- failures -----------------------------------------------------------------------


def test_kill_9_of_sprintd_mid_stream_leaves_no_gap_and_no_duplicate(
    daemon: DaemonFactory, postgres_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = daemon(data_dir=data_dir, env=_env(postgres_url))
    with flowing(first) as flow:
        flow.wait_for(600)
        wait_for(lambda: _check(first, "history")["state_seq"] > 0, timeout=CATCH_UP_S)
        first.process.send_signal(signal.SIGKILL)
        first.process.wait()
    acknowledged = flow.acknowledged
    second = daemon(data_dir=data_dir, env=_env(postgres_url))
    with flowing(second) as flow:
        flow.wait_for(300)
    acknowledged += flow.acknowledged
    wait_for(lambda: _caught_up(second), timeout=CATCH_UP_S)
    _assert_exactly_once(postgres_url, second, acknowledged)


def test_postgres_restarted_while_orders_flow_catches_up(
    daemon: DaemonFactory, own_postgres: PostgresServer
) -> None:
    url = own_postgres.url
    served = daemon(env=_env(url))
    with flowing(served) as flow:
        # Immediate (crash recovery at the next start), then fast shutdowns:
        # each lands somewhere else in the projector's read, decode and write.
        for stop in (signal.SIGQUIT, signal.SIGINT, signal.SIGQUIT):
            flow.wait_for(len(flow.acknowledged) + 200)
            done = _check(served, "history")["committed_seq"]
            wait_for(lambda d=done: _check(served, "history")["committed_seq"] > d, CATCH_UP_S)
            own_postgres.stop(stop)
            wait_for(lambda: not _check(served, "history")["connected"], timeout=CATCH_UP_S)
            # The order path does not wait on PostgreSQL: orders go on being acknowledged.
            flow.wait_for(len(flow.acknowledged) + 300)
            history = _check(served, "history")
            assert history["lag_records"] > 0
            assert history["status"] == "warn"
            own_postgres.start()
            wait_for(lambda: _check(served, "history")["connected"], timeout=CATCH_UP_S)
    wait_for(lambda: _caught_up(served), timeout=CATCH_UP_S)
    _assert_exactly_once(url, served, flow.acknowledged)
    assert _check(served, "history")["lag_seconds"] == 0


def test_compaction_keeps_what_postgres_has_not_committed(
    daemon: DaemonFactory, own_postgres: PostgresServer
) -> None:
    """PostgreSQL away while the journal checkpoints: the hold keeps every record
    (without it the early segments go and history skips them)."""
    url = own_postgres.url
    own_postgres.stop()
    env = _env(
        url,
        SPRINTD_JOURNAL__SEGMENT_BYTES=str(1024 * 1024),
        SPRINTD_JOURNAL__CHECKPOINT_RECORDS="10",
    )
    served = daemon(env=env)
    found = ENTRY.search(served.stderr())
    assert found is not None
    # Long client ids and accounts: a 1 MB segment fills in a few thousand orders.
    pad = "x" * 54
    with EntryClient(found.group(1), int(found.group(2))) as client:
        frames = [
            [
                ["new", {"symbol": "BTC-USD", "side": "buy", "price": "1.00", "qty": "0.1",
                         "account": pad, "client_order_id": f"{pad}{i:04d}-{j}"}]
                for j in range(50)
            ]
            for i in range(200)
        ]  # fmt: skip
        # One frame at a time: each is one batch record, seqs 1 to 200.
        for frame in frames:
            replies = client.request(frame)
            assert all(reply[0] == "ok" for reply in replies), replies[:2]
    journal = wait_for(
        lambda: (j := _check(served, "journal"))["last_checkpoint_seq"] >= 190 and j,
        timeout=CATCH_UP_S,
    )
    assert journal["segments"] >= 2
    own_postgres.start()
    wait_for(lambda: _caught_up(served), timeout=CATCH_UP_S)
    history = _check(served, "history")
    assert "skipped" not in history
    assert _query(url, "SELECT count(*), min(seq), max(seq) FROM orders") == [(10_000, 1, 200)]
