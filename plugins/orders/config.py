"""The ``[orders]`` settings section: symbols, the entry port, snapshots."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from sprintd import PluginSection, Section

from .spec import OffGridError, SymbolSpec

__all__ = ["DEFAULT_RESERVE", "ENTRY_PORT_OFFSET", "OrdersSection", "SymbolSettings"]

DEFAULT_RESERVE = 65_536
"""Order-table slots per symbol made at start-up when the tier preallocates
buffers: 5.8 MB a symbol (11 list cells of 8 bytes a slot)."""

ENTRY_PORT_OFFSET = 1000
"""The entry port, unless set, is the HTTP port plus this: 8080 -> 9080."""


class SymbolSettings(Section):
    """``[orders.symbols.NAME]``: one tradable symbol's grid and engine."""

    # Decimal strings: a float could not say 0.01 exactly.
    tick_size: str
    lot_size: str
    # An engine registered through the sprintd_order_engines hook.
    engine: str = "price_time"

    @field_validator("tick_size", "lot_size")
    @classmethod
    def _decimal(cls, value: str) -> str:
        try:
            SymbolSpec("check", value, value)
        except (OffGridError, ValueError) as exc:
            raise ValueError(f"not a positive decimal: {exc}") from None
        return value


def _default_symbols() -> dict[str, SymbolSettings]:
    return {
        "BTC-USD": SymbolSettings(tick_size="0.01", lot_size="0.0001"),
        "ETH-USD": SymbolSettings(tick_size="0.01", lot_size="0.001"),
    }


_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


class OrdersSection(PluginSection):
    """``[orders]``: the symbols, the books' sizes and the client-id retention."""

    # The books live in this process: one worker owns them.
    process_local: ClassVar[bool] = True

    symbols: dict[str, SymbolSettings] = Field(default_factory=_default_symbols)
    # The binary order-entry port (README.md beside this file); 0 picks a
    # free one. Unset: server.port + ENTRY_PORT_OFFSET (8080 -> 9080), so a
    # second instance on another --port does not collide on it.
    entry_host: str = "127.0.0.1"
    entry_port: int | None = Field(None, ge=0, le=65535)
    # Levels in the /v1/book/{symbol} snapshot; ?depth=N asks for more.
    book_depth: int = Field(20, ge=1, le=10_000)
    trades_kept: int = Field(1000, ge=1)
    # Trade and order events a /v1/ws subscriber may fall behind by before it
    # is dropped (close 1013); books and prices are coalesced instead (feed.py).
    feed_max_pending: int = Field(4096, ge=1)
    # Done orders GET /v1/orders/{id} still finds, per symbol (and client
    # order ids remembered). More makes full collections longer: 100k done
    # orders made one take 7 ms.
    done_capacity: int = Field(16_384, ge=1)
    # How long a done order's client_order_id still finds it, from the time
    # it was done (a time journaled with the command that ended it): seconds,
    # or a number with s, m, h or d ("24h"). A live order's id is kept for
    # as long as it rests, whatever this says.
    client_id_retention: float = Field(86_400.0, ge=0, allow_inf_nan=False)
    # Done orders' client ids kept at most (~0.5 KB each, its final state
    # included): past this, the oldest is forgotten before its retention
    # ends. Size it to the busiest retention window's orders with ids.
    client_id_capacity: int = Field(1_000_000, ge=0)
    # Resting orders per symbol the engine makes room for at start-up, so an
    # order never waits for its table to grow (2-3 ms a time past 300k).
    # Unset: DEFAULT_RESERVE when the tier preallocates buffers, else none.
    reserve_orders: int | None = Field(None, ge=0, le=50_000_000)
    # Execution reports (compact protocol, README): the latest this many per
    # account are kept for a reconnecting session's replay, and a session may
    # fall this many bytes behind (beyond its socket's own buffer) before it
    # is told ``slow_consumer`` and closed.
    report_ring: int = Field(10_000, ge=1, le=10_000_000)
    report_queue: int = Field(1 << 20, ge=1024)

    @field_validator("client_id_retention", mode="before")
    @classmethod
    def _duration(cls, value: object) -> object:
        """ "24h", "90m", "30s", "7d" as seconds; numbers pass through."""
        if isinstance(value, str) and value[-1:] in _UNIT_SECONDS:
            try:
                return float(value[:-1]) * _UNIT_SECONDS[value[-1]]
            except ValueError:
                raise ValueError("a number of seconds, or a number with s, m, h or d") from None
        return value
