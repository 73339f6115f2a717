"""Settings: one pydantic-settings model, built from layers with provenance.

Precedence, lowest first::

    built-in defaults < tier profile < config file < environment < command line

The environment has two spellings: ``SPRINTD_<SECTION>__<KEY>`` for everything,
and the seed system's documented names (``TIER``, ``GC_PERCENT`` ...) as
aliases; the ``SPRINTD_`` name wins when both are set.

Each layer is kept as the plain dict it contributed, so ``sprintd config`` can
say where every effective value came from and a validation error can name the
field, the value and the layer in one line. Plugins contribute their own
sections (see ``hookspecs.sprintd_settings_sections``); the model is extended
with them before validation, so a typo in a plugin's section fails as loudly as
one in the core's.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from pydantic import (
    BaseModel,
    Field,
    ValidationError,
    create_model,
    field_validator,
)
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from .access import AuthSettings
from .redisurl import parse_url
from .sections import PluginSection, Section
from .tiers import TIERS, Tier, TierProfile, load_profile

__all__ = [
    "EXIT_CONFIG",
    "AuditSettings",
    "ConfigError",
    "JournalSettings",
    "Layer",
    "LoadedSettings",
    "LogSettings",
    "RedisSettings",
    "ServerSettings",
    "Settings",
    "TuningSettings",
    "load_settings",
    "reloaded",
]

ENV_PREFIX = "SPRINTD_"
# Names the environment may carry that are not settings: the config file, and
# the install's choice of the compiled build (setup.py), which a shell may
# still export when the daemon starts.
ENV_NOT_SETTINGS = frozenset({"SPRINTD_CONFIG", "SPRINTD_COMPILE"})
# The seed system's environment names and the settings they set.
SEED_ENV_ALIASES: Mapping[str, tuple[str, ...]] = {
    "TIER": ("tier",),
    "GC_PERCENT": ("tuning", "gc_percent"),
    "MAX_CPU_CORES": ("tuning", "max_cpu_cores"),
    "HIGH_PRIORITY": ("tuning", "high_priority"),
    "LOCK_OS_THREAD": ("tuning", "lock_os_thread"),
    "PREALLOC_BUFFERS": ("tuning", "prealloc_buffers"),
    "OPTIMIZE_SYSTEM": ("tuning", "optimize_system"),
}
# The seed's JSON files call the tuning section this.
SEED_TUNING_KEY = "performance_optimizations"


class ServerSettings(Section):
    """``[server]``: where and how the HTTP server listens, its timeouts and limits."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1, le=256)
    backlog: int = Field(1024, ge=1)
    # A keep-alive connection with no request under way is closed after this.
    keepalive_timeout: float = Field(5.0, gt=0)
    # A request's head must arrive whole within this (slow-loris).
    header_timeout: float = Field(10.0, gt=0)
    # A request's body must arrive, and a response be taken, within this.
    body_timeout: float = Field(30.0, gt=0)
    # h11's own default incomplete-event limit; larger heads get 431.
    max_header_bytes: int = Field(16 * 1024, ge=1024)
    max_body_bytes: int = Field(1024 * 1024, ge=0)
    # A binary (framed) port's connection with no frame under way is closed
    # after this. Longer than keepalive_timeout: a binary session is meant to
    # stay open between bursts (a client keeps it with an empty frame now and
    # then); a frame begun and replies not taken get body_timeout.
    framed_idle_timeout: float = Field(300.0, gt=0)
    # Pre-stop delay: after SIGTERM, /readyz answers 503 for this long while
    # everything is still served and the listeners stay open, so a load
    # balancer sees the 503 and stops sending first; then the drain begins.
    # 0 (no load balancer, a developer's Ctrl-C): the drain begins at once.
    # Behind one, set it above the balancer's check interval times its
    # unhealthy threshold (packaging/README.md).
    drain_delay: float = Field(0.0, ge=0, le=300)
    # In-flight requests get this long after the drain begins (after
    # drain_delay) before the loop is cancelled.
    drain_timeout: float = Field(10.0, ge=0)
    # Off sends every request through h11: to rule the fast path out, or to
    # measure what it saves.
    fast_path: bool = True
    # Off sends every request the fast path declines through h11, which the
    # strict byte-level parser (server.parser) otherwise takes when it is sure.
    strict_parser: bool = True
    # A Unix socket to serve HTTP on too, beside host:port (a front proxy on
    # the same host: packaging/README.md). Made 0660; a stale one from a
    # killed daemon is replaced, one a live daemon serves stops start-up.
    uds: Path | None = None

    @field_validator("uds")
    @classmethod
    def _uds(cls, value: Path | None) -> Path | None:
        # sockaddr_un holds 107 bytes and a NUL.
        if value is not None and len(os.fsencode(value)) > 107:
            raise ValueError("a Unix socket path is at most 107 bytes")
        return value

    def plugin_port(self, given: int | None, offset: int, field: str) -> int:
        """A plugin's port: ``given`` (its ``field``) if set, else this HTTP
        port plus ``offset``.

        Two instances on one host told apart by ``--port`` alone then get
        distinct binary ports too (8080 and 8081 give 9080 and 9081 for an
        offset of 1000). Port 0 stays 0: a free one.

        Raises:
            ConfigError: the sum is past 65535 (``field`` must then be set).
        """
        if given is not None:
            return given
        if self.port == 0:
            return 0
        port = self.port + offset
        if port > 65535:
            raise ConfigError(
                f"{field} is unset, and server.port {self.port} + {offset} is past 65535: set it"
            )
        return port


