"""The ``[asgi]`` settings section: which application, where it is mounted, who may call it."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import field_validator

from sprintd import PluginSection

__all__ = ["AsgiSection"]

_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")
_MOUNT = re.compile(r"/|(/[A-Za-z0-9._~!$&'()*+,;=:@%-]+)+")


class AsgiSection(PluginSection):
    """``[asgi]``: the application (``module:attribute``), its mount point, the
    scope a request needs with ``[auth]`` on, and its lifespan protocol."""

    # Unset: nothing is mounted.
    app: str | None = None
    # The application answers this path and every path under it that no
    # plugin's route or snapshot takes; it sees the mount as its root_path.
    mount: str = "/"
    # What a request needs when [auth] is enabled, as any route declares it;
    # "admin" routes answer whole, for their audit line, so it is not offered.
    scope: Literal["open", "read", "trade"] = "read"
    # "auto": run the lifespan protocol, and go on without it when the
    # application raises before it asks for the start-up event (uvicorn's
    # default); "off": never.
    lifespan: Literal["auto", "off"] = "auto"

    @field_validator("app")
    @classmethod
    def _app(cls, value: str | None) -> str | None:
        if value is not None and not _TARGET.fullmatch(value):
            raise ValueError("give the application as 'module:attribute', e.g. 'main:app'")
        return value

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str) -> str:
        if not _MOUNT.fullmatch(value):
            raise ValueError("a path from '/', without a trailing '/', e.g. '/api'")
        return value
