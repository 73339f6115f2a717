"""API keys and scopes: who sent a request, and whether it may have what it asks.

Strategy: every route and snapshot declares its ``scope`` (``routing.Route``,
``snapshots.SnapshotSpec``): ``open``, or the scope a key must hold (read,
trade, admin; a scope implies no other). With ``[auth] enabled`` the server
asks the ``Guard`` before it answers anything that is not open:

1. the credential is the first ``X-API-Key`` or ``Authorization: Bearer``
   header of the request; none, an unknown key, or another auth scheme is
   **401** with ``WWW-Authenticate``, the same answer whichever it was;
2. the key's rate limit (``ratelimit``): **429** with ``Retry-After``;
3. the scope: **403**.

Keys are compared in constant time: the presented key is hashed (SHA-256),
and its digest is compared with ``hmac.compare_digest`` against the digest of
every configured key, with no early exit, so neither the time taken nor the
answer tells which keys exist or how close a guess came. The secrets are read
once at start-up (inline, from an environment variable, or from a file) and
kept only as digests; no log line, audit line, /health or ``sprintd config``
shows one.

The fast path takes a protected snapshot only when the guard admits it there
(``fastpath.guarded``); anything else goes to the h11 path, which gives the
401, 403 or 429 and writes the audit line. So a refusal is always answered
by one piece of code.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import os
import socket
import stat
import time
from collections.abc import Callable, Mapping, Sequence

from .access import ApiKeySettings, AuthSettings, RateLimit, Scope, check_secret
from .audit import AuditLog
from .http import HTTPError
from .ratelimit import Bucket, Limiter
from .settings import ConfigError
from .tiers import Tier

__all__ = ["Guard", "Key", "load_keys", "presented"]

log = logging.getLogger("sprintd.auth")

# The one answer to a missing, unknown or malformed credential.
UNAUTHORIZED_MESSAGE = "a valid API key is required: send X-API-Key or Authorization: Bearer"
WWW_AUTHENTICATE = ((b"www-authenticate", b'Bearer realm="sprintd"'),)
CREDENTIAL_HEADERS = frozenset({b"x-api-key", b"authorization"})
# An audit line quotes at most this much of a request's path.
MAX_AUDIT_PATH = 256


class Key:
    """A configured API key, as the hot path needs it."""

    __slots__ = (
        "bucket",
        "digest",
        "forbidden",
        "limit",
        "logged_at",
        "name",
        "rate_limited",
        "scopes",
        "tier",
        "trips",
    )

    def __init__(
        self,
        name: str,
        digest: bytes,
        tier: Tier,
        scopes: frozenset[str],
        limit: RateLimit,
        bucket: Bucket,
    ) -> None:
        self.name = name
        self.digest = digest
        self.tier = tier
        self.scopes = scopes
        self.limit = limit
        self.bucket = bucket
        # Rate-limit trips since the last audit line about them, and when that was.
        self.trips = 0
        self.logged_at = -float("inf")
        # Its refusals since start (403, 429), for /metrics.
        self.forbidden = 0
        self.rate_limited = 0


def presented(name: bytes, value: bytes) -> bytes | None:
    """The key a credential header carries; ``name`` lower-case, ``value`` stripped.

    ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (the scheme in
    any case); anything else carries none.
    """
    if name == b"x-api-key":
        return value or None
    scheme, _, token = value.partition(b" ")
    if scheme.lower() != b"bearer":
        return None
    return token.lstrip(b" ") or None


def _digest(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()


def _secret(name: str, cfg: ApiKeySettings, environ: Mapping[str, str]) -> str:
    """The secret of ``[auth.keys.NAME]`` from its one source.

    Raises:
        ConfigError: the variable or file is missing, or holds no usable key.
    """
    if cfg.key is not None:
        return cfg.key.get_secret_value()
    if cfg.key_env is not None:
        field, shown = "key_env", cfg.key_env
        value = environ.get(cfg.key_env)
        if value is None:
            raise ConfigError(f"auth.keys.{name}.key_env = {shown!r}: no such environment variable")
    else:
        assert cfg.key_file is not None  # the model holds exactly one source
        field, shown = "key_file", str(cfg.key_file)
        try:
            value = cfg.key_file.read_text("utf-8").strip()
            mode = cfg.key_file.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(
                f"auth.keys.{name}.key_file = {shown!r}: cannot read it: {reason}"
            ) from None
        if mode & stat.S_IROTH:
            log.warning("auth.keys.%s.key_file %s is readable by every user", name, shown)
    problem = check_secret(value)
    if problem is not None:
        raise ConfigError(f"auth.keys.{name}.{field} = {shown!r}: {problem}")
    return value


def load_keys(
    settings: AuthSettings, limiter: Limiter, environ: Mapping[str, str] | None = None
) -> tuple[Key, ...]:
    """Every configured key with its digest and bucket.

    Raises:
        ConfigError: a key cannot be read, or two names share one key.
    """
    environ = os.environ if environ is None else environ
    keys: list[Key] = []
    for name, cfg in settings.keys.items():
        digest = _digest(_secret(name, cfg, environ).encode("ascii"))
        for other in keys:
            if hmac.compare_digest(digest, other.digest):
                raise ConfigError(f"auth.keys.{other.name} and auth.keys.{name} hold the same key")
        limit = settings.limits.of(cfg.tier)
        keys.append(
            Key(name, digest, cfg.tier, frozenset(cfg.scopes), limit, limiter.bucket(name, limit))
        )
    return tuple(keys)


def _peer(sock: socket.socket | None) -> str | None:
    if sock is None:
        return None
    try:
        host, port = sock.getpeername()[:2]
    except (OSError, ValueError):
        return None
    return f"{host}:{port}"


class Guard:
    """Admits requests to protected routes; counts and audits the refusals."""

    def __init__(
        self,
        keys: Sequence[Key],
        audit: AuditLog,
        sample_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = tuple(keys)
        self.audit = audit
        self.sample_interval = sample_interval
        self.clock = clock
        # 401s have no key to count them on; 403s and 429s count on theirs.
        self.unauthorized = 0

    @property
    def denied(self) -> dict[str, int]:
        """Refusals since start, by reason: unauthorized, forbidden, rate_limited."""
        return {
            "unauthorized": self.unauthorized,
            "forbidden": sum(key.forbidden for key in self.keys),
            "rate_limited": sum(key.rate_limited for key in self.keys),
        }

    def identify(self, secret: bytes | None) -> Key | None:
        """The key whose secret this is, compared against every key in constant time."""
        if secret is None:
            return None
        digest = _digest(secret)
        found = None
        for key in self.keys:
            if hmac.compare_digest(digest, key.digest):
                found = key
        return found

    def admit(
        self,
        headers: Sequence[tuple[bytes, bytes]],
        scope: Scope,
        method: bytes,
        path: bytes,
        sock: socket.socket | None,
    ) -> Key | HTTPError:
        """The key that may make this request, or the error to answer instead."""
        secret = None
        for name, value in headers:
            if name in CREDENTIAL_HEADERS:
                secret = presented(name, value)
                break
        key = self.identify(secret)
        if key is None:
            self.unauthorized += 1
            reason = "no_key" if secret is None else "unknown_key"
            self._failed(reason, None, scope, method, path, sock)
            return HTTPError(401, "unauthorized", UNAUTHORIZED_MESSAGE, WWW_AUTHENTICATE)
        wait = key.bucket.take()
        if wait:
            key.rate_limited += 1
            self._tripped(key, method, path, sock)
            return HTTPError(
                429,
                "rate_limited",
                f"over this key's limit of {key.limit.rate:g} requests/s "
                f"(burst {key.limit.burst}); retry after {math.ceil(wait)} s",
                retry_after=wait,
            )
        if scope not in key.scopes:
            key.forbidden += 1
            self._failed("missing_scope", key, scope, method, path, sock)
            return HTTPError(403, "forbidden", f"this key does not have the {scope!r} scope")
        return key

    def _failed(
        self,
        reason: str,
        key: Key | None,
        scope: Scope,
        method: bytes,
        path: bytes,
        sock: socket.socket | None,
    ) -> None:
        self.audit.emit(
            "auth_failed",
            reason=reason,
            key=None if key is None else key.name,
            scope=scope,
            method=method.decode("latin-1"),
            path=path[:MAX_AUDIT_PATH].decode("latin-1"),
            peer=_peer(sock),
        )

    def _tripped(self, key: Key, method: bytes, path: bytes, sock: socket.socket | None) -> None:
        """Sampled: one line per key per ``sample_interval``, counting the trips."""
        key.trips += 1
        now = self.clock()
        if now - key.logged_at < self.sample_interval:
            return
        self.audit.emit(
            "rate_limited",
            key=key.name,
            tier=key.tier,
            trips=key.trips,
            method=method.decode("latin-1"),
            path=path[:MAX_AUDIT_PATH].decode("latin-1"),
            peer=_peer(sock),
        )
        key.trips = 0
        key.logged_at = now