class TuningSettings(Section):
    """``[tuning]``: the process knobs a tier turns (GC policy, cores, priority, memory)."""

    # default: CPython's automatic GC. tuned: start-up heap frozen, a small
    # middle generation. manual: automatic GC off, small young collections
    # driven by the daemon, full ones in idle time. See sprintd.gcpolicy.
    gc_mode: Literal["default", "tuned", "manual"] = "default"
    # Go's GOGC, kept in meaning: a full collection runs once the heap
    # (pymalloc's allocated blocks) has grown by this percentage since the last.
    gc_percent: int = Field(100, ge=1, le=10_000)
    # 0: every core the process may use; N: the first N of them.
    max_cpu_cores: int = Field(0, ge=0)
    high_priority: bool = False
    # The nice value that high_priority asks for.
    nice: int = Field(-10, ge=-20, le=19)
    # SCHED_FIFO for the loop thread; only where the kernel permits it.
    realtime: bool = False
    # Go's LockOSThread, in CPython terms: the loop's thread is pinned to the
    # worker's core while helper threads may use the rest of the set.
    lock_os_thread: bool = False
    lock_memory: bool = False
    prealloc_buffers: bool = False
    buffer_count: int = Field(256, ge=1)
    buffer_size: int = Field(64 * 1024, ge=4096)
    # The interpreter's switch interval and the open-file limit.
    optimize_system: bool = False
    switch_interval_ms: float = Field(1.0, gt=0)


