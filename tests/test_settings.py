"""Settings: layers and their precedence, provenance, the seed's names, and bad configs.

Precedence, lowest first: defaults < tier profile < config file < environment
(seed names < SPRINTD_*) < command line. ``load_settings`` is tested directly
with ``environ=`` and ``cli=``; what users see (``sprintd config`` and the
exit status of ``sprintd run``) through the real command line in a subprocess.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sprintd.settings import ConfigError, Settings, load_settings
from sprintd.tiers import TIERS, load_profile

from .daemons import REPO_DIR, clean_environ

SEED_JSON = REPO_DIR / "config" / "production-optimized.json"
SEED_TOML = REPO_DIR / "config" / "production-optimized.toml"
SEED_TUNING = {
    "gc_percent": 25,
    "max_cpu_cores": 0,
    "high_priority": True,
    "lock_os_thread": True,
    "prealloc_buffers": True,
    "optimize_system": True,
}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Enough of a TOML writer for settings: scalars, lists and nested tables."""
    scalars = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    out = "\n".join(scalars) + "\n"
    for key, value in data.items():
        if isinstance(value, dict):
            name = f"{prefix}{key}"
            out += f"\n[{name}]\n" + to_toml(value, name + ".")
    return out


def write_config(directory: Path, data: dict[str, Any], kind: str) -> Path:
    path = directory / f"sprintd.{kind}"
    path.write_text(json.dumps(data) if kind == "json" else to_toml(data))
    return path


def cli(**flags: Any) -> dict[str, tuple[tuple[str, ...], Any]]:
    """The ``cli=`` mapping the command line builds, from flag=value."""
    paths = {
        "tier": ("tier",),
        "host": ("server", "host"),
        "port": ("server", "port"),
        "workers": ("server", "workers"),
        "data_dir": ("data_dir",),
    }
    return {f"--{name.replace('_', '-')}": (paths[name], value) for name, value in flags.items()}


def config_rows(stdout: str) -> dict[str, tuple[str, str]]:
    """``sprintd config`` output as name -> (value, origin)."""
    rows = {}
    for line in stdout.splitlines():
        parts = line.split(None, 2)
        if len(parts) == 3:
            name, value, origin = parts
            rows[name] = (value, origin)
    return rows


# --- precedence ----------------------------------------------------------------


def test_defaults_with_nothing_set() -> None:
    loaded = load_settings(environ={})
    assert loaded.settings.tier == "free"
    assert loaded.settings.server.port == 8080
    assert loaded.settings.server.host == "127.0.0.1"
    assert loaded.settings.server.workers == 1
    assert loaded.settings.data_dir == Path("sprintd-data")
    assert loaded.origin(("server", "port")) == "default"
    assert loaded.origin(("tier",)) == "default"


def test_each_layer_overrides_the_one_below(tmp_path: Path) -> None:
    """gc_percent: default 100 < turbo's 50 < file < GC_PERCENT < SPRINTD_TUNING__GC_PERCENT."""
    assert load_settings(environ={}).settings.tuning.gc_percent == 100

    tier = load_settings(environ={}, cli=cli(tier="turbo"))
    assert tier.settings.tuning.gc_percent == 50
    assert tier.origin(("tuning", "gc_percent")) == "tier profile turbo"

    path = write_config(tmp_path, {"tier": "turbo", "tuning": {"gc_percent": 30}}, "toml")
    file = load_settings(environ={}, config_path=str(path))
    assert file.settings.tuning.gc_percent == 30
    assert file.origin(("tuning", "gc_percent")) == f"config file {path} (tuning.gc_percent)"

    seed = load_settings(environ={"GC_PERCENT": "40"}, config_path=str(path))
    assert seed.settings.tuning.gc_percent == 40
    assert seed.origin(("tuning", "gc_percent")) == "environment GC_PERCENT"

    env = load_settings(
        environ={"GC_PERCENT": "40", "SPRINTD_TUNING__GC_PERCENT": "45"}, config_path=str(path)
    )
    assert env.settings.tuning.gc_percent == 45
    assert env.origin(("tuning", "gc_percent")) == "environment SPRINTD_TUNING__GC_PERCENT"


