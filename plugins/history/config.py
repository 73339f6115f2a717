"""The ``[history]`` settings section: where PostgreSQL is, and the projector's pacing."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from sprintd import PluginSection

__all__ = ["HistorySection"]


class HistorySection(PluginSection):
    """``[history]``: off until ``postgres_url`` names a database."""

    # postgresql://user[:password]@host[:port]/database; unset: no projector,
    # the journal is the only record.
    postgres_url: str | None = None
    # Records per transaction at most: a batch is one COPY per table and one
    # progress update. Larger batches write faster, smaller ones commit sooner.
    batch_records: int = Field(20_000, ge=1, le=1_000_000)
    # How often an idle projector looks for new records (ms): a bound on the lag
    # it adds when it has caught up.
    poll_interval_ms: float = Field(20.0, gt=0, le=10_000)
    # Seconds between attempts to reach PostgreSQL while it is down.
    retry_interval: float = Field(1.0, gt=0)
    # The projector's own state (the shadow order books) is committed with the
    # rows every this many records: a restart replays at most this many from
    # the journal, and the journal keeps the records after it.
    state_records: int = Field(100_000, ge=1)
    # /health warns when the lag is longer (seconds).
    lag_warn_s: float = Field(5.0, gt=0)

    @field_validator("postgres_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError("expected postgresql://user@host:port/database")
        try:
            parts.port  # noqa: B018 (it validates the port)
        except ValueError:
            raise ValueError("bad port") from None
        if not parts.path.strip("/"):
            raise ValueError("no database (postgresql://user@host:port/database)")
        return value

    def keeps_state_locally(self) -> bool:
        # One projector per journal: the journal is the process's.
        return self.postgres_url is not None
