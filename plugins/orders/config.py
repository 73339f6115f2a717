"""The ``[orders]`` settings section: symbols, the entry port, snapshots."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator, model_validator

from sprintd import PluginSection, Section

from .spec import OffGridError, SymbolSpec

__all__ = [
    "DEFAULT_RESERVE",
    "ENTRY_PORT_OFFSET",
    "OrdersSection",
    "SymbolSettings",
    "parse_owner",
]

DEFAULT_RESERVE = 65_536
"""Order-table slots per symbol made at start-up when the tier preallocates
buffers: 5.8 MB a symbol (11 list cells of 8 bytes a slot)."""

ENTRY_PORT_OFFSET = 1000
"""The entry port, unless set, is the HTTP port plus this: 8080 -> 9080."""


def parse_owner(text: str) -> tuple[str, int]:
    """``"host:port"`` (``"[::1]:9081"`` for IPv6) as ``(host, port)``.

    Raises:
        ValueError: not a host and a port from 1 to 65535.
    """
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or any(c.isspace() or c in "[]/" for c in host):
        raise ValueError(f"{text!r} is not host:port")
    if not (port.isascii() and port.isdigit()) or not 0 < int(port) <= 65535:
        raise ValueError(f"{text!r}: the port must be from 1 to 65535")
    return host, int(port)


class SymbolSettings(Section):
    """``[orders.symbols.NAME]``: one tradable symbol's grid and engine, or,
    with ``owner``, the instance that trades it (README.md, "Symbols on
    other instances")."""

    # Decimal strings: a float could not say 0.01 exactly. Required unless
    # the symbol has an owner ("" then: the owner's settings say them).
    tick_size: str = ""
    lot_size: str = ""
    # An engine registered through the sprintd_order_engines hook.
    engine: str = "price_time"
    # The owner's order-entry port, "host:port": this instance keeps no book
    # for the symbol and forwards its commands there.
    owner: str | None = None

    @field_validator("owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        if value is not None:
            parse_owner(value)
        return value

    @model_validator(mode="after")
    def _local_or_owned(self) -> SymbolSettings:
        given = self.model_fields_set & {"tick_size", "lot_size", "engine"}
        if self.owner is not None and given:
            raise ValueError(
                f"{', '.join(sorted(given))} with owner: the owner's own settings say them"
            )
        if self.owner is None and not (self.tick_size and self.lot_size):
            raise ValueError("tick_size and lot_size are required (or an owner)")
        return self

    @field_validator("tick_size", "lot_size")
    @classmethod
    def _decimal(cls, value: str) -> str:
        if not value:
            return value  # only an owned symbol leaves it out (_local_or_owned)
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
    # Symbols with an owner (README.md, "Symbols on other instances"): a
    # forwarded command the owner has not answered within this many seconds
    # is answered 503 owner_unavailable, and the link to it is remade.
    forward_timeout: float = Field(5.0, gt=0, le=300, allow_inf_nan=False)

    def local(self) -> OrdersSection:
        """This section with only the symbols this instance trades itself."""
        return self.model_copy(
            update={"symbols": {s: c for s, c in self.symbols.items() if c.owner is None}}
        )

    def owners(self) -> dict[str, str]:
        """The symbols other instances trade, and the address of each one's owner."""
        return {s: c.owner for s, c in self.symbols.items() if c.owner is not None}

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