def test_command_line_beats_environment_beats_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"server": {"port": 7001, "workers": 3}}, "toml")
    environ = {"SPRINTD_SERVER__PORT": "7002"}
    loaded = load_settings(environ=environ, config_path=str(path), cli=cli(port=7003))
    assert loaded.settings.server.port == 7003
    assert loaded.origin(("server", "port")) == "command line --port"
    # Layers merge per key: the file's workers survive the port's overrides.
    assert loaded.settings.server.workers == 3
    assert loaded.origin(("server", "workers")) == f"config file {path} (server.workers)"

    no_cli = load_settings(environ=environ, config_path=str(path))
    assert no_cli.settings.server.port == 7002
    assert no_cli.origin(("server", "port")) == "environment SPRINTD_SERVER__PORT"


_tier_or_none = st.none() | st.sampled_from(TIERS)


@settings(max_examples=60, deadline=None)
@given(
    file=_tier_or_none,
    kind=st.sampled_from(["json", "toml"]),
    seed=_tier_or_none,
    env=_tier_or_none,
    flag=_tier_or_none,
)
def test_tier_comes_from_the_highest_layer_that_sets_it(
    file: str | None,
    kind: str,
    seed: str | None,
    env: str | None,
    flag: str | None,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp), {"tier": file} if file else {}, kind)
        environ = {}
        if seed:
            environ["TIER"] = seed
        if env:
            environ["SPRINTD_TIER"] = env
        loaded = load_settings(environ=environ, config_path=str(path), cli=cli(tier=flag))
        layers = [
            ("free", "default"),
            (file, f"config file {path} (tier)"),
            (seed, "environment TIER"),
            (env, "environment SPRINTD_TIER"),
            (flag, "command line --tier"),
        ]
        expected, origin = [(v, o) for v, o in layers if v][-1]
        assert loaded.settings.tier == expected
        assert loaded.origin(("tier",)) == origin
        # The profile follows the tier, whichever layer named it.
        assert loaded.profile.name == expected
        assert (
            loaded.settings.tuning.gc_mode == load_profile(expected).settings["tuning"]["gc_mode"]
        )


_server = st.fixed_dictionaries(
    {},
    optional={
        "port": st.integers(0, 65535),
        "workers": st.integers(1, 256),
        "backlog": st.integers(1, 100_000),
        "keepalive_timeout": st.floats(0.001, 3600, allow_nan=False),
        "header_timeout": st.floats(0.001, 3600, allow_nan=False),
        "max_header_bytes": st.integers(1024, 1 << 20),
        "max_body_bytes": st.integers(0, 1 << 30),
        "drain_timeout": st.floats(0, 3600, allow_nan=False),
        "host": st.sampled_from(["127.0.0.1", "0.0.0.0", "::1", "localhost"]),
    },
)
_tuning = st.fixed_dictionaries(
    {},
    optional={
        "gc_mode": st.sampled_from(["default", "tuned", "manual"]),
        "gc_percent": st.integers(1, 10_000),
        "max_cpu_cores": st.integers(0, 64),
        "high_priority": st.booleans(),
        "nice": st.integers(-20, 19),
        "lock_memory": st.booleans(),
        "prealloc_buffers": st.booleans(),
        "buffer_count": st.integers(1, 4096),
        "optimize_system": st.booleans(),
        "switch_interval_ms": st.floats(0.01, 100, allow_nan=False),
    },
)


