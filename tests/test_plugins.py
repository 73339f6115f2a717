"""Plugins: installed through the entry-point group, listed in the config, their
settings sections, their order, and the ways a plugin stops start-up.

The third-party plugin is installed for real: a module and a ``*.dist-info``
directory (METADATA and entry_points.txt) in a directory on the daemon's
PYTHONPATH, which is all importlib.metadata needs to find it.
"""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path
from typing import Any

import pluggy
import pytest

from sprintd.hookspecs import hookimpl
from sprintd.manager import BUILTINS, ENTRY_POINT_GROUP, make_manager, plugin_sections
from sprintd.sections import PluginSection
from sprintd.settings import ConfigError

from .daemons import NO_ORDERS, PLUGINS_DIR, Daemon, DaemonFactory, wait_for


def install(site: Path, dist: str, entry_points: dict[str, str], modules: list[str]) -> Path:
    """A distribution in ``site``: modules copied from plugins_for_tests, plus its
    dist-info with the entry points given (name -> module)."""
    site.mkdir(parents=True, exist_ok=True)
    for module in modules:
        shutil.copy(PLUGINS_DIR / f"{module}.py", site / f"{module}.py")
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = [f"[{ENTRY_POINT_GROUP}]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


@pytest.fixture
def counter_site(tmp_path: Path) -> Path:
    """The counter plugin, installed as the distribution sprintd-test-counter."""
    return install(
        tmp_path / "site",
        "sprintd-test-counter",
        {"counter": "sprintd_test_counter"},
        ["sprintd_test_counter"],
    )


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def assert_config_error(result: Any, *parts: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr_lines
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    assert lines[0].startswith("sprintd: config error: "), lines[0]
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"
    return lines[0]


# --- an entry-point plugin, end to end -----------------------------------------


def _ticks(served: Daemon) -> int:
    result = served.get("/test/counter")
    assert result.status == 200
    ticks: int = result.json()["ticks"]
    return ticks


def test_entry_point_plugin_contributes_everything(
    daemon: DaemonFactory, counter_site: Path
) -> None:
    served = daemon(pythonpath=[counter_site])

    # A route through h11.
    hello = served.get("/test/counter/hello")
    assert hello.status == 200
    assert hello.json()["plugin"] == "counter"

    # A snapshot on the fast path, republished by the background task.
    seen = set()

    def counted_on() -> bool:
        seen.add(_ticks(served))
        return len(seen) >= 4

    wait_for(counted_on, timeout=10, interval=0.03)
    with served.connect() as conn:
        conn.send(b"GET /test/counter HTTP/1.1\r\nHost: t\r\n\r\n")
        first = conn.read_response().json()
        wait_for(lambda: _ticks(served) > first["ticks"], timeout=5)
        conn.send(b"GET /test/counter HTTP/1.1\r\nHost: t\r\n\r\n")
        second = conn.read_response().json()
    assert second["ticks"] > first["ticks"]
    assert first["pid"] == served.pid

    # A health check.
    checks = served.health()["checks"]
    assert "counter" in checks
    assert checks["counter"][0]["status"] == "pass"
    assert checks["counter"][0]["observedValue"] >= second["ticks"]

    # Its routes are timed like the core's.
    routes = served.get("/v1/stats").json()["routes"]
    assert routes["/test/counter"]["count"] >= 6
    assert routes["/test/counter/hello"]["count"] == 1

    # Shutdown reaches it: sprintd_unconfigure ran after the drain.
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    stopped = json.loads((served.data_dir / "counter-stopped.json").read_text())
    assert stopped["ticks"] >= second["ticks"]


def test_without_the_distribution_there_is_no_plugin(daemon: DaemonFactory) -> None:
    """The control: the same module on the path but not installed is not loaded."""
    served = daemon(pythonpath=[PLUGINS_DIR])
    assert served.get("/test/counter").status == 404
    assert "counter" not in served.health()["checks"]


# --- the config's list ---------------------------------------------------------


def test_plugin_listed_in_the_config_loads(daemon: DaemonFactory, tmp_path: Path) -> None:
    config = write_config(tmp_path / "plugins.toml", 'plugins = ["sprintd_test_section"]\n')
    served = daemon("--config", str(config), pythonpath=[PLUGINS_DIR])
    result = served.get("/test/greeter")
    assert result.status == 200
    assert result.json() == {"greeting": "hello", "repeat": 1, "enabled": True}


def test_registration_order(monkeypatch: pytest.MonkeyPatch, counter_site: Path) -> None:
    """Built-ins first, then entry points, then the config's list."""
    monkeypatch.syspath_prepend(str(counter_site))
    monkeypatch.syspath_prepend(str(PLUGINS_DIR))
    pm = make_manager(["sprintd_test_section"])
    names = [name for name, _ in pm.list_name_plugin()]
    builtins = ["health", "metrics", *BUILTINS]
    assert names[: len(builtins)] == builtins
    assert names.index("counter") >= len(builtins)
    assert names[-1] == "sprintd_test_section"
    assert names.index("counter") < names.index("sprintd_test_section")
    # Entry-point plugins are recorded with their distribution.
    distributions = {dist.project_name for _, dist in pm.list_plugin_distinfo()}
    assert "sprintd-test-counter" in distributions


def test_a_plugin_in_both_places_registers_once(
    monkeypatch: pytest.MonkeyPatch, counter_site: Path
) -> None:
    """Installed (entry point "counter") and also listed by module name in the
    config: one plugin, registered once, not a crash."""
    monkeypatch.syspath_prepend(str(counter_site))
    pm = make_manager(["sprintd_test_counter"])
    modules = [plugin for _, plugin in pm.list_name_plugin()]
    named = [p for p in modules if getattr(p, "__name__", "") == "sprintd_test_counter"]
    assert len(named) == 1


# --- plugins that stop start-up ------------------------------------------------


def test_misspelt_hook_stops_start_up(sprintd_cli: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path / "typo.toml", 'plugins = ["sprintd_test_typo"]\n')
    result = sprintd_cli("run", "--port", "0", "--config", str(config), pythonpath=[PLUGINS_DIR])
    assert_config_error(result, "sprintd_test_typo", "sprintd_rotes")


@pytest.mark.parametrize(
    ("module", "missing"),
    [
        ("sprintd_test_not_there", "sprintd_test_not_there"),
        ("sprintd_test_broken", "sprintd_test_dependency_that_is_not_installed"),
    ],
    ids=["missing-module", "missing-dependency"],
)
def test_plugin_that_cannot_be_imported_stops_start_up(
    sprintd_cli: Any, tmp_path: Path, module: str, missing: str
) -> None:
    config = write_config(tmp_path / "broken.toml", f'plugins = ["{module}"]\n')
    result = sprintd_cli("run", "--port", "0", "--config", str(config), pythonpath=[PLUGINS_DIR])
    assert_config_error(result, module, missing)


def test_plugin_named_in_the_environment_that_cannot_be_imported(sprintd_cli: Any) -> None:
    result = sprintd_cli("run", "--port", "0", env={"SPRINTD_PLUGINS": '["sprintd_test_nope"]'})
    assert_config_error(result, "sprintd_test_nope")


def test_entry_point_that_cannot_be_imported_stops_start_up(
    sprintd_cli: Any, tmp_path: Path
) -> None:
    site = install(tmp_path / "site", "sprintd-test-ghost", {"ghost": "sprintd_test_ghost"}, [])
    result = sprintd_cli("run", "--port", "0", pythonpath=[site])
    assert_config_error(result, "sprintd_test_ghost")


# --- a plugin's settings section -----------------------------------------------


def test_section_from_the_file_and_the_environment(daemon: DaemonFactory, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "greeter.toml",
        'plugins = ["sprintd_test_section"]\n\n[greeter]\ngreeting = "bonjour"\nrepeat = 2\n',
    )
    served = daemon(
        "--config",
        str(config),
        env={"SPRINTD_GREETER__REPEAT": "5"},
        pythonpath=[PLUGINS_DIR],
    )
    assert served.get("/test/greeter").json() == {
        "greeting": "bonjour",
        "repeat": 5,
        "enabled": True,
    }


def test_section_values_in_sprintd_config(sprintd_cli: Any, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "greeter.json",
        json.dumps({"plugins": ["sprintd_test_section"], "greeter": {"greeting": "hej"}}),
    )
    result = sprintd_cli(
        "config",
        "--config",
        str(config),
        env={"SPRINTD_GREETER__REPEAT": "3"},
        pythonpath=[PLUGINS_DIR],
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in result.stdout.splitlines()}
    assert rows["greeter.greeting"] == ["hej", f"config file {config} (greeter.greeting)"]
    assert rows["greeter.repeat"] == ["3", "environment SPRINTD_GREETER__REPEAT"]
    assert rows["greeter.enabled"] == ["True", "default"]


@pytest.mark.parametrize("where", ["file", "environment"])
def test_enabled_false_unregisters_the_plugin(
    daemon: DaemonFactory, tmp_path: Path, where: str
) -> None:
    text = 'plugins = ["sprintd_test_section"]\n'
    env = {}
    if where == "file":
        text += "\n[greeter]\nenabled = false\n"
    else:
        env["SPRINTD_GREETER__ENABLED"] = "false"
    config = write_config(tmp_path / "off.toml", text)
    served = daemon("--config", str(config), env=env, pythonpath=[PLUGINS_DIR])
    assert served.get("/test/greeter").status == 404
    assert served.get("/livez").status == 200


@pytest.mark.parametrize(
    ("text", "env", "parts"),
    [
        ("[greeter]\nrepeat = 'many'\n", {}, ("greeter.repeat", "many", "config file")),
        ("[greeter]\ngreting = 'x'\n", {}, ("greeter.greting", "config file", "unknown")),
        ("", {"SPRINTD_GREETER__REPEAT": "x"}, ("greeter.repeat", "SPRINTD_GREETER__REPEAT")),
    ],
    ids=["bad-value", "typo", "bad-env"],
)
def test_bad_section_value_stops_start_up(
    sprintd_cli: Any, tmp_path: Path, text: str, env: dict[str, str], parts: tuple[str, ...]
) -> None:
    config = write_config(tmp_path / "bad.toml", 'plugins = ["sprintd_test_section"]\n' + text)
    result = sprintd_cli(
        "run", "--port", "0", "--config", str(config), env=env, pythonpath=[PLUGINS_DIR]
    )
    assert_config_error(result, *parts)


def test_a_section_without_its_plugin_is_unknown(sprintd_cli: Any, tmp_path: Path) -> None:
    config = write_config(tmp_path / "orphan.toml", "[greeter]\ngreeting = 'x'\n")
    result = sprintd_cli("run", "--port", "0", "--config", str(config))
    assert_config_error(result, "greeter", "unknown")


# --- process-local plugins -----------------------------------------------------


def test_process_local_plugin_runs_with_one_worker(daemon: DaemonFactory) -> None:
    served = daemon(env={"SPRINTD_PLUGINS": '["sprintd_test_local"]'}, pythonpath=[PLUGINS_DIR])
    assert served.get("/test/ledger").json() == {"entries": 0, "worker": 0}


def test_process_local_plugin_disabled_allows_two_workers(daemon: DaemonFactory) -> None:
    served = daemon(
        "--workers",
        "2",
        workers=2,
        env={
            "SPRINTD_PLUGINS": '["sprintd_test_local"]',
            "SPRINTD_LEDGER__ENABLED": "false",
            **NO_ORDERS,
        },
        pythonpath=[PLUGINS_DIR],
    )
    assert served.get("/test/ledger").status == 404
    served.signal(signal.SIGTERM)
    assert served.wait() == 0


# --- the manager, in process ---------------------------------------------------


class _Section(PluginSection):
    size: int = 1


class _Claims:
    def __init__(self, name: str) -> None:
        self.name = name

    @hookimpl
    def sprintd_settings_sections(self) -> dict[str, type[PluginSection]]:
        return {"shared": _Section}


def test_two_plugins_claiming_one_section_is_an_error() -> None:
    pm = make_manager()
    pm.register(_Claims("a"), name="first")
    pm.register(_Claims("b"), name="second")
    with pytest.raises(ConfigError, match="'shared' is claimed by"):
        plugin_sections(pm)


def test_the_manager_knows_every_hook() -> None:
    pm = make_manager()
    assert isinstance(pm, pluggy.PluginManager)
    hooks = {name for name in dir(pm.hook) if name.startswith("sprintd_")}
    assert {
        "sprintd_settings_sections",
        "sprintd_configure",
        "sprintd_routes",
        "sprintd_snapshots",
        "sprintd_listeners",
        "sprintd_health_checks",
        "sprintd_metrics",
        "sprintd_background_tasks",
        "sprintd_drain",
        "sprintd_unconfigure",
    } <= hooks
