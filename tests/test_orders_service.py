"""The order service in process: client order ids, per account, for as long
as their order is live and for the retention once it is done, whatever the
count of other orders; and replay (or a snapshot) reaching the same ids."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sprintd import Journal
from sprintd.plugins.orders.commands import InvalidOrder, Parser
from sprintd.plugins.orders.config import OrdersSection
from sprintd.plugins.orders.events import SIDE_NAMES, STP_NAMES, TIF_NAMES, TYPE_NAMES
from sprintd.plugins.orders.plugin import _PriceTime
from sprintd.plugins.orders.service import (
    _BATCH_BYTES,
    OrderService,
    Outcome,
    batch_records,
    record_commands,
)

DAY_S = 86_400.0


class Clock:
    """A settable clock for the service (seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _service(clock: Clock, **settings: Any) -> OrderService:
    section = OrdersSection(**settings)
    kind = _PriceTime(section.done_capacity, reserve=0)
    return OrderService(section, {"price_time": kind}, clock=clock)


class Recorder:
    """Submits orders to a service and keeps what it would journal."""

    def __init__(self, service: OrderService) -> None:
        self.service = service
        self.journal: list[bytes] = []

    def new(self, price: str, qty: str = "0.01", **extra: Any) -> Outcome:
        body = {"symbol": "BTC-USD", "side": "buy", "price": price, "qty": qty, **extra}
        payload, outcome = self.service.submit(Parser(self.service.specs).new(body))
        if payload is not None:
            self.journal.append(payload)
        return outcome

    def cancel(self, order_id: int) -> None:
        payload, _ = self.service.cancel(order_id)
        self.journal.append(payload)


def _replayed(clock: Clock, journal: list[bytes], **settings: Any) -> OrderService:
    service = _service(clock, **settings)
    for payload in journal:
        service.replay(payload)
    return service


def test_client_ids_hold_past_any_count_of_other_orders() -> None:
    clock = Clock()
    orders = Recorder(_service(clock))
    live = orders.new("1.00", client_order_id="keep", account="alice")
    done = orders.new("2.00", client_order_id="done", account="alice", tif="IOC")
    assert (live.state.status, done.state.status) == ("new", "expired")
    # More than two generations of the old count-based memory (2 x 16384),
    # over many accounts, each with a client id; IOCs that do not rest.
    for i in range(40_000):
        orders.new("0.01", client_order_id=f"other-{i}", account=f"acct-{i % 7}", tif="IOC")
    again = orders.new("1.00", client_order_id="keep", account="alice")
    assert (again.created, again.state.order_id) == (False, live.state.order_id)
    again = orders.new("2.00", client_order_id="done", account="alice", tif="IOC")
    assert (again.created, again.state.order_id) == (False, done.state.order_id)
    assert again.state.status == "expired"
    # Per account: the same id under another account is another order.
    other = orders.new("1.00", client_order_id="keep", account="bob")
    assert other.created


def test_a_done_orders_client_id_is_kept_for_the_retention_then_forgotten() -> None:
    clock = Clock()
    orders = Recorder(_service(clock, client_id_retention="1h"))
    live = orders.new("1.00", client_order_id="live", account="alice")
    done = orders.new("1.00", client_order_id="done", account="alice")
    orders.cancel(done.state.order_id)
    clock.now += 3599
    orders.new("0.01", tif="IOC")
    assert not orders.new("1.00", client_order_id="done", account="alice").created
    # Retention is measured from when it was done (the cancel), in the
    # commands' own times: the next command after an hour forgets it.
    clock.now += 2
    orders.new("0.01", tif="IOC")
    assert orders.new("1.00", client_order_id="done", account="alice").created
    # A live order's id outlives any retention.
    clock.now += 30 * DAY_S
    orders.new("0.01", tif="IOC")
    assert orders.new("1.00", client_order_id="live", account="alice").state.order_id == (
        live.state.order_id
    )
    # Replay from the journal, with a clock that says something else, and a
    # snapshot of the live service both reach the same ids (and bytes).
    replayed = _replayed(Clock(), orders.journal, client_id_retention="1h")
    assert replayed.snapshot() == orders.service.snapshot()
    restored = _service(Clock(), client_id_retention="1h")
    restored.restore(orders.service.snapshot())
    assert restored.snapshot() == orders.service.snapshot()


def test_the_clock_going_back_never_goes_back_in_the_journal() -> None:
    clock = Clock()
    orders = Recorder(_service(clock, client_id_retention=10))
    done = orders.new("1.00", client_order_id="done", tif="IOC")
    clock.now -= DAY_S  # NTP steps the clock back a day
    orders.new("0.01", tif="IOC")
    assert orders.service.time_ms == int((clock.now + DAY_S) * 1000)
    again = orders.new("1.00", client_order_id="done", tif="IOC")
    assert again.state.order_id == done.state.order_id


def test_the_capacity_bounds_done_client_ids() -> None:
    clock = Clock()
    orders = Recorder(_service(clock, client_id_capacity=100))
    for i in range(250):
        orders.new("0.01", client_order_id=f"c{i}", tif="IOC")
    assert orders.service.client_id_counts() == {"live": 0, "done": 100}
    assert not orders.new("0.01", client_order_id="c249", tif="IOC").created
    assert orders.new("0.01", client_order_id="c0", tif="IOC").created


def test_an_order_the_engine_forgot_keeps_its_client_id() -> None:
    """One taker ends more makers than the engine keeps done orders: their
    ids still refuse a second order."""
    clock = Clock()
    orders = Recorder(_service(clock, done_capacity=2))
    makers = [
        orders.new("1.00", client_order_id=f"m{i}", account="maker", side="sell") for i in range(5)
    ]
    taker = orders.new("1.00", qty="0.05")
    assert taker.state.status == "filled"
    with pytest.raises(InvalidOrder) as refused:
        orders.new("1.00", client_order_id="m0", account="maker", side="sell")
    assert (refused.value.status, refused.value.code) == (409, "duplicate_client_order_id")
    assert str(makers[0].state.order_id) in str(refused.value)
    last = orders.new("1.00", client_order_id="m4", account="maker", side="sell")
    assert (last.created, last.state.status) == (False, "filled")


_AMOUNTS = st.one_of(
    st.sampled_from(["1", "1.0", " 1.00", "0.01", "100.00", "0.0001", "1e2", "-1", "0"]),
    st.decimals(allow_nan=False, allow_infinity=False, places=4).map(str),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(-3, 3, allow_nan=False),
    st.text(max_size=6),
)


def _units_or_code(parser: Parser, symbol: str, value: Any, field: str) -> int | str:
    try:
        return parser.units(parser.specs[symbol], value, field)
    except InvalidOrder as exc:
        return exc.code


@given(st.lists(st.tuples(st.sampled_from(["BTC-USD", "ETH-USD"]), _AMOUNTS, st.booleans())))
@example([("BTC-USD", 1, False), ("BTC-USD", True, False)])
def test_a_parser_answers_every_amount_as_a_fresh_one_would(
    amounts: list[tuple[str, Any, bool]],
) -> None:
    # The parser caches what it converted: whatever came before (the same
    # text for another symbol or field, 1 before True), each amount is
    # answered as a parser that never saw another would.
    specs = _service(Clock()).specs
    seasoned = Parser(specs)
    for symbol, value, price in amounts:
        field = "price" if price else "qty"
        expected = _units_or_code(Parser(specs), symbol, value, field)
        assert _units_or_code(seasoned, symbol, value, field) == expected, (symbol, value, field)


def test_a_command_that_cannot_be_recorded_leaves_the_next_record_whole() -> None:
    # The service packs every record with one packer: one that fails half
    # way (a lone surrogate cannot be UTF-8) must leave nothing for the next.
    clock = Clock()
    service = _service(clock)
    orders = Recorder(service)
    with pytest.raises(InvalidOrder) as refused:
        orders.new("1.00", account="a\ud800")
    assert refused.value.code == "invalid_body"
    orders.new("1.00", account="a")
    [record] = orders.journal
    assert msgpack.unpackb(record)[9] == "a"
    assert _replayed(clock, orders.journal).state_hash() == service.state_hash()


# A command stream: new orders (side, price, qty, client id or not, IOC or
# not) and cancels of the n-th order entered, in any mix.
_NEW_ORDERS = st.tuples(
    st.just("new"),
    st.sampled_from(["buy", "sell"]),
    st.integers(1, 4),
    st.integers(1, 3),
    st.booleans(),
    st.booleans(),
)
_CANCELS = st.tuples(st.just("cancel"), st.integers(0, 30))


@given(
    st.lists(st.one_of(_NEW_ORDERS, _CANCELS), max_size=40),
    st.lists(st.integers(1, 8), min_size=1, max_size=40),
)
def test_batch_records_replay_to_the_books_their_commands_do(
    commands: list[tuple[Any, ...]], sizes: list[int]
) -> None:
    # The order port journals a read's commands as one batch record; cut
    # into batches anywhere, beside records of one command (HTTP's, and
    # every record written before batches), replay reaches the same books,
    # ids and clock as the live service and as one record per command.
    clock = Clock()
    service = _service(clock)
    orders = Recorder(service)
    entered: list[int] = []
    for n, command in enumerate(commands):
        clock.now += 0.25
        if command[0] == "new":
            _, side, price, qty, keyed, ioc = command
            extra = {"side": side, "account": "a" if n % 2 else "b"}
            if keyed:
                extra["client_order_id"] = f"c{n % 5}"
            if ioc:
                extra["tif"] = "IOC"
            entered.append(orders.new(f"{price}.00", f"0.0{qty}", **extra).state.order_id)
        elif command[1] < len(entered):
            with contextlib.suppress(InvalidOrder):  # done already: nothing journaled
                orders.cancel(entered[command[1]])
    singles = orders.journal
    mixed: list[bytes] = []
    at = 0
    for size in sizes * (len(singles) + 1):
        if at >= len(singles):
            break
        chunk = singles[at : at + size]
        mixed += chunk if size == 1 else batch_records(chunk)
        at += size
    assert [c for r in mixed for c in record_commands(r)] == [msgpack.unpackb(p) for p in singles]
    want = service.state_hash()
    for journal in (singles, mixed):
        replayed = _replayed(clock, journal)
        assert replayed.state_hash() == want
        assert (replayed.next_id, replayed.time_ms) == (service.next_id, service.time_ms)
        assert replayed.client_id_counts() == service.client_id_counts()


def test_a_batch_is_cut_into_records_below_the_bound() -> None:
    # A read's commands can outgrow one record (a mass cancel of a large
    # book): consecutive commands share records of at most _BATCH_BYTES of
    # commands, in order, and not one more record than that needs.
    clock = Clock()
    service = _service(clock)
    orders = Recorder(service)
    for n in range(25_000):
        orders.new("1.00", client_order_id=f"client-order-{n:050d}", account="a")
    payloads = orders.journal
    assert sum(map(len, payloads)) > 2 * _BATCH_BYTES
    records = batch_records(payloads)
    commands = [msgpack.unpackb(p) for p in payloads]
    assert [c for r in records for c in record_commands(r)] == commands
    # Each record's commands within the bound, and each but the last full:
    # the next command would have passed it.
    at = 0
    for n, record in enumerate(records):
        count = len(record_commands(record))
        size = sum(map(len, payloads[at : at + count]))
        assert size <= _BATCH_BYTES
        if n < len(records) - 1:
            assert size + len(payloads[at + count]) > _BATCH_BYTES
        at += count
    assert _replayed(clock, records).state_hash() == service.state_hash()


def _named(value: Any, names: tuple[str, ...]) -> int | None:
    """The choice fields' rule, spelled out: a name in any case, else None."""
    if isinstance(value, str):
        for index, name in enumerate(names):
            if value.lower() == name.lower():
                return index
    return None


_ALL_NAMES = [*SIDE_NAMES, *TYPE_NAMES, *TIF_NAMES, *STP_NAMES]
_CASED = st.sampled_from(_ALL_NAMES).flatmap(
    lambda name: st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(name, upper, strict=True))
    )
)