@settings(max_examples=80, deadline=None)
@given(
    tier=st.sampled_from(TIERS),
    server=_server,
    tuning=_tuning,
    kind=st.sampled_from(["json", "toml"]),
)
def test_a_config_file_round_trips(
    tier: str, server: dict[str, Any], tuning: dict[str, Any], kind: str
) -> None:
    """Every value a file sets comes back as set, attributed to the file; the rest
    comes from the tier or the defaults; and the effective settings written back
    out as a file load to the same settings."""
    data: dict[str, Any] = {"tier": tier, "server": server, "tuning": tuning}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_config(Path(tmp), data, kind)
        loaded = load_settings(environ={}, config_path=str(path))
        profile = load_profile(loaded.settings.tier)
        for section, values in (("server", server), ("tuning", tuning)):
            model = getattr(loaded.settings, section)
            for key, value in values.items():
                got = getattr(model, key)
                assert got == value or (isinstance(value, float) and math.isclose(got, value))
                assert loaded.origin((section, key)) == f"config file {path} ({section}.{key})"
        for key, value in profile.settings.get("tuning", {}).items():
            if key not in tuning:
                assert getattr(loaded.settings.tuning, key) == value
                assert loaded.origin(("tuning", key)) == f"tier profile {tier}"

        again = Path(tmp) / "again.json"
        again.write_text(json.dumps(loaded.settings.model_dump(mode="json")))
        reloaded = load_settings(environ={}, config_path=str(again))
        assert reloaded.settings == loaded.settings


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("empty.toml", 'tier = "enterprise"\n\n[tuning]\n# gc_percent = 25\n'),
        ("empty.json", '{"tier": "enterprise", "performance_optimizations": {}}'),
    ],
    ids=["toml", "json"],
)
def test_an_empty_section_in_a_file_keeps_the_tier_profile(
    tmp_path: Path, name: str, text: str
) -> None:
    """A table with every line commented out sets nothing: the tier still decides."""
    path = tmp_path / name
    path.write_text(text)
    loaded = load_settings(environ={}, config_path=str(path))
    assert loaded.settings.tier == "enterprise"
    assert loaded.settings.tuning.gc_mode == "manual"
    assert loaded.settings.tuning.lock_memory is True
    assert loaded.settings.tuning.gc_percent == 25
    assert loaded.origin(("tuning", "gc_mode")) == "tier profile enterprise"


def test_effective_lists_every_setting_once_with_an_origin(tmp_path: Path) -> None:
    path = write_config(tmp_path, {"server": {"port": 9100}}, "toml")
    loaded = load_settings(environ={"GC_PERCENT": "70"}, config_path=str(path), cli=cli(workers=2))
    rows = {name: (value, origin) for name, value, origin in loaded.effective()}
    dumped = Settings.model_fields
    for top in dumped:
        assert any(name == top or name.startswith(top + ".") for name in rows), top
    assert rows["server.port"] == (9100, f"config file {path} (server.port)")
    assert rows["tuning.gc_percent"] == (70, "environment GC_PERCENT")
    assert rows["server.workers"] == (2, "command line --workers")
    assert rows["server.host"] == ("127.0.0.1", "default")
    assert rows["tuning.gc_mode"] == ("default", "tier profile free")


# --- the seed's file and names -------------------------------------------------


def test_seed_json_gives_enterprise() -> None:
    loaded = load_settings(environ={}, config_path=str(SEED_JSON))
    assert loaded.settings.tier == "enterprise"
    assert loaded.profile.optimization_level == "maximum"
    for key, value in SEED_TUNING.items():
        assert getattr(loaded.settings.tuning, key) == value, key
        assert loaded.origin(("tuning", key)) == f"config file {SEED_JSON} (tuning.{key})"
    # What the seed does not say comes from the enterprise profile.
    assert loaded.settings.tuning.gc_mode == "manual"
    assert loaded.settings.tuning.lock_memory is True
    assert loaded.origin(("tuning", "lock_memory")) == "tier profile enterprise"


def test_seed_toml_is_the_same_as_the_json() -> None:
    from_json = load_settings(environ={}, config_path=str(SEED_JSON)).settings
    from_toml = load_settings(environ={}, config_path=str(SEED_TOML)).settings
    assert from_toml.tier == from_json.tier == "enterprise"
    assert from_toml.tuning == from_json.tuning


def test_seed_env_names_override_the_file() -> None:
    environ = {"GC_PERCENT": "50", "MAX_CPU_CORES": "1", "TIER": "pro", "HIGH_PRIORITY": "false"}
    loaded = load_settings(environ=environ, config_path=str(SEED_JSON))
    assert loaded.settings.tier == "pro"
    assert loaded.profile.name == "pro"
    assert loaded.settings.tuning.gc_percent == 50
    assert loaded.settings.tuning.max_cpu_cores == 1
    assert loaded.settings.tuning.high_priority is False
    assert loaded.origin(("tier",)) == "environment TIER"
    assert loaded.origin(("tuning", "gc_percent")) == "environment GC_PERCENT"
    assert loaded.origin(("tuning", "max_cpu_cores")) == "environment MAX_CPU_CORES"
    # Untouched seed values still come from the file.
    assert loaded.settings.tuning.prealloc_buffers is True
    assert loaded.origin(("tuning", "prealloc_buffers")).startswith("config file")


