"""The ``[payments]`` settings section: the processors, the store, retries and health."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from sprintd import PluginSection

__all__ = ["PaymentsSection"]


class PaymentsSection(PluginSection):
    """``[payments]``: the processors, the store, and the pacing of sends and health polls."""

    # The processors' base URLs (``POST {url}/payments``). No default: a
    # daemon that guessed them would send payments and health polls to
    # whatever listens there. Without both, the routes answer 503
    # not_configured and nothing is called.
    default_url: str | None = None
    fallback_url: str | None = None
    # memory: this process owns the payments, journaled (one worker, one
    # instance). redis: they live in [redis] url, shared by every worker and
    # instance that names it.
    store: Literal["memory", "redis"] = "memory"
    # Tasks per worker sending payments to the processors: at most this many
    # payments in flight at once (a task is a few KB).
    concurrency: int = Field(512, ge=1, le=10_000)
    # Sends in flight per processor while it answers within 100 ms; one that
    # reports a longer minResponseTime gets proportionally more (up to
    # concurrency): 64 carry 640 payments/s whatever the delay. Not more: a
    # processor records a payment when it gets to it, so payments queued
    # inside a flooded processor are recorded late after their requestedAt,
    # where a consistency check sees them before their answer is back here
    # (and its admin API stops answering in time).
    inflight: int = Field(64, ge=1, le=10_000)
    connect_timeout: float = Field(1.0, gt=0)
    # A payment's answer is awaited this long plus the processor's reported
    # minResponseTime; then the outcome is unknown and the payment stays with
    # that processor (see dispatcher), recorded there only once a retry gets
    # its 422: late, so the summary disagrees with the processor meanwhile.
    # Longer than any delay a processor takes before its health result says
    # so (the challenge's reach 5 s), so that a slow answer is waited for.
    request_timeout: float = Field(6.0, gt=0)
    # Retries back off from retry_first, doubling to retry_cap (with jitter).
    retry_first: float = Field(0.01, gt=0)
    retry_cap: float = Field(1.0, gt=0)
    # The processors allow one health call per 5 s each, across all callers.
    health_interval: float = Field(5.0, gt=0)
    # The default costs a third of the fallback's fee, and a processor's
    # latency never reaches a client: a payment waits for the default (down,
    # or busy with the payments before it) up to this long, and only then
    # does the fallback take it (see README, "Routing for profit").
    fallback_after_s: float = Field(30.0, ge=0)
    # A processor that answered 500 or timed out is avoided this long (the
    # health result may be up to health_interval old).
    suspect_s: float = Field(1.0, ge=0)
    # redis store: key prefix, and how long an instance's heartbeat lives; the
    # payments of an instance silent this long are taken over by another.
    redis_prefix: str = "sprintd:payments"
    owner_ttl: float = Field(5.0, gt=0)

    @field_validator("default_url", "fallback_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("expected http://host:port")
        try:
            parts.port  # noqa: B018 (it validates the port)
        except ValueError:
            raise ValueError("bad port") from None
        return value.rstrip("/")

    def keeps_state_locally(self) -> bool:
        # Unconfigured, the plugin keeps nothing (every route answers 503).
        return self.store == "memory" and self.configured

    @property
    def configured(self) -> bool:
        return self.default_url is not None and self.fallback_url is not None
