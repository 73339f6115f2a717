"""The command streams every engine is fed, built once per run from a fixed seed.

A command is a flat tuple of ints, ``(op, order_id, side, price, qty, kind,
tif)``, in this module's neutral encoding; each adapter translates a stream to
its engine's own constants before the clock starts. Cancels carry zeros in the
fields they do not use, so the timed loop unpacks every command the same way.

Order ids are 1, 2, 3... in the order the new orders appear: lightmatchingengine
numbers its orders itself, the same way, so the bench needs no id map for it.

Streams are built against ``ReferenceBook``, which knows at every step which
orders rest (a cancel always names one) and how much the stream trades (the
figure every engine's own trades are checked against).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from bench.engine.reference import ReferenceBook

__all__ = [
    "BUY",
    "CANCEL",
    "GTC",
    "IOC",
    "LIMIT",
    "LOADS",
    "MARKET",
    "NEW",
    "SELL",
    "Command",
    "Load",
    "Stream",
    "generate",
    "resting_stream",
]

Command = tuple[int, int, int, int, int, int, int]

NEW, CANCEL = 0, 1
BUY, SELL = 0, 1
LIMIT, MARKET = 0, 1
GTC, IOC = 0, 1

SEED = 20_261_122

# The exchange-like mix. Prices are ticks around a mid that walks one tick at
# a time, so the book drifts the way a traded instrument's does.
MID_START = 100_000
# A step every 50 commands on average: over a million commands the mid
# wanders a couple of hundred ticks, and resting orders far from it age out
# through cancels rather than fills.
MID_STEP_EVERY = 50
# Shares of each command kind, as the issue states the mix.
SHARE_CANCEL = 0.35
SHARE_TAKER = 0.05  # market and IOC orders, half each
# A new limit's distance from the mid, in ticks, on its own side: mostly close
# in (exponential, mean 6), so a few price levels hold most of the book.
MEAN_DEPTH_TICKS = 6.0
# Some limits are priced through the mid and take liquidity before resting.
SHARE_MARKETABLE = 0.05
MAX_THROUGH_TICKS = 3
MAX_QTY = 100
# The resting book is held between these sizes by turning a would-be cancel
# into a new order (below) or a new order into a cancel (above); the report
# shows the resulting mix, which stays within a point or two of the shares.
MIN_RESTING = 1_500
MAX_RESTING = 4_000

# The memory pass: orders that never cross, spread over this many levels a side.
RESTING_LEVELS = 500


@dataclass(frozen=True)
class Load:
    key: str
    title: str
    description: str


LIQUIBOOK = Load(
    "liquibook",
    "liquibook's insert pattern",
    "alternating buy and sell GTC limit orders, bids at 1880-1889 and asks at 1884-1893, "
    "quantities 100-1000 in hundreds (liquibook's test/perf/pt_order_book.cpp): six of the "
    "ten prices on each side can cross, and what does not trade rests, so the book grows "
    "through the run",
)
EXCHANGE = Load(
    "exchange",
    "exchange-like mix",
    "new GTC limits near a random-walk mid (5% priced through it), cancels of resting "
    "orders chosen at random, market and IOC orders; the resting book held at "
    f"{MIN_RESTING:,}-{MAX_RESTING:,} orders",
)
LOADS = (LIQUIBOOK, EXCHANGE)


@dataclass
class Stream:
    load: Load
    commands: list[Command]
    # Counts per command kind: limit, cancel, market, ioc.
    mix: dict[str, int] = field(default_factory=dict)
    # Quantity traded over the stream, by the reference book.
    traded_qty: int = 0
    trades_orders: int = 0
    resting_end: int = 0
    resting_max: int = 0


def generate(load: Load, ops: int, seed: int = SEED) -> Stream:
    if load is LIQUIBOOK:
        return _liquibook(ops, random.Random(seed))
    return _exchange(ops, random.Random(seed))


def resting_stream(orders: int, seed: int = SEED) -> list[Command]:
    """GTC limits that never cross: bids below the mid, asks above it."""
    rng = random.Random(seed)
    commands: list[Command] = []
    for oid in range(1, orders + 1):
        if oid % 2:
            price = MID_START - 1 - rng.randrange(RESTING_LEVELS)
            commands.append((NEW, oid, BUY, price, 1 + rng.randrange(MAX_QTY), LIMIT, GTC))
        else:
            price = MID_START + 1 + rng.randrange(RESTING_LEVELS)
            commands.append((NEW, oid, SELL, price, 1 + rng.randrange(MAX_QTY), LIMIT, GTC))
    return commands


def _liquibook(ops: int, rng: random.Random) -> Stream:
    book = ReferenceBook()
    stream = Stream(LIQUIBOOK, [])
    for i in range(ops):
        is_buy = i % 2 == 0
        price = rng.randrange(10) + (1880 if is_buy else 1884)
        qty = (rng.randrange(10) + 1) * 100
        oid = i + 1
        stream.commands.append((NEW, oid, BUY if is_buy else SELL, price, qty, LIMIT, GTC))
        _count(stream, book.new(oid, is_buy, price, qty, market=False, ioc=False))
        stream.resting_max = max(stream.resting_max, len(book.resting))
    stream.mix = {"limit": ops, "cancel": 0, "market": 0, "ioc": 0}
    stream.resting_end = len(book.resting)
    return stream


def _exchange(ops: int, rng: random.Random) -> Stream:
    book = ReferenceBook()
    stream = Stream(EXCHANGE, [])
    mix = dict.fromkeys(("limit", "cancel", "market", "ioc"), 0)
    mid = MID_START
    oid = 0
    # A book to trade against from the first command: the mix is about a
    # steady state, not about filling an empty book.
    while len(book.resting) < (MIN_RESTING + MAX_RESTING) // 2:
        oid += 1
        is_buy = rng.random() < 0.5
        price = _passive_price(rng, mid, is_buy)
        qty = 1 + rng.randrange(MAX_QTY)
        stream.commands.append((NEW, oid, BUY if is_buy else SELL, price, qty, LIMIT, GTC))
        book.new(oid, is_buy, price, qty, market=False, ioc=False)
        mix["limit"] += 1
    while len(stream.commands) < ops:
        if rng.randrange(MID_STEP_EVERY) == 0:
            mid += 1 if rng.random() < 0.5 else -1
        kind = _kind(rng.random(), len(book.resting))
        if kind == "cancel":
            victim = book.random_resting(rng)
            book.cancel(victim)
            stream.commands.append((CANCEL, victim, 0, 0, 0, 0, 0))
            mix["cancel"] += 1
            continue
        oid += 1
        is_buy = rng.random() < 0.5
        side = BUY if is_buy else SELL
        qty = 1 + rng.randrange(MAX_QTY)
        if kind == "market":
            # Never more than the other side holds: lightmatchingengine would
            # rest a market order's remainder at price 0, a book no engine shares.
            qty = min(qty, book.ask_qty if is_buy else book.bid_qty)
            if qty > 0:
                stream.commands.append((NEW, oid, side, 0, qty, MARKET, IOC))
                _count(stream, book.new(oid, is_buy, 0, qty, market=True, ioc=True))
                mix["market"] += 1
                continue
            qty = 1 + rng.randrange(MAX_QTY)
            kind = "ioc"
        if kind == "ioc":
            price = _through_price(rng, mid, is_buy)
            stream.commands.append((NEW, oid, side, price, qty, LIMIT, IOC))
            _count(stream, book.new(oid, is_buy, price, qty, market=False, ioc=True))
            mix["ioc"] += 1
            continue
        if rng.random() < SHARE_MARKETABLE:
            price = _through_price(rng, mid, is_buy)
        else:
            price = _passive_price(rng, mid, is_buy)
        stream.commands.append((NEW, oid, side, price, qty, LIMIT, GTC))
        _count(stream, book.new(oid, is_buy, price, qty, market=False, ioc=False))
        mix["limit"] += 1
        stream.resting_max = max(stream.resting_max, len(book.resting))
    stream.mix = mix
    stream.resting_end = len(book.resting)
    return stream


def _kind(draw: float, resting: int) -> str:
    if draw < SHARE_CANCEL:
        return "cancel" if resting >= MIN_RESTING else "limit"
    if draw < SHARE_CANCEL + SHARE_TAKER / 2:
        return "market"
    if draw < SHARE_CANCEL + SHARE_TAKER:
        return "ioc"
    return "cancel" if resting > MAX_RESTING else "limit"


def _passive_price(rng: random.Random, mid: int, is_buy: bool) -> int:
    depth = 1 + int(rng.expovariate(1 / MEAN_DEPTH_TICKS))
    return mid - depth if is_buy else mid + depth


def _through_price(rng: random.Random, mid: int, is_buy: bool) -> int:
    through = rng.randrange(MAX_THROUGH_TICKS + 1)
    return mid + through if is_buy else mid - through


def _count(stream: Stream, traded: int) -> None:
    if traded:
        stream.traded_qty += traded
        stream.trades_orders += 1
