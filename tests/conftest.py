"""Fixtures shared by the core suite (the machinery is in ``daemons``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .daemons import FAST_SERVER_ENV, PLUGINS_DIR, CLIResult, DaemonFactory, run_cli, wait_for
from .servers import PostgresServer, Processors, RedisServer


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """A factory: ``daemon("--tier", "pro", env={...})`` starts one; teardown stops all."""
    factory = DaemonFactory(tmp_path / "daemons")
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture(scope="module")
def module_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonFactory]:
    """The same factory, for daemons shared by the tests of one module."""
    factory = DaemonFactory(tmp_path_factory.mktemp("daemons"))
    try:
        yield factory
    finally:
        factory.stop_all()


@pytest.fixture
def sprintd_cli(tmp_path: Path) -> Callable[..., CLIResult]:
    """Run the real command line in tmp_path (so ./sprintd-data lands there)."""

    def run(*args: str, **kwargs: Any) -> CLIResult:
        kwargs.setdefault("cwd", tmp_path)
        return run_cli(*args, **kwargs)

    return run


@pytest.fixture
def plugins_dir() -> Path:
    """Test plugin modules, for a subprocess daemon's PYTHONPATH."""
    return PLUGINS_DIR


@pytest.fixture
def poll() -> Callable[..., Any]:
    """``poll(predicate, timeout=...)``: wait until the predicate holds."""
    return wait_for


@pytest.fixture
def fast_server_env() -> dict[str, str]:
    """Environment for small server timeouts (header, body, keep-alive, drain)."""
    return dict(FAST_SERVER_ENV)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (no persistence), stopped at the end."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, flushed before each test: ``redis://127.0.0.1:PORT/0``."""
    redis_server.flush()
    return redis_server.url


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session; tests that stop it use ``own_postgres``."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's PostgreSQL: ``postgresql://...``."""
    return postgres_server.fresh_database()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of the test's own, to stop and start again."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def processors() -> Iterator[Processors]:
    """A default (fee 5%) and a fallback (15%) payment processor, fresh for each test."""
    pair = Processors()
    try:
        yield pair
    finally:
        pair.stop()