class JournalSettings(Section):
    """The write-ahead journal (``sprintd.journal``); its module docstring says
    what each policy can lose to a process crash and to a power loss."""

    # always: an append returns once its batch is fsynced (group commit).
    # interval: once written (a kill -9 loses nothing acknowledged); fsynced
    # every fsync_interval_ms. os: once written; the kernel writes it back.
    fsync: Literal["always", "interval", "os"] = "interval"
    fsync_interval_ms: float = Field(10.0, gt=0, le=60_000)
    # A new segment file starts when the next batch would pass this size;
    # each is preallocated, and the next one is held ahead.
    segment_bytes: int = Field(64 * 1024 * 1024, ge=1024 * 1024)
    # Checkpoint (snapshot every stateful plugin, then delete the segments no
    # snapshot needs) after this many records or bytes: the data directory
    # stays about twice this, whatever the uptime, and a restart replays at
    # most this much. A record may hold many commands (one read of the
    # order-entry port's orders is one record), so the bytes bound the replay
    # of a busy binary port: 64 MB is about a million orders.
    checkpoint_records: int = Field(100_000, ge=1)
    checkpoint_bytes: int = Field(64 * 1024 * 1024, ge=64 * 1024)
    # Writes are refused (503 journal_unavailable) while the file system has
    # less free than this: room for snapshots, and a margin before it is full.
    reserve_bytes: int = Field(64 * 1024 * 1024, ge=0)
    # How often a journal that cannot write looks for room again (and the
    # Retry-After it suggests).
    probe_interval_ms: float = Field(1000.0, ge=10, le=60_000)


# What an API key may be granted, and what a route or snapshot may ask of
# one: a scope, or "open" for no key at all.
class AuditSettings(Section):
    """The audit log (``sprintd.audit``): one JSON line per security event."""

    enabled: bool = True
    # None: standard output, for systemd's journal. A file rotates by size.
    file: Path | None = None
    max_bytes: int = Field(10 * 1024 * 1024, ge=4096)
    # Rotated files kept beside the live one (file.1 is the newest).
    backups: int = Field(5, ge=0, le=100)
    # Events waiting for the writer; past this they are counted and dropped,
    # so a flood of failures never holds a request up.
    queue_size: int = Field(10_000, ge=1)
    # Rate-limit trips are sampled: at most one line per key this often,
    # carrying how many trips it stands for.
    sample_interval: float = Field(1.0, gt=0)


class LogSettings(Section):
    """``[log]``: the daemon's log lines and the access log (``sprintd.logs``)."""

    # text: one line per record, for a terminal. json: one object per line
    # (time, level, logger, message, worker, request_id when there is one).
    format: Literal["text", "json"] = "text"
    # false: no access log. "stdout", or a file that rotates by size: one
    # line per request (in the format above), written off the loop. With it
    # on, snapshots are served by dispatch, not the fast path (README).
    access: Literal[False, "stdout"] | Path = False
    access_max_bytes: int = Field(100 * 1024 * 1024, ge=4096)
    access_backups: int = Field(5, ge=0, le=100)
    # Requests waiting for the writer; past this they are counted and not logged.
    access_queue_size: int = Field(100_000, ge=1)

    @field_validator("access", mode="before")
    @classmethod
    def _access(cls, value: Any) -> Any:
        # From the environment or a flag, "false" is a string.
        if isinstance(value, str) and value.lower() in {"false", "off", "no", "0", ""}:
            return False
        if value is True or (isinstance(value, str) and value.lower() in {"true", "on", "yes"}):
            raise ValueError('give "stdout" or a file, or false')
        return value


class RedisSettings(Section):
    """The Redis that instances share (``sprintd.redis``); plugins that keep
    shared state there (payments, rate limits) read ``url`` from here."""

    # redis://host:port/db; None: no Redis, plugins keep their state locally.
    url: str | None = None
    # How long a command waits for a connection before it fails.
    connect_timeout: float = Field(2.0, gt=0)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None:
            parse_url(value)
        return value


S = TypeVar("S", bound=Section)


class Settings(BaseSettings):
    """The core's settings. Plugin sections are added by ``load_settings``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
        case_sensitive=False,
    )

    tier: Tier = "free"
    data_dir: Path = Path("sprintd-data")
    plugins: tuple[str, ...] = ()
    server: ServerSettings = ServerSettings()
    tuning: TuningSettings = TuningSettings()
    journal: JournalSettings = JournalSettings()
    auth: AuthSettings = AuthSettings()
    audit: AuditSettings = AuditSettings()
    log: LogSettings = LogSettings()
    redis: RedisSettings = RedisSettings()

    def section(self, name: str, kind: type[S]) -> S:
        """A plugin's section, typed as the plugin declared it."""
        value = getattr(self, name)
        if not isinstance(value, kind):
            raise TypeError(f"settings section {name!r} is {type(value).__name__}")
        return value


