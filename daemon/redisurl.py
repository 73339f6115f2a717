"""Redis URLs: the one place that reads them, for the settings that validate
``[redis] url`` and for the client that connects to it."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["RedisAddress", "parse_url"]


@dataclass(frozen=True)
class RedisAddress:
    """Where a Redis server is and how to log in: ``parse_url``'s result."""

    host: str
    port: int
    db: int
    password: str | None = None
    username: str | None = None


def parse_url(url: str) -> RedisAddress:
    """``redis://[[user]:password@]host[:port][/db]`` as an address.

    Raises:
        ValueError: another scheme, a bad port or database number.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"{url!r}: expected redis://host:port/db")
    if not parts.hostname:
        raise ValueError(f"{url!r}: no host")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"{url!r}: the database is a number (redis://host:port/0)")
    return RedisAddress(
        host=parts.hostname,
        port=port,
        db=int(path or 0),
        password=unquote(parts.password) if parts.password else None,
        username=unquote(parts.username) if parts.username else None,
    )
