"""The config loader on any file: settings, or one line naming what is wrong. Never a traceback.

A config file is the one input an operator hands the daemon; whatever it
holds (another format, binary, damage, a wrong type anywhere, nesting a
parser cannot follow) must come back as ``ConfigError`` with one line, and
a line that never quotes an API key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sprintd.manager import make_manager, plugin_sections
from sprintd.settings import ConfigError, LoadedSettings, load_settings

from .fuzzing import NOISE_PER_CALL, bounded, mutate, retained_per_call

REPO = Path(__file__).resolve().parents[1]
SECTIONS = plugin_sections(make_manager())
SECRET = "fuzz-secret-0123456789"
SAMPLES = [path.read_bytes() for path in sorted((REPO / "config").iterdir())] + [
    b'[auth]\nenabled = true\n[auth.keys.a]\nkey = "' + SECRET.encode() + b'"\nscopes = ["read"]\n',
    json.dumps({"auth": {"keys": {"b": {"key": SECRET, "tier": "pro"}}}}).encode(),
]

_keys = st.sampled_from(
    [
        "tier",
        "server",
        "port",
        "auth",
        "keys",
        "key",
        "enabled",
        "tuning",
        "orders",
        "symbols",
        "limits",
        "pro",
        "rate",
        "burst",
        "audit",
        "file",
        "performance_optimizations",
        "x",
    ]
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    st.just(SECRET),
)
_trees = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=16,
)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _load(path: Path, text: bytes, environ: dict[str, str] | None = None) -> None:
    path.write_bytes(text)
    try:
        loaded = load_settings(config_path=str(path), sections=SECTIONS, environ=environ or {})
    except ConfigError as exc:
        message = str(exc)
        assert message
        assert "\n" not in message, message
        if message.startswith("auth.keys"):
            # Whatever sits under [auth.keys] may be a key: never quoted.
            assert SECRET not in message, message
    else:
        assert isinstance(loaded, LoadedSettings)


@given(
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.sampled_from(SAMPLES), st.randoms(use_true_random=False)).map(
            lambda t: mutate(t[1], t[0], t[1].randint(1, 4))
        ),
        _trees.map(lambda tree: json.dumps(tree, default=str).encode()),
    ),
    st.sampled_from(["config.toml", "config.json"]),
)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_file_is_settings_or_one_line(scratch: Path, text: bytes, name: str) -> None:
    with bounded(10):
        _load(scratch / name, text)


@given(
    _trees.filter(lambda tree: isinstance(tree, dict)),
    st.sampled_from(
        [
            {"SPRINTD_SERVER__PORT": "9000"},
            {"SPRINTD_AUTH__ENABLED": "true"},
            {"SPRINTD_AUTH__KEYS__A__KEY": SECRET},
            {"TIER": "pro", "GC_PERCENT": "50"},
        ]
    ),
)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_file_and_the_environment_together(
    scratch: Path, tree: dict[str, Any], environ: dict[str, str]
) -> None:
    """The layers merge before validation: a file's scalar where the
    environment sets a key under it must be an error, not a crash."""
    with bounded(10):
        _load(scratch / "c.json", json.dumps(tree).encode(), environ)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("deep.json", b"[" * 100_000),
        ("deep.json", b'{"a":' * 100_000),
        ("deep.toml", b"a = " + b"[" * 100_000),
        ("deep.toml", b"a = " + b"{b = " * 100_000),
        ("big.toml", b"x = " + b"9" * 10_000),
        ("nul.toml", b"\x00" * 1000),
    ],
)
def test_nesting_a_parser_cannot_follow(tmp_path: Path, name: str, text: bytes) -> None:
    with bounded(10):
        _load(tmp_path / name, text)


def test_loading_keeps_nothing(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    inputs = [*SAMPLES, b"tier = 'gold'", b"[server]\nport = -1", b"\xff"]

    def run() -> None:
        for text in inputs:
            _load(path, text)

    assert retained_per_call(run, 20) / len(inputs) <= NOISE_PER_CALL * 10


# --- what the fuzzing found ----------------------------------------------------


def test_a_scalar_where_the_environment_sets_a_table_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"server": null, "tuning": 5}')
    with pytest.raises(ConfigError) as caught:
        load_settings(
            config_path=str(path), environ={"SPRINTD_SERVER__PORT": "9000", "GC_PERCENT": "50"}
        )
    assert str(caught.value).startswith(f"server = None from config file {path} (server): ")


def test_a_seed_name_under_a_bad_table_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"tuning": null}')
    with pytest.raises(ConfigError) as caught:
        load_settings(config_path=str(path), environ={"GC_PERCENT": "50"})
    assert str(caught.value).startswith(f"tuning = None from config file {path} (tuning): ")


def test_a_tiers_limits_lay_over_its_defaults() -> None:
    loaded = load_settings(environ={"SPRINTD_AUTH__LIMITS__PRO__BURST": "100"})
    limit = loaded.settings.auth.limits.pro
    assert (limit.rate, limit.burst) == (10, 100)