@given(
    st.sampled_from(["side", "type", "tif", "stp"]),
    st.one_of(_CASED, st.text(max_size=12), st.none(), st.integers(), st.booleans()),
)
@example("tif", "gtc")
@example("side", "SELL")
@example("stp", "İ")  # lowers to two characters
def test_a_choice_field_takes_a_name_in_any_case_and_nothing_else(field: str, value: Any) -> None:
    names = {"side": SIDE_NAMES, "type": TYPE_NAMES, "tif": TIF_NAMES, "stp": STP_NAMES}[field]
    body = {"symbol": "BTC-USD", "side": "buy", "price": "1.00", "qty": "0.01", field: value}
    if field == "type" and _named(value, names) == 1:
        del body["price"]  # a market order takes none
    expected = _named(value, names)
    if value is None and field != "side":
        expected = {"type": 0, "tif": 0, "stp": 0}[field]
    at = {"side": 3, "type": 4, "tif": 7, "stp": 10}[field]
    try:
        got: int | None = Parser(_service(Clock()).specs).new(body)[at]
    except InvalidOrder as exc:
        assert exc.code == f"invalid_{field}"
        got = None
    assert got == expected


OLD_JOURNAL = Path(__file__).parent / "data" / "orders-journal-per-command"
"""An orders journal written by sprintd before batch records (one record per
command, each frame's records with one ``append_many``): the frames of
``_fixture_frames`` through ``Parser`` and ``OrderService`` with ``_Ticking``,
in a ``Journal(fsync="os", segment_bytes=4096)``."""