def test_sprintd_name_wins_over_the_seed_name() -> None:
    environ = {"GC_PERCENT": "50", "SPRINTD_TUNING__GC_PERCENT": "60", "TIER": "pro"}
    environ |= {"SPRINTD_TIER": "business"}
    loaded = load_settings(environ=environ, config_path=str(SEED_JSON))
    assert loaded.settings.tuning.gc_percent == 60
    assert loaded.origin(("tuning", "gc_percent")) == "environment SPRINTD_TUNING__GC_PERCENT"
    assert loaded.settings.tier == "business"


def test_sprintd_config_shows_values_and_origins(sprintd_cli: Any) -> None:
    result = sprintd_cli(
        "config",
        "--config",
        str(SEED_JSON),
        "--port",
        "9123",
        env={"GC_PERCENT": "50", "MAX_CPU_CORES": "1", "TIER": "pro"},
    )
    assert result.returncode == 0, result.stderr
    rows = config_rows(result.stdout)
    assert rows["tier"] == ("pro", "environment TIER")
    assert rows["tuning.gc_percent"] == ("50", "environment GC_PERCENT")
    assert rows["tuning.max_cpu_cores"] == ("1", "environment MAX_CPU_CORES")
    assert rows["server.port"] == ("9123", "command line --port")
    assert rows["server.host"] == ("127.0.0.1", "default")
    value, origin = rows["tuning.prealloc_buffers"]
    assert value == "True"
    assert origin == f"config file {SEED_JSON} (tuning.prealloc_buffers)"
    assert rows["tuning.gc_mode"] == ("tuned", "tier profile pro")


def test_sprintd_config_reads_sprintd_config_and_sprintd_names(sprintd_cli: Any) -> None:
    result = sprintd_cli(
        "config",
        env={
            "SPRINTD_CONFIG": str(SEED_TOML),
            "GC_PERCENT": "50",
            "SPRINTD_TUNING__GC_PERCENT": "77",
        },
    )
    assert result.returncode == 0, result.stderr
    rows = config_rows(result.stdout)
    assert rows["tier"] == ("enterprise", f"config file {SEED_TOML} (tier)")
    assert rows["server.host"] == ("0.0.0.0", f"config file {SEED_TOML} (server.host)")
    assert rows["tuning.gc_percent"] == ("77", "environment SPRINTD_TUNING__GC_PERCENT")


def test_the_build_choice_left_in_the_environment_is_no_setting() -> None:
    # SPRINTD_COMPILE=1 chooses the compiled build at install time (setup.py);
    # a shell that exported it for pip still starts the daemon.
    assert load_settings(environ={"SPRINTD_COMPILE": "1"}).settings.tier == "free"


def test_the_developers_environment_does_not_leak(
    sprintd_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fixtures' clean environment: a TIER in the caller's shell never arrives."""
    monkeypatch.setenv("TIER", "enterprise")
    monkeypatch.setenv("SPRINTD_SERVER__PORT", "1")
    result = sprintd_cli("config")
    assert result.returncode == 0, result.stderr
    rows = config_rows(result.stdout)
    assert rows["tier"] == ("free", "default")
    assert rows["server.port"] == ("8080", "default")


@pytest.mark.parametrize("command", ["config", "tiers"])
def test_a_reader_that_goes_away_ends_the_output_quietly(command: str) -> None:
    """``sprintd config | head``: the pipe's reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        process = subprocess.run(
            [sys.executable, "-m", "sprintd", command],
            env=clean_environ(None),
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)
    assert process.stderr.decode() == ""
    assert process.returncode == 0


# --- bad configurations: exit status 2 and one line ---------------------------


