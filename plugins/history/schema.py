"""The history tables: created at start-up if missing, versioned in ``history_schema``.

Every table is append-only and keyed by what makes a row unique (an order id,
a trade's symbol and id, a journal seq), so a row written twice is an error
that rolls its batch back, never a duplicate. ``history_progress`` holds the
last journal seq whose rows are committed, updated in the same transaction
as those rows: that one row is what makes the projection exactly once.
``README.md`` describes every column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

__all__ = ["COLUMNS", "SCHEMA_VERSION", "SchemaError", "create"]

SCHEMA_VERSION = 1

# The statements of version 1, in order; each is idempotent.
_TABLES = (
    """CREATE TABLE IF NOT EXISTS history_schema (
        version integer PRIMARY KEY,
        applied_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS history_progress (
        id boolean PRIMARY KEY DEFAULT true CHECK (id),
        seq bigint NOT NULL,
        state_seq bigint NOT NULL,
        state bytea,
        updated_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS orders (
        order_id bigint PRIMARY KEY,
        seq bigint NOT NULL,
        symbol text NOT NULL,
        side text NOT NULL,
        type text NOT NULL,
        price numeric,
        qty numeric NOT NULL,
        tif text NOT NULL,
        post_only boolean NOT NULL,
        account text NOT NULL,
        client_order_id text,
        stp text NOT NULL,
        accepted boolean NOT NULL,
        reject_reason text,
        time_ms bigint)""",
    """CREATE TABLE IF NOT EXISTS trades (
        symbol text NOT NULL,
        trade_id bigint NOT NULL,
        seq bigint NOT NULL,
        maker_order_id bigint NOT NULL,
        taker_order_id bigint NOT NULL,
        price numeric NOT NULL,
        qty numeric NOT NULL,
        taker_side text NOT NULL,
        time_ms bigint,
        PRIMARY KEY (symbol, trade_id))""",
    """CREATE TABLE IF NOT EXISTS order_events (
        seq bigint NOT NULL,
        n smallint NOT NULL,
        order_id bigint NOT NULL,
        symbol text NOT NULL,
        kind text NOT NULL,
        price numeric,
        qty numeric,
        reason text,
        time_ms bigint,
        PRIMARY KEY (seq, n))""",
    """CREATE TABLE IF NOT EXISTS payments (
        seq bigint PRIMARY KEY,
        correlation_id text NOT NULL,
        amount numeric NOT NULL,
        processor text NOT NULL,
        requested_at_ms bigint NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS payment_events (
        seq bigint PRIMARY KEY,
        kind text NOT NULL,
        correlation_id text,
        processor text,
        requested_at_ms bigint)""",
    "CREATE INDEX IF NOT EXISTS trades_seq ON trades (seq)",
    "CREATE INDEX IF NOT EXISTS payments_correlation_id ON payments (correlation_id)",
)

COLUMNS = {
    "orders": (
        "order_id", "seq", "symbol", "side", "type", "price", "qty", "tif", "post_only",
        "account", "client_order_id", "stp", "accepted", "reject_reason", "time_ms",
    ),
    "trades": (
        "symbol", "trade_id", "seq", "maker_order_id", "taker_order_id", "price", "qty",
        "taker_side", "time_ms",
    ),
    "order_events": (
        "seq", "n", "order_id", "symbol", "kind", "price", "qty", "reason", "time_ms",
    ),
    "payments": ("seq", "correlation_id", "amount", "processor", "requested_at_ms"),
    "payment_events": ("seq", "kind", "correlation_id", "processor", "requested_at_ms"),
}  # fmt: skip
"""The projected tables and their columns, in the order the decoders build rows."""

# Two projectors starting on one empty database: the second waits for the
# first's DDL instead of failing on a half-made table.
_LOCK_KEY = 0x5350524E54444831  # "SPRNTDH1"


class SchemaError(Exception):
    """The database holds a history schema this sprintd cannot write (a newer version)."""


def create(conn: psycopg.Connection[Any]) -> tuple[int, int, bytes | None]:
    """Create the tables if missing (in one transaction) and read the progress.

    Returns:
        (the last projected seq, the seq of the projector's saved state, that state).

    Raises:
        SchemaError: the database's schema is newer than this sprintd's.
        psycopg.Error: the database cannot be reached or written.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        for statement in _TABLES:
            conn.execute(statement)
        row = conn.execute("SELECT max(version) FROM history_schema").fetchone()
        found = row[0] if row else None
        if found is not None and found > SCHEMA_VERSION:
            raise SchemaError(
                f"the history schema is version {found}; this sprintd writes {SCHEMA_VERSION}"
            )
        conn.execute(
            "INSERT INTO history_schema (version) VALUES (%s) ON CONFLICT DO NOTHING",
            (SCHEMA_VERSION,),
        )
        conn.execute(
            "INSERT INTO history_progress (seq, state_seq) VALUES (0, 0) ON CONFLICT DO NOTHING"
        )
        progress = conn.execute("SELECT seq, state_seq, state FROM history_progress").fetchone()
    if progress is None:
        raise SchemaError("history_progress has no row (removed by hand?)")
    seq, state_seq, state = progress
    return seq, state_seq, None if state is None else bytes(state)
