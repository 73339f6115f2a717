"""The ``[prices]`` settings section: which symbols, the feed port, the limits."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field, field_validator

from sprintd import PluginSection

from .updates import check_symbol

__all__ = ["FEED_PORT_OFFSET", "PricesSection"]

FEED_PORT_OFFSET = 2000
"""The feed port, unless set, is the HTTP port plus this: 8080 -> 10080."""


class PricesSection(PluginSection):
    """``[prices]``: the symbols taken, batch limits and the binary feed port."""

    # The price map and its snapshots live in this process: one worker owns them.
    process_local: ClassVar[bool] = True

    # Empty: any symbol that matches the symbol pattern (updates module) is
    # taken, up to max_symbols. A list: only these.
    symbols: list[str] = Field(default_factory=list)
    # Each symbol is a snapshot, and GET /v1/prices republishes them all on
    # every update batch: its cost grows with this.
    max_symbols: int = Field(1000, ge=1, le=100_000)
    # Updates in one request body or one feed frame.
    max_batch: int = Field(10_000, ge=1, le=1_000_000)
    # The binary feed (README.md beside this file); 0 picks a free port.
    # Unset: server.port + FEED_PORT_OFFSET (8080 -> 10080), so a second
    # instance on another --port does not collide on it.
    feed_host: str = "127.0.0.1"
    feed_port: int | None = Field(None, ge=0, le=65535)
    # POST /v1/price-engine/performance-test runs at most this many updates:
    # about 10 us each, so the default bound is ~10 s of the worker's time,
    # given up in slices (the daemon keeps serving meanwhile).
    max_test_updates: int = Field(1_000_000, ge=1, le=10_000_000)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: list[str]) -> list[str]:
        for symbol in value:
            why = check_symbol(symbol)
            if why is not None:
                raise ValueError(why)
        return value