def assert_config_error(result: Any, *parts: str) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr_lines
    assert len(lines) == 1, f"expected one line on stderr, got:\n{result.stderr}"
    line = lines[0]
    assert line.startswith("sprintd: config error: "), line
    for part in parts:
        assert part in line, f"{part!r} not in {line!r}"
    return line


def test_unknown_tier_in_the_environment(sprintd_cli: Any) -> None:
    result = sprintd_cli("run", "--port", "0", env={"TIER": "gold"})
    assert_config_error(result, "tier", "'gold'", "environment TIER")


def test_unknown_tier_in_a_file(sprintd_cli: Any, tmp_path: Path) -> None:
    path = write_config(tmp_path, {"tier": "gold"}, "toml")
    result = sprintd_cli("run", "--port", "0", "--config", str(path))
    assert_config_error(result, "tier", "gold", f"config file {path}")


def test_negative_port_on_the_command_line(sprintd_cli: Any) -> None:
    result = sprintd_cli("run", "--port", "-1")
    assert_config_error(result, "server.port", "-1", "command line --port")


def test_negative_port_in_the_environment(sprintd_cli: Any) -> None:
    result = sprintd_cli("run", env={"SPRINTD_SERVER__PORT": "-1"})
    assert_config_error(result, "server.port", "-1", "environment SPRINTD_SERVER__PORT")


def test_non_numeric_port_on_the_command_line(sprintd_cli: Any) -> None:
    result = sprintd_cli("run", "--port", "abc")
    assert_config_error(result, "server.port", "abc", "command line --port")


def test_typo_in_a_toml_file(sprintd_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "typo.toml"
    path.write_text("[server]\nprot = 1\n")
    result = sprintd_cli("run", "--port", "0", "--config", str(path))
    line = assert_config_error(result, "server.prot", "1", f"config file {path}")
    assert "unknown" in line


def test_typo_in_the_environment(sprintd_cli: Any) -> None:
    result = sprintd_cli("run", "--port", "0", env={"SPRINTD_SERVR__PORT": "8123"})
    line = assert_config_error(result, "SPRINTD_SERVR__PORT", "environment")
    assert "unknown" in line
    # The design's promise: the line names the value too.
    assert "8123" in line, line


def test_config_file_that_does_not_exist(sprintd_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    result = sprintd_cli("run", "--port", "0", "--config", str(path))
    assert_config_error(result, f"config file {path}", "No such file")


def test_sprintd_config_naming_a_file_that_does_not_exist(sprintd_cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "missing.json"
    result = sprintd_cli("run", "--port", "0", env={"SPRINTD_CONFIG": str(path)})
    assert_config_error(result, f"config file {path}", "No such file")


def test_config_file_that_is_a_directory(sprintd_cli: Any, tmp_path: Path) -> None:
    result = sprintd_cli("run", "--port", "0", "--config", str(tmp_path))
    assert_config_error(result, f"config file {tmp_path}", "directory")


@pytest.mark.parametrize(
    ("name", "text"),
    [("bad.toml", "[server\nport = 1\n"), ("bad.json", '{"tier": "pro",')],
    ids=["toml", "json"],
)
def test_malformed_config_file(sprintd_cli: Any, tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = sprintd_cli("run", "--port", "0", "--config", str(path))
    assert_config_error(result, f"config file {path}", "not valid")


def test_wrong_type_in_a_json_file(sprintd_cli: Any, tmp_path: Path) -> None:
    path = write_config(tmp_path, {"tuning": {"gc_percent": "lots"}}, "json")
    result = sprintd_cli("run", "--port", "0", "--config", str(path))
    assert_config_error(result, "tuning.gc_percent", "lots", f"config file {path}")


def test_bad_seed_name_value(sprintd_cli: Any) -> None:
    result = sprintd_cli("run", "--port", "0", env={"GC_PERCENT": "0"})
    assert_config_error(result, "tuning.gc_percent", "0", "environment GC_PERCENT")


def test_load_settings_raises_config_error_in_process(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.workers = 0 from command line --workers"):
        load_settings(environ={}, cli=cli(workers=0))
    with pytest.raises(ConfigError, match="environment MAX_CPU_CORES"):
        load_settings(environ={"MAX_CPU_CORES": "-3"})