class ConfigError(Exception):
    """A configuration that cannot start: the message is one line for the user."""


# The exit status of a configuration that cannot start.
EXIT_CONFIG = 2


Path_ = tuple[str, ...]


@dataclass(frozen=True)
class Layer:
    """What one source contributed, and how a user spells its keys."""

    name: str
    values: dict[str, Any]
    spell: Callable[[Path_], str]

    def lookup(self, path: Path_) -> tuple[bool, Any]:
        node: Any = self.values
        for key in path:
            if not isinstance(node, dict) or key not in node:
                return False, None
            node = node[key]
        return True, node


@dataclass(frozen=True)
class LoadedSettings:
    """The effective settings, the tier profile they started from, and the layers
    they were merged from, so that ``sprintd config`` can say where each value came from."""

    settings: Settings
    profile: TierProfile
    # Lowest precedence first.
    layers: tuple[Layer, ...]

    def origin(self, path: Path_) -> str:
        """The layer an effective value came from, as the user would spell it."""
        for layer in reversed(self.layers):
            if layer.lookup(path)[0]:
                return layer.spell(path)
        return "default"

    def effective(self) -> Iterator[tuple[str, Any, str]]:
        """Every effective value as (dotted name, value, origin)."""
        for path, value in _leaves(self.settings.model_dump(mode="json")):
            yield ".".join(path), value, self.origin(path)


def _leaves(node: Mapping[str, Any], prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    """Every value under ``node`` with its path; an empty table sets nothing."""
    for key, value in node.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


def _set(tree: dict[str, Any], path: Path_, value: Any) -> None:
    for key in path[:-1]:
        node = tree.setdefault(key, {})
        if not isinstance(node, dict):
            # A lower layer put a value where a table belongs (``server = 5``
            # in a file under SPRINTD_SERVER__PORT): keep it, so validation
            # names it and its layer, instead of failing here.
            return
        tree = node
    tree[path[-1]] = value


def _merge(layers: tuple[Layer, ...]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for layer in layers:
        for path, value in _leaves(layer.values):
            _set(merged, path, value)
    return merged


# --- the layers, each read on its own ------------------------------------------


def _file_layer(path: str) -> Layer:
    try:
        text = Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"config file {path}: cannot read it: {reason}") from None
    try:
        if path.endswith(".json") or text.lstrip().startswith("{"):
            values = json.loads(text)
        else:
            values = tomllib.loads(text)
    except ValueError as exc:
        # JSONDecodeError and TOMLDecodeError are ValueErrors, and so is an
        # integer of more digits than int() converts.
        raise ConfigError(f"config file {path}: not valid JSON or TOML: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: nested too deeply to read") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path}: the top level must be a table or object")
    if SEED_TUNING_KEY in values:
        if "tuning" in values:
            raise ConfigError(f"config file {path}: both tuning and {SEED_TUNING_KEY} are set")
        values["tuning"] = values.pop(SEED_TUNING_KEY)

    def spell(key: Path_) -> str:
        return f"config file {path} ({'.'.join(key)})"

    return Layer(f"config file {path}", values, spell)


