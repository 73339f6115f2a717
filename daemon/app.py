"""The application one worker serves: settings, plugins and what they contributed.

Start-up reads top to bottom: the settings are loaded (``settings``), the tier's
tuning applied (``tuning``), then ``App.setup`` asks every plugin, in hook
order, for its routes, snapshots, listeners, health checks, metrics and
background tasks. The server (``server``) only ever reads what is built here.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import pluggy

from .audit import AuditLog
from .auth import Guard, load_keys
from .http import RequestIds
from .journal import Journal, JournalError, open_daemon_journal
from .latency import Recorder
from .logs import AccessLog
from .peers import Peers
from .ratelimit import Limiter, LocalLimiter, RedisLimiter
from .redis import Redis
from .routing import Route, Router
from .settings import ConfigError, LoadedSettings, Settings
from .snapshots import Snapshot, SnapshotSpec, SnapshotTable
from .tiers import TierProfile
from .tuning import Tuner

if TYPE_CHECKING:
    from .server.state import Conn

__all__ = [
    "App",
    "BackgroundTask",
    "CheckStatus",
    "HealthCheck",
    "Listener",
    "Route",
    "SnapshotSpec",
]

CheckStatus = Literal["pass", "warn", "fail"]
BackgroundTask = Callable[["App"], Awaitable[None]]


@dataclass(frozen=True)
class HealthCheck:
    """A component /health reports on: ``check()`` returns (status, details)."""

    name: str
    check: Callable[[], tuple[CheckStatus, dict[str, Any]]]


@dataclass(frozen=True)
class Listener:
    """An extra port: ``serve`` serves one connection (``conn.sock``, connected,
    non-blocking, and ``conn.buf``, the read buffer) until it ends, keeping
    ``conn.state`` for the server's timeouts and returning once
    ``conn.closing`` is set; ``server.framed.framed_listener`` does all that
    for a framed protocol. The server closes the socket."""

    name: str
    host: str
    port: int
    serve: Callable[[Conn], Awaitable[None]]


# (method, target, headers, body, keep_alive) -> the encoded answer, or an
# awaitable of it.
Forward = Callable[[bytes, bytes, list[tuple[bytes, bytes]], bytes, bool], bytes | Awaitable[bytes]]
# (connection, method, target, headers, body) -> what to send first: hands a
# request that switches protocols to the owner with its connection, whole.
Relay = Callable[["Conn", bytes, bytes, list[tuple[bytes, bytes]], bytes], bytes]


@dataclass
class App:
    """What one worker serves: the object every hook receives.

    Plugins read ``settings`` (with their own section through
    ``settings.section``), ``profile`` (the tier) and ``worker_index``; they
    use ``journal`` and ``redis`` (opened on first use), ``recorder(name)``
    for latency, ``snapshots`` to publish fast-path answers and ``audit``
    for security events. ``setup`` fills ``router``, ``snapshots``,
    ``listeners``, ``health_checks``, ``collectors`` and ``background`` from
    the hooks; the server only reads them. ``peers`` reaches the other
    workers of the daemon, when there are others. ``draining`` turns true on
    SIGTERM; ``bound`` holds each listener's address once it is bound.
    """

    loaded: LoadedSettings
    pm: pluggy.PluginManager
    tuner: Tuner
    worker_index: int = 0
    router: Router = field(default_factory=Router)
    snapshots: SnapshotTable = field(default_factory=SnapshotTable)
    recorders: dict[str, Recorder] = field(default_factory=dict)
    health_checks: list[HealthCheck] = field(default_factory=list)
    collectors: list[Any] = field(default_factory=list)
    listeners: list[Listener] = field(default_factory=list)
    background: list[BackgroundTask] = field(default_factory=list)
    # Filled in by the server once it is bound: name -> (host, port).
    bound: dict[str, tuple[str, int]] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    pid: int = field(default_factory=os.getpid)
    draining: bool = False
    # The X-Request-IDs this worker makes (``http.RequestIds``).
    request_ids: RequestIds = field(default_factory=RequestIds)
    # The access log, started, when ``[log] access`` asks for one.
    access_log: AccessLog | None = None
    # Why this worker must not be sent traffic, by reason code (a journal
    # that cannot write, a halted plugin): /readyz fails while any is here.
    unready: dict[str, str] = field(default_factory=dict)
    # Called when ``unready`` changes (the health plugin republishes /readyz).
    on_readiness: list[Callable[[], None]] = field(default_factory=list)
    # With workers > 1: this worker's channel to its siblings (``peers``),
    # so that what describes the daemon (/metrics) is answered for all of them.
    peers: Peers | None = None
    # With workers > 1, the plugins that keep their state in one process
    # (``server.owner``): registered in the owner worker alone.
    local_plugins: tuple[str, ...] = ()
    # In every other worker: sends a request its routes do not take to the
    # owner, and gives the owner's answer (set by the server).
    forward: Forward | None = field(default=None, init=False, repr=False)
    # ... and a request to switch protocols (a WebSocket), with its connection.
    relay: Relay | None = field(default=None, init=False, repr=False)
    # The listeners of ``local_plugins``, by name: bound in the owner alone.
    owner_listeners: set[str] = field(default_factory=set, init=False, repr=False)
    # The worker passes the audit log it started (and wrote the start-up
    # events to); without one the app makes its own, never started, which
    # keeps its events queued for in-process tests to read.
    audit_log: InitVar[AuditLog | None] = None
    audit: AuditLog = field(init=False, repr=False)
    # Set by setup() when [auth] is enabled; the server asks it before it
    # answers anything that is not open.
    guard: Guard | None = field(default=None, init=False, repr=False)
    _journal: Journal | None = field(default=None, init=False, repr=False)
    _redis: Redis | None = field(default=None, init=False, repr=False)

    def __post_init__(self, audit_log: AuditLog | None) -> None:
        self.audit = audit_log or AuditLog(self.settings.audit, self.worker_index)

    @property
    def settings(self) -> Settings:
        return self.loaded.settings

    @property
    def profile(self) -> TierProfile:
        return self.loaded.profile

    @property
    def journal(self) -> Journal:
        """The daemon's write-ahead journal (``<data_dir>/journal``), opened on first use.

        Ask for it in ``sprintd_configure`` (to load a snapshot and replay).
        The first use opens it (a scan that cuts a torn tail, logged), adds
        its writer to the background tasks and a ``journal`` health check;
        teardown closes it after ``sprintd_unconfigure``.

        Raises:
            ConfigError: it cannot be opened (damage, held by another process, I/O).
            RuntimeError: first asked for once serving has begun (too late to
                start its writer).
        """
        if self._journal is None:
            if self.bound:
                raise RuntimeError("app.journal: first use it in sprintd_configure")
            try:
                journal = open_daemon_journal(self.settings.data_dir, self.settings.journal)
            except (JournalError, OSError) as exc:
                raise ConfigError(f"journal: {exc}") from None
            self._journal = journal
            journal.on_availability.append(functools.partial(self._journal_changed, journal))
            self._journal_changed(journal)
            self.background.append(_run_journal)
            self.health_checks.append(
                HealthCheck("journal", functools.partial(_journal_check, journal))
            )
        return self._journal

    @property
    def journal_opened(self) -> Journal | None:
        """The journal if a plugin has opened it (``journal`` opens it), else None."""
        return self._journal

    def set_unready(self, reason: str, message: str | None) -> None:
        """Fail /readyz with ``reason`` (a code) and ``message``; None clears it."""
        if message is None:
            if self.unready.pop(reason, None) is None:
                return
        else:
            self.unready[reason] = message
        for changed in self.on_readiness:
            changed()

    def _journal_changed(self, journal: Journal) -> None:
        self.set_unready("journal_unavailable", journal.unavailable)

    @property
    def redis(self) -> Redis:
        """This worker's connection to ``[redis] url``, shared by every plugin.

        Ask for it in ``sprintd_configure``. The first use makes the client
        (``sprintd.redis``; it connects once serving begins), adds its
        ``run()`` to the background tasks and a ``redis`` health check.

        Raises:
            ConfigError: ``[redis] url`` is not set.
            RuntimeError: first asked for once serving has begun.
        """
        if self._redis is None:
            if self.bound:
                raise RuntimeError("app.redis: first use it in sprintd_configure")
            settings = self.settings.redis
            if settings.url is None:
                raise ConfigError("redis.url: not set, and a plugin needs Redis")
            redis = self._redis = Redis(settings.url, connect_timeout=settings.connect_timeout)
            self.background.append(_run_redis)
            self.health_checks.append(HealthCheck("redis", functools.partial(_redis_check, redis)))
        return self._redis

    def recorder(self, name: str) -> Recorder:
        """The latency recorder of a route name, made on first use."""
        found = self.recorders.get(name)
        if found is None:
            found = self.recorders[name] = Recorder(name)
        return found

    def add_route(self, route: Route) -> None:
        self.router.add(route, self.recorder(route.name or route.path))

    def add_snapshot(self, spec: SnapshotSpec) -> Snapshot:
        return self.snapshots.register(
            spec.path,
            spec.body,
            self.recorder(spec.path),
            spec.content_type,
            spec.status,
            spec.scope,
        )

    def _limiter(self) -> Limiter:
        """Local buckets, or buckets shared through ``[redis] url`` with their lease task."""
        if not self.settings.auth.shared_limits:
            return LocalLimiter()
        limiter = RedisLimiter(self.redis)
        self.background.append(functools.partial(_run_limiter, limiter))
        self.health_checks.append(HealthCheck("rate_limits", limiter.check))
        return limiter

    def setup(self) -> None:
        """Build the guard, then ask every plugin for its contributions, in hook order.

        Raises:
            ConfigError: an API key cannot be read, or a plugin's configure failed.
        """
        auth = self.settings.auth
        if auth.enabled:
            keys = load_keys(auth, self._limiter())
            self.guard = Guard(keys, self.audit, self.settings.audit.sample_interval)
        hook = self.pm.hook
        hook.sprintd_configure(app=self)
        for routes in hook.sprintd_routes(app=self):
            for route in routes:
                self.add_route(route)
        for specs in hook.sprintd_snapshots(app=self):
            for spec in specs:
                self.add_snapshot(spec)
        # Called plugin by plugin, in the hook's order: a port of a plugin
        # that keeps its state here is this worker's alone.
        for impl in reversed(hook.sprintd_listeners.get_hookimpls()):
            listeners = cast(Sequence[Listener], impl.function(app=self))
            self.listeners.extend(listeners)
            if impl.plugin_name in self.local_plugins:
                self.owner_listeners.update(listener.name for listener in listeners)
        for checks in hook.sprintd_health_checks(app=self):
            self.health_checks.extend(checks)
        for collectors in hook.sprintd_metrics(app=self):
            self.collectors.extend(collectors)
        for tasks in hook.sprintd_background_tasks(app=self):
            self.background.extend(tasks)

    def teardown(self) -> None:
        try:
            self.pm.hook.sprintd_unconfigure(app=self)
        finally:
            if self._journal is not None:
                self._journal.close()


async def _run_journal(app: App) -> None:
    await app.journal.run()


async def _run_limiter(limiter: RedisLimiter, app: App) -> None:
    await limiter.run()


async def _run_redis(app: App) -> None:
    await app.redis.run()


def _redis_check(redis: Redis) -> tuple[CheckStatus, dict[str, Any]]:
    # The address without the URL's password.
    where = f"{redis.address.host}:{redis.address.port}/{redis.address.db}"
    details: dict[str, Any] = {"address": where, "connects": redis.connects}
    if not redis.connected:
        details["output"] = "not connected"
        return "fail", details
    return "pass", details


def _journal_check(journal: Journal) -> tuple[CheckStatus, dict[str, Any]]:
    """Fail once the journal failed (for good); warn while it refuses writes for want
    of space (reads go on, and it recovers by itself)."""
    details: dict[str, Any] = {
        "fsync": journal.policy,
        "last_seq": journal.last_seq,
        "synced_seq": journal.synced_seq,
        "writable": journal.writable,
        "disk_bytes": journal.disk_bytes,
        "segments": journal.segment_count,
        "last_checkpoint_seq": journal.last_checkpoint_seq,
    }
    if journal.failed is not None:
        details["output"] = journal.unavailable
        return "fail", details
    if journal.unavailable is not None:
        details["output"] = journal.unavailable
        return "warn", details
    return "pass", details
