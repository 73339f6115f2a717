"""Who may call what, as configured: scopes, API keys and their tiers' rate limits.

The vocabulary routes and snapshots declare (``Access``: the scope a request
needs, ``"open"`` for none) and the ``[auth]`` section that names the keys;
``auth`` builds the guard from it, ``ratelimit`` the buckets. Kept apart from
the guard so that the settings, the router and the snapshots can name these
types without importing the guard and what it needs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from .sections import Section
from .tiers import Tier

__all__ = [
    "Access",
    "ApiKeySettings",
    "AuthSettings",
    "RateLimit",
    "Scope",
    "TierLimits",
    "check_secret",
]

Scope = Literal["read", "trade", "admin"]
Access = Literal["open", "read", "trade", "admin"]
# Keys travel in headers: visible ASCII, no spaces. 16 characters is the
# floor below which a key can be guessed by a patient client.
_SECRET = re.compile(r"[\x21-\x7e]{16,4096}")


def check_secret(value: str) -> str | None:
    """Why ``value`` cannot be an API key, or None when it can."""
    if _SECRET.fullmatch(value):
        return None
    return "an API key is 16 to 4096 visible ASCII characters, without spaces"


class RateLimit(Section):
    """A token bucket: ``rate`` requests a second, up to ``burst`` at once."""

    rate: float = Field(gt=0)
    burst: int = Field(ge=1)


class TierLimits(Section):
    """Per-key request limits by the key's tier (the seed system's figures)."""

    free: RateLimit = RateLimit(rate=1, burst=5)
    pro: RateLimit = RateLimit(rate=10, burst=50)
    business: RateLimit = RateLimit(rate=50, burst=250)
    turbo: RateLimit = RateLimit(rate=100, burst=500)
    enterprise: RateLimit = RateLimit(rate=500, burst=2500)

    @model_validator(mode="before")
    @classmethod
    def _over_the_defaults(cls, data: Any) -> Any:
        """``[auth.limits.pro] burst = 100`` keeps pro's rate: a tier's table
        lays over its defaults rather than replacing them."""
        if not isinstance(data, dict):
            return data
        merged = dict(data)
        for tier, given in data.items():
            field = cls.model_fields.get(tier)
            if field is not None and isinstance(given, dict):
                merged[tier] = {**field.default.model_dump(), **given}
        return merged

    def of(self, tier: Tier) -> RateLimit:
        limit: RateLimit = getattr(self, tier)
        return limit


class ApiKeySettings(Section):
    """One API key: its secret from exactly one source, its tier and scopes."""

    # The secret itself (shown masked by ``sprintd config``) ...
    key: SecretStr | None = None
    # ... or the name of an environment variable holding it ...
    key_env: str | None = None
    # ... or a file holding it (trailing whitespace ignored).
    key_file: Path | None = None
    tier: Tier = "free"
    scopes: tuple[Scope, ...] = ("read",)

    @field_validator("key")
    @classmethod
    def _usable(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = check_secret(value.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ApiKeySettings:
        given = [self.key is not None, self.key_env is not None, self.key_file is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of key, key_env and key_file")
        return self


class AuthSettings(Section):
    """API keys, scopes and per-tier rate limits (``sprintd.auth``)."""

    # Off by default: a development daemon on loopback needs no keys.
    enabled: bool = False
    keys: dict[str, ApiKeySettings] = Field(default_factory=dict)
    limits: TierLimits = TierLimits()
    # What /metrics and /v1/stats ask of a key; "open" serves them to anyone.
    metrics_scope: Access = "open"
    # Each key's bucket shared by every worker and instance through
    # [redis] url (sprintd.ratelimit); off: a bucket per worker.
    shared_limits: bool = False