def _seed_env_layer(environ: Mapping[str, str]) -> Layer:
    values: dict[str, Any] = {}
    names: dict[Path_, str] = {}
    for name, path in SEED_ENV_ALIASES.items():
        if name in environ:
            _set(values, path, environ[name])
            names[path] = name
    return Layer(
        "environment (seed names)", values, lambda key: f"environment {_named(names, key)}"
    )


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping."""

    def __init__(self, model: type[Settings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(model)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Settings are case-insensitive, so keys are folded as the base class does.
        return {name.lower(): value for name, value in self._environ.items()}


def _env_layer(model: type[Settings], environ: Mapping[str, str]) -> Layer:
    values = _EnvSource(model, environ)()

    def spell(key: Path_) -> str:
        return f"environment {ENV_PREFIX}{'__'.join(key).upper()}"

    return Layer("environment", values, spell)


def _cli_layer(cli: Mapping[str, Any]) -> Layer:
    values: dict[str, Any] = {}
    flags: dict[Path_, str] = {}
    for flag, (path, value) in cli.items():
        if value is not None:
            _set(values, path, value)
            flags[path] = flag
    return Layer("command line", values, lambda key: f"command line {_named(flags, key)}")


def _named(names: Mapping[Path_, str], key: Path_) -> str:
    """How the user spelt ``key``, or everything they set under it."""
    if key in names:
        return names[key]
    return ", ".join(name for path, name in names.items() if path[: len(key)] == key)


def _tier_layer(profile: TierProfile) -> Layer:
    name = f"tier profile {profile.name}"
    return Layer(name, profile.settings, lambda _: name)


# --- validation ----------------------------------------------------------------


def _unknown_env(model: type[BaseModel], environ: Mapping[str, str]) -> str | None:
    """The first SPRINTD_ variable that names no setting, if any."""
    for name in sorted(environ):
        if not name.upper().startswith(ENV_PREFIX) or name.upper() in ENV_NOT_SETTINGS:
            continue
        node: type[BaseModel] | None = model
        # A table of named entries ([auth.keys.NAME]): the next part is a
        # name of the user's, and the part after it a field of the entry.
        entries: type[BaseModel] | None = None
        for part in name[len(ENV_PREFIX) :].lower().split("__"):
            if entries is not None:
                node, entries = entries, None
                continue
            field = node.model_fields.get(part) if node is not None else None
            if field is None:
                return name
            node, entries = _model_of(field.annotation), _entry_model_of(field.annotation)
    return None


def _model_of(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _entry_model_of(annotation: Any) -> type[BaseModel] | None:
    """The model of a ``dict[str, Model]`` field's values, else None."""
    if get_origin(annotation) is dict:
        return _model_of(get_args(annotation)[1])
    return None


# The fields of an API key an error message may show; anything else under
# [auth.keys.NAME] (the key, or a misspelt name for it) is shown masked.
SHOWN_KEY_FIELDS = frozenset({"key_env", "key_file", "tier", "scopes"})


def _redact(path: Path_, value: Any) -> Any:
    """``value`` at ``path`` with what could be an API key masked."""
    if path[:2] != ("auth", "keys"):
        return value
    if len(path) >= 4:
        return value if path[3] in SHOWN_KEY_FIELDS else "***"
    if isinstance(value, dict):
        return {k: _redact((*path, str(k)), v) for k, v in value.items()}
    return "***"


def _describe(error: Mapping[str, Any], layers: tuple[Layer, ...]) -> str:
    path = tuple(str(part) for part in error["loc"])
    origin = "default"
    # The layer that holds the very value refused, else the highest that
    # sets anything at or under the path.
    holding = [layer for layer in reversed(layers) if layer.lookup(path)[0]]
    exact = [layer for layer in holding if layer.lookup(path)[1] == error["input"]]
    if exact or holding:
        origin = (exact or holding)[0].spell(path)
    message = "unknown setting" if error["type"] == "extra_forbidden" else error["msg"]
    return f"{'.'.join(path)} = {_redact(path, error['input'])!r} from {origin}: {message}"


def extend(sections: Mapping[str, type[PluginSection]]) -> type[Settings]:
    """The settings model with the plugins' sections added."""
    clashes = sorted(set(sections) & set(Settings.model_fields))
    if clashes:
        raise ConfigError(f"plugin section {clashes[0]!r} clashes with a core setting")
    if not sections:
        return Settings
    fields: dict[str, Any] = {name: (kind, kind()) for name, kind in sections.items()}
    return create_model("Settings", __base__=Settings, **fields)


