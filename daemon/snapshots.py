"""Fast-path snapshots: pre-encoded responses swapped atomically.

A snapshot is what a body-less GET or HEAD of one exact path answers: status
line, headers and body encoded once into a bytes object. A publisher replaces
the bytes with ``publish``; the fast path reads them with one attribute load,
so a reader sees the old response or the new one, never a mix. This is the
seed system's atomic-snapshot pattern, made safe by the event loop: nothing
awaits between the two stores of a publish.

The table is keyed by the whole request line (``GET /livez HTTP/1.1``), so the
fast path finds method, target and version with one dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .access import Access
from .http import JSON, encode_response
from .latency import Recorder

__all__ = ["FastEntry", "Snapshot", "SnapshotSpec", "SnapshotTable"]


@dataclass(frozen=True)
class SnapshotSpec:
    """A snapshot a plugin asks for at start-up."""

    path: str
    body: bytes
    content_type: bytes = JSON
    status: int = 200
    # What a request needs with [auth] enabled, as for a Route.
    scope: Access = "read"


class FastEntry:
    """What the fast path needs for one request line."""

    __slots__ = ("recorder", "response", "scope", "status")

    def __init__(self, recorder: Recorder, scope: Access) -> None:
        self.recorder = recorder
        self.response = b""
        self.status = 200
        self.scope = scope


class Snapshot:
    """One fast-path response: a path's body pre-encoded for GET and HEAD,
    swapped whole by ``publish``."""

    __slots__ = ("_get", "_head", "body", "changed", "content_type", "path", "scope", "status")

    def __init__(
        self,
        path: str,
        body: bytes,
        content_type: bytes,
        status: int,
        recorder: Recorder,
        scope: Access = "read",
    ) -> None:
        self.path = path
        self.content_type = content_type
        self.scope = scope
        self._get = FastEntry(recorder, scope)
        self._head = FastEntry(recorder, scope)
        self.body = body
        self.status = status
        # Told of every publish while the table is watched (``SnapshotTable.watch``).
        self.changed: Callable[[Snapshot], None] | None = None
        self._encode()

    @property
    def recorder(self) -> Recorder:
        return self._get.recorder

    def publish(self, body: bytes, status: int | None = None) -> None:
        """Swap in a new body (and status); readers see old or new, whole."""
        self.body = body
        if status is not None:
            self.status = status
        self._encode()
        if self.changed is not None:
            self.changed(self)

    def response(self, *, head: bool) -> bytes:
        return (self._head if head else self._get).response

    def _encode(self) -> None:
        get = encode_response(self.status, self.body, self.content_type)
        # HEAD is GET without the body (which the encoder puts last): a slice
        # costs less than a second encoding, on every publish.
        head = get[: len(get) - len(self.body)] if self.body else get
        self._get.status = self._head.status = self.status
        self._get.response = get
        self._head.response = head


class SnapshotTable:
    """Every fast-path snapshot of the worker, by path and by request line.

    ``lines`` maps a complete request line (``GET /livez HTTP/1.1``) to its
    entry: the fast path's one lookup. ``register`` adds a snapshot (at
    start-up or later), ``get(path)`` finds one to ``publish`` a new body,
    and ``refresh`` re-encodes every response when the Date header ticks.
    """

    def __init__(self) -> None:
        self._by_path: dict[str, Snapshot] = {}
        # Request line -> entry: the fast path's only lookup.
        self.lines: dict[bytes, FastEntry] = {}
        self._watcher: Callable[[Snapshot], None] | None = None

    def watch(self, changed: Callable[[Snapshot], None]) -> None:
        """Call ``changed`` with every snapshot registered or published from
        now on (the owner of plugins' state pushes them to its siblings)."""
        self._watcher = changed
        for snap in self._by_path.values():
            snap.changed = changed

    def register(
        self,
        path: str,
        body: bytes,
        recorder: Recorder,
        content_type: bytes = JSON,
        status: int = 200,
        scope: Access = "read",
    ) -> Snapshot:
        if path in self._by_path:
            raise ValueError(f"snapshot {path!r} is registered twice")
        if not path.startswith("/") or any(c <= " " or c > "~" for c in path):
            raise ValueError(f"snapshot path {path!r} must be visible ASCII starting with /")
        snap = Snapshot(path, body, content_type, status, recorder, scope)
        self._by_path[path] = snap
        target = path.encode("ascii")
        self.lines[b"GET " + target + b" HTTP/1.1"] = snap._get
        self.lines[b"HEAD " + target + b" HTTP/1.1"] = snap._head
        if self._watcher is not None:
            snap.changed = self._watcher
            self._watcher(snap)
        return snap

    def get(self, path: str) -> Snapshot | None:
        return self._by_path.get(path)

    def __iter__(self) -> Iterator[Snapshot]:
        return iter(self._by_path.values())

    def refresh(self) -> None:
        """Re-encode every snapshot, after the Date header ticked."""
        for snap in self._by_path.values():
            snap._encode()