class _Ticking(Clock):
    """The fixture's clock: a millisecond on at every reading."""

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


def _fixture_frames() -> list[list[tuple[str, Any]]]:
    frames = []
    n = 0
    for f in range(30):
        frame: list[tuple[str, Any]] = []
        for _ in range(10):
            body = {
                "symbol": "BTC-USD",
                "side": "buy" if n % 3 else "sell",
                "price": f"{100 + n % 5}.00",
                "qty": "0.01",
                "account": f"acct{n % 4}",
            }
            if n % 7 == 0:
                body["client_order_id"] = f"c{n}"
            frame.append(("new", body))
            n += 1
        if f % 4 == 3:
            frame.append(("cancel", n - 5))
        frames.append(frame)
    return frames


def test_a_journal_written_before_batch_records_replays_as_this_code_applies_it(
    tmp_path: Path,
) -> None:
    # This code, live, one batch record a frame (as the order port journals
    # a read), reaches the books the old journal replays to; and so do its
    # own records.
    service = _service(_Ticking())
    parse = Parser(service.specs)
    records: list[bytes] = []
    for frame in _fixture_frames():
        payloads = []
        for op, arg in frame:
            try:
                payload = (
                    service.submit(parse.new(arg))[0] if op == "new" else service.cancel(arg)[0]
                )
            except InvalidOrder:
                continue  # a cancel of an order already filled: nothing journaled
            if payload is not None:
                payloads.append(payload)
        records += batch_records(payloads)
    shutil.copytree(OLD_JOURNAL, tmp_path / "journal")
    journal = Journal(tmp_path / "journal", fsync="os", segment_bytes=4096)
    report = journal.open()
    try:
        old = _service(Clock())
        for _, _, payload in journal.replay(streams={"orders"}):
            old.replay(payload)
    finally:
        journal.close()
    assert report.cut is None and report.records > len(records) == 30
    new = _replayed(Clock(), records)
    for replayed in (old, new):
        assert replayed.state_hash() == service.state_hash()
        assert (replayed.next_id, replayed.time_ms) == (service.next_id, service.time_ms)
        assert replayed.client_id_counts() == service.client_id_counts()
    # The hash the old code printed as it wrote the journal.
    assert service.state_hash() == "9d3e35d5bdb1f7bd8f0d31cff62577f6"
