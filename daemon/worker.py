"""One worker process, top to bottom: tune, build the app, serve, tear down."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import pluggy
import trio

from .app import App
from .audit import AuditLog
from .logs import AccessLog, set_worker
from .manager import local_plugins
from .peers import Peers
from .server.listener import Binder
from .server.owner import OWNER_INDEX
from .server.serve import serve
from .settings import ConfigError, LoadedSettings
from .tuning import Tuner

__all__ = ["build_app", "run_worker"]

log = logging.getLogger("sprintd")


def config_event(loaded: LoadedSettings) -> dict[str, Any]:
    """What the audit log says about the settings a worker starts with: where
    they came from and who may call it, never a secret."""
    settings = loaded.settings
    keys = [
        {
            "name": name,
            "tier": key.tier,
            "scopes": list(key.scopes),
            "source": "key_env" if key.key_env else "key_file" if key.key_file else "key",
        }
        for name, key in settings.auth.keys.items()
    ]
    return {
        "layers": [layer.name for layer in loaded.layers],
        "tier": settings.tier,
        "workers": settings.server.workers,
        "host": settings.server.host,
        "port": settings.server.port,
        "auth": settings.auth.enabled,
        "keys": keys,
        "metrics_scope": settings.auth.metrics_scope,
    }


def start_audit(loaded: LoadedSettings, worker_index: int) -> AuditLog:
    """The worker's audit log, writing.

    Raises:
        ConfigError: its file cannot be opened.
    """
    audit = AuditLog(loaded.settings.audit, worker_index)
    try:
        audit.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"audit.file = '{loaded.settings.audit.file}': {reason}") from None
    return audit


def start_access_log(loaded: LoadedSettings, worker_index: int) -> AccessLog | None:
    """The worker's access log, writing; None when ``[log] access`` is off.

    Raises:
        ConfigError: its file cannot be opened.
    """
    settings = loaded.settings.log
    if settings.access is False:
        return None
    access = AccessLog(settings, worker_index)
    try:
        access.start()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError(f"log.access = '{settings.access}': {reason}") from None
    return access


def build_app(
    loaded: LoadedSettings,
    pm: pluggy.PluginManager,
    worker_index: int = 0,
    audit: AuditLog | None = None,
    access_log: AccessLog | None = None,
    peers: Peers | None = None,
    local_plugins: tuple[str, ...] = (),
) -> App:
    """Apply the tier's tuning to this process, then let the plugins build the app."""
    settings = loaded.settings
    audit = audit or AuditLog(settings.audit, worker_index)
    tuner = Tuner(settings.tuning, worker_index=worker_index)
    report = tuner.apply()
    for name in report.refused:
        knob = report.knobs[name]
        log.warning("tuning %s not applied: %s", name, knob.reason)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = App(
        loaded=loaded,
        pm=pm,
        tuner=tuner,
        worker_index=worker_index,
        audit_log=audit,
        access_log=access_log,
        peers=peers,
        local_plugins=local_plugins,
    )
    app.setup()
    # Audited once the plugins have accepted the settings: a configuration
    # that stops start-up was never in force.
    audit.emit("config_loaded", **config_event(loaded))
    audit.emit("tuning_applied", refused=report.refused, knobs=report.as_dict())
    return app


def run_worker(
    loaded: LoadedSettings,
    pm: pluggy.PluginManager,
    worker_index: int = 0,
    reload: Callable[[], LoadedSettings] | None = None,
    binder: Binder | None = None,
) -> None:
    """Be worker ``worker_index`` until it has drained: audit, tune, build, serve, tear down.

    ``reload`` re-reads the settings on SIGHUP. Raises ``ConfigError`` when a
    plugin or the audit log refuses the settings (the caller exits 2), also
    when a background task does once serving has begun (a mounted ASGI
    application's lifespan start-up), out of the groups trio wrapped it in.
    """
    set_worker(worker_index)
    audit = start_audit(loaded, worker_index)
    workers = loaded.settings.server.workers
    peers = None
    local: tuple[str, ...] = ()
    if workers > 1:
        # A supervised worker's siblings are the supervisor's other children.
        peers = Peers(str(os.getppid()), worker_index, workers)
        local = local_plugins(pm, loaded.settings)
        if worker_index != OWNER_INDEX:
            # Their state is the owner's; this worker forwards to it.
            for name in local:
                pm.unregister(name=name)
    try:
        access = start_access_log(loaded, worker_index)
        try:
            app = build_app(loaded, pm, worker_index, audit, access, peers, local)
            try:
                trio.run(functools.partial(serve, app, reload=reload, binder=binder))
            except BaseExceptionGroup as group:
                refused = _config_error(group)
                if refused is None:
                    raise
                raise refused from None
            finally:
                app.teardown()
        finally:
            if access is not None:
                access.close()
    finally:
        audit.close()
    log.info("worker %d stopped", worker_index)


def _config_error(group: BaseExceptionGroup[BaseException]) -> ConfigError | None:
    """The first ``ConfigError`` in ``group``, however deep trio's nurseries nested it."""
    found: BaseException | None = group.subgroup(ConfigError)
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found if isinstance(found, ConfigError) else None