def read_plugin_names(
    config_path: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The ``plugins`` list, read before the plugins can extend the model."""
    upper = [_env_layer(Settings, os.environ if environ is None else environ)]
    if config_path:
        upper.insert(0, _file_layer(config_path))
    merged = _merge(tuple(upper))
    names = merged.get("plugins", ())
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"plugins = {names!r}: expected a list of module names")
    return tuple(names)


def load_settings(
    *,
    cli: Mapping[str, tuple[Path_, Any]] | None = None,
    config_path: str | None = None,
    sections: Mapping[str, type[PluginSection]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> LoadedSettings:
    """Read every layer, resolve the tier, validate, and keep the provenance.

    Args:
        cli: flag spelling -> (settings path, value); ``None`` values are unset.
        config_path: a JSON or TOML file, or ``None``.
        sections: plugin sections to validate alongside the core's.
        environ: the environment (``os.environ`` by default).

    Raises:
        ConfigError: one line naming the field, the value and the layer.
    """
    environ = os.environ if environ is None else environ
    model = extend(sections or {})
    upper: list[Layer] = []
    if config_path:
        upper.append(_file_layer(config_path))
    upper += [_seed_env_layer(environ), _env_layer(model, environ), _cli_layer(cli or {})]
    unknown = _unknown_env(model, environ)
    if unknown is not None:
        path = tuple(unknown[len(ENV_PREFIX) :].lower().split("__"))
        shown = _redact(path, environ[unknown])
        raise ConfigError(f"{unknown} = {shown!r} from environment: unknown setting")

    tier = _merge(tuple(upper)).get("tier", Settings.model_fields["tier"].default)
    if tier not in TIERS:
        probe = (Layer("default", {}, lambda _: "default"), *upper)
        error = {
            "loc": ("tier",),
            "input": tier,
            "type": "literal_error",
            "msg": f"unknown tier; expected one of {', '.join(TIERS)}",
        }
        raise ConfigError(_describe(error, probe))
    profile = load_profile(tier)
    layers = (_tier_layer(profile), *upper)
    try:
        settings = model.model_validate(_merge(layers))
    except ValidationError as exc:
        raise ConfigError(_describe(exc.errors()[0], layers)) from None
    return LoadedSettings(settings=settings, profile=profile, layers=layers)


# What SIGHUP can change in a running worker: limits and timeouts the server
# reads per connection or per request. The rest shapes the process (tuning,
# the port, the plugins) and waits for a restart.
RELOADABLE_SERVER = frozenset(
    {
        "keepalive_timeout",
        "header_timeout",
        "body_timeout",
        "framed_idle_timeout",
        "max_header_bytes",
        "max_body_bytes",
        "drain_delay",
        "drain_timeout",
        "fast_path",
        "strict_parser",
    }
)


def reloaded(
    current: LoadedSettings, fresh: LoadedSettings
) -> tuple[LoadedSettings, list[str], list[str]]:
    """The settings after a reload, the names applied, and those that need a restart."""
    # Python values, not JSON: a secret dumps masked in JSON, so a changed
    # API key would look unchanged.
    old = dict(_leaves(current.settings.model_dump()))
    new = dict(_leaves(fresh.settings.model_dump()))
    changed = sorted(".".join(path) for path in new if old.get(path) != new[path])
    applied = [
        n for n in changed if n.split(".")[0] == "server" and n.split(".")[1] in RELOADABLE_SERVER
    ]
    restart = [n for n in changed if n not in applied]
    update = {
        name.split(".")[1]: getattr(fresh.settings.server, name.split(".")[1]) for name in applied
    }
    server = current.settings.server.model_copy(update=update)
    settings = current.settings.model_copy(update={"server": server})
    return LoadedSettings(settings, current.profile, current.layers), applied, restart
