"""API keys, scopes and rate limits, in process: the guard, both server paths, the audit lines.

Requests go through the server's real connection loop over socketpairs
(``sprintd.testing.exchange``), with the fast path on, so each case covers the
fast path's decision and the h11 path's answer together.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import pytest

from sprintd.access import AuthSettings
from sprintd.app import App, Route, SnapshotSpec
from sprintd.auth import presented
from sprintd.health import HealthPlugin
from sprintd.hookspecs import hookimpl
from sprintd.http import Request, Response
from sprintd.manager import make_manager, plugin_sections
from sprintd.metrics import MetricsPlugin
from sprintd.server.connection import HTTPServer
from sprintd.settings import ConfigError, load_settings, reloaded
from sprintd.testing import exchange, make_app, make_server

from .scraping import parse, promtool_complaints

READER = "reader-key-0123456789"
TRADER = "trader-key-0123456789"
ADMIN = "admin-key-0123456789ab"
SLOW = "slow-key-0123456789abc"
KEYS = {
    "reader": (READER, "enterprise", '["read"]'),
    "trader": (TRADER, "enterprise", '["trade"]'),
    "admin": (ADMIN, "enterprise", '["admin"]'),
    "slow": (SLOW, "free", '["read"]'),
}


def auth_environ(**extra: str) -> dict[str, str]:
    env = {"SPRINTD_AUTH__ENABLED": "true"}
    for name, (key, tier, scopes) in KEYS.items():
        prefix = f"SPRINTD_AUTH__KEYS__{name.upper()}__"
        env |= {prefix + "KEY": key, prefix + "TIER": tier, prefix + "SCOPES": scopes}
    return env | extra


class _Plugin:
    def __init__(self) -> None:
        self.purged = 0

    @hookimpl
    def sprintd_snapshots(self, app: App) -> Sequence[SnapshotSpec]:
        return [
            SnapshotSpec("/guarded", b'{"secret":"prices"}'),
            SnapshotSpec("/public", b'{"hello":"world"}', scope="open"),
        ]

    @hookimpl
    def sprintd_routes(self, app: App) -> Sequence[Route]:
        def echo(request: Request) -> Response:
            return Response(200, request.body, request.content_type or b"text/plain")

        def purge(request: Request) -> Response:
            self.purged += 1
            return Response.data({"purged": True})

        async def reset(request: Request) -> Response:
            return Response.data({"reset": True}, 202)

        return [
            Route("POST", "/write", echo, scope="trade"),
            Route("GET", "/read", echo),
            Route("GET", "/anyone", echo, scope="open"),
            Route("POST", "/purge", purge, scope="admin"),
            Route("POST", "/reset", reset, scope="admin"),
        ]


def request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: t", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def split(answer: bytes) -> list[tuple[int, bytes, bytes]]:
    """Pipelined responses as (status, head, body), by their Content-Length."""
    found = []
    while answer:
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = int(head.split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        found.append((status_of(head), head, rest[:length]))
        answer = rest[length:]
    return found


def body_of(answer: bytes) -> Any:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1])


@pytest.fixture
def plugin() -> _Plugin:
    return _Plugin()


@pytest.fixture
def app(plugin: _Plugin) -> App:
    return make_app([plugin, HealthPlugin()], auth_environ())


@pytest.fixture
def server(app: App) -> HTTPServer:
    return make_server(app)


# --- who may ask ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/guarded", "/read"])
@pytest.mark.parametrize(
    "credential",
    [
        f"X-API-Key: {READER}",
        f"x-api-key:{READER}   ",
        f"Authorization: Bearer {READER}",
        f"authorization: bearer    {READER}",
    ],
)
async def test_a_key_with_the_scope_is_answered(
    server: HTTPServer, path: str, credential: str
) -> None:
    answer = await exchange(server, request("GET", path, credential))
    assert status_of(answer) == 200


@pytest.mark.parametrize("path", ["/guarded", "/read", "/write"])
@pytest.mark.parametrize(
    "credential",
    [
        None,
        "X-API-Key: not-a-key-0123456789",
        "X-API-Key:",
        f"Authorization: Basic {READER}",
        f"Authorization: {READER}",
        f"X-API-Key: {READER}x",
        f"X-API-Key: {READER[:-1]}",
    ],
)
async def test_no_key_or_a_wrong_one_gets_the_same_401(
    server: HTTPServer, path: str, credential: str | None
) -> None:
    method = "POST" if path == "/write" else "GET"
    headers = [] if credential is None else [credential]
    answer = await exchange(server, request(method, path, *headers, body=b"x" * (method == "POST")))
    assert status_of(answer) == 401
    assert b'\r\nwww-authenticate: Bearer realm="sprintd"\r\n' in answer
    # One body whatever was wrong: nothing tells a guess from a missing key.
    assert body_of(answer) == {
        "error": {
            "code": "unauthorized",
            "message": "a valid API key is required: send X-API-Key or Authorization: Bearer",
        }
    }


async def test_a_key_without_the_scope_gets_403(server: HTTPServer) -> None:
    answer = await exchange(server, request("GET", "/guarded", f"X-API-Key: {TRADER}"))
    assert status_of(answer) == 403
    assert body_of(answer)["error"]["code"] == "forbidden"
    answer = await exchange(server, request("POST", "/write", f"X-API-Key: {READER}", body=b"x"))
    assert status_of(answer) == 403
    answer = await exchange(server, request("POST", "/write", f"X-API-Key: {TRADER}", body=b"x"))
    assert status_of(answer) == 200


async def test_the_first_credential_header_is_the_one(server: HTTPServer) -> None:
    first_good = request("GET", "/guarded", f"X-API-Key: {READER}", "Authorization: Bearer nope")
    first_bad = request("GET", "/guarded", "Authorization: Bearer nope", f"X-API-Key: {READER}")
    assert status_of(await exchange(server, first_good)) == 200
    assert status_of(await exchange(server, first_bad)) == 401


async def test_open_routes_and_snapshots_need_no_key(server: HTTPServer) -> None:
    for path in ("/public", "/anyone", "/livez", "/readyz", "/health"):
        assert status_of(await exchange(server, request("GET", path))) == 200, path


async def test_an_unknown_path_is_a_404_with_or_without_a_key(server: HTTPServer) -> None:
    assert status_of(await exchange(server, request("GET", "/nope"))) == 404
    assert status_of(await exchange(server, request("GET", "/nope", f"X-API-Key: {READER}"))) == 404


async def test_refusals_answer_msgpack_to_msgpack_clients(server: HTTPServer) -> None:
    answer = await exchange(server, request("GET", "/guarded", "Accept: application/msgpack"))
    assert status_of(answer) == 401
    body = msgpack.unpackb(answer.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "unauthorized"


async def test_auth_off_serves_everything_without_a_key(plugin: _Plugin) -> None:
    server = make_server(make_app([plugin]))
    assert server.app.guard is None
    for method, path in (("GET", "/guarded"), ("GET", "/read"), ("POST", "/write")):
        answer = await exchange(server, request(method, path, body=b"x" * (method == "POST")))
        assert status_of(answer) == 200, path


async def test_metrics_scope_guards_metrics_and_stats(plugin: _Plugin) -> None:
    env = auth_environ(SPRINTD_AUTH__METRICS_SCOPE="admin")
    server = make_server(make_app([plugin, HealthPlugin(), MetricsPlugin()], env))
    for path in ("/metrics", "/v1/stats"):
        assert status_of(await exchange(server, request("GET", path))) == 401
        assert (
            status_of(await exchange(server, request("GET", path, f"X-API-Key: {READER}"))) == 403
        )
        answer = await exchange(server, request("GET", path, f"X-API-Key: {ADMIN}"))
        assert status_of(answer) == 200
    assert status_of(await exchange(server, request("GET", "/health"))) == 200
    metrics = (await exchange(server, request("GET", "/metrics", f"X-API-Key: {ADMIN}"))).decode()
    assert 'sprintd_auth_denied_total{key="",reason="unauthorized",worker="0"} 2.0' in metrics
    assert 'sprintd_auth_denied_total{key="reader",reason="forbidden",worker="0"} 2.0' in metrics


async def test_metrics_count_401_403_and_429_by_key_name(plugin: _Plugin) -> None:
    server = make_server(make_app([plugin, MetricsPlugin()], auth_environ()))
    await exchange(server, request("GET", "/read"))
    await exchange(server, request("GET", "/read", "X-API-Key: not-a-key-0123456789"))
    for _ in range(3):
        assert (
            status_of(
                await exchange(server, request("POST", "/write", f"X-API-Key: {READER}", body=b"x"))
            )
            == 403
        )
    assert status_of(await exchange(server, request("GET", "/read", f"X-API-Key: {TRADER}"))) == 403
    # The free tier's burst is 5: seven of twelve over it.
    answers = split(await exchange(server, request("GET", "/guarded", f"X-API-Key: {SLOW}") * 12))
    assert [status for status, _, _ in answers].count(429) == 7
    text = (await exchange(server, request("GET", "/metrics"))).split(b"\r\n\r\n", 1)[1].decode()
    assert promtool_complaints(text) == ""
    samples, types = parse(text)
    assert types["sprintd_auth_denied"] == "counter"
    denied = {
        (dict(labels)["reason"], dict(labels)["key"]): count
        for labels, count in samples["sprintd_auth_denied_total"].items()
    }
    assert denied == {
        ("unauthorized", ""): 2,
        **{("forbidden", name): 0 for name in KEYS},
        **{("rate_limited", name): 0 for name in KEYS},
        ("forbidden", "reader"): 3,
        ("forbidden", "trader"): 1,
        ("rate_limited", "slow"): 7,
    }


# --- constant time -----------------------------------------------------------------


@pytest.mark.parametrize("secret", [READER, ADMIN, "no-such-key-0123456789", "x"])
def test_every_key_is_compared_whatever_is_presented(
    app: App, monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    """No early exit: the work done does not depend on which key matches, or none."""
    compared: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return compare(a, b)

    monkeypatch.setattr("sprintd.auth.hmac.compare_digest", counting)
    assert app.guard is not None
    app.guard.identify(secret.encode())
    assert len(compared) == len(KEYS)
    # Digests of equal length: compare_digest's time depends on the length only.
    assert {len(a) for a, _ in compared} | {len(b) for _, b in compared} == {32}


def test_keys_are_kept_as_digests_only(app: App) -> None:
    assert app.guard is not None
    for key in app.guard.keys:
        assert all(
            secret.encode() not in repr(vars_of(key)).encode() for secret, *_ in KEYS.values()
        )


def vars_of(key: object) -> dict[str, Any]:
    return {name: getattr(key, name) for name in key.__slots__}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        (b"x-api-key", b"abc", b"abc"),
        (b"x-api-key", b"", None),
        (b"authorization", b"Bearer abc", b"abc"),
        (b"authorization", b"BEARER  abc", b"abc"),
        (b"authorization", b"Bearer", None),
        (b"authorization", b"Bearer ", None),
        (b"authorization", b"Basic abc", None),
        (b"authorization", b"Bearer\tabc", None),
    ],
)
def test_presented(name: bytes, value: bytes, key: bytes | None) -> None:
    assert presented(name, value) == key


# --- rate limits -------------------------------------------------------------------


async def test_a_key_over_its_tiers_burst_gets_429_with_retry_after(server: HTTPServer) -> None:
    get = request("GET", "/guarded", f"X-API-Key: {SLOW}")
    # The free tier: a burst of 5, then one a second; the connection pipelines.
    responses = split(await exchange(server, get * 8))
    assert [status for status, _, _ in responses] == [200] * 5 + [429] * 3
    _, head, body = responses[-1]
    assert b"\r\nretry-after: 1\r\n" in head
    assert json.loads(body)["error"]["code"] == "rate_limited"
    # Other keys have buckets of their own.
    assert (
        status_of(await exchange(server, request("GET", "/guarded", f"X-API-Key: {READER}"))) == 200
    )


async def test_a_403_spends_a_token_and_a_429_does_not(app: App, server: HTTPServer) -> None:
    """The limit counts what a key asks for, allowed or not: a key hammering
    a route it may not use is throttled like any other; a refused 429
    spends nothing, so backing off for Retry-After works."""
    assert app.guard is not None
    slow = next(key for key in app.guard.keys if key.name == "slow")
    write = request("POST", "/write", f"X-API-Key: {SLOW}", body=b"x")
    responses = split(await exchange(server, write * 7))
    assert [status for status, _, _ in responses] == [403] * 5 + [429] * 2
    tokens = slow.bucket.tokens  # type: ignore[attr-defined]
    assert tokens < 0.1


def test_tier_limits_come_from_the_settings() -> None:
    limits = AuthSettings().limits
    expected = {
        "free": (1, 5),
        "pro": (10, 50),
        "business": (50, 250),
        "turbo": (100, 500),
        "enterprise": (500, 2500),
    }
    for tier, (rate, burst) in expected.items():
        limit = limits.of(tier)  # type: ignore[arg-type]
        assert (limit.rate, limit.burst) == (rate, burst)
    loaded = load_settings(
        environ={"SPRINTD_AUTH__LIMITS__PRO__RATE": "20", "SPRINTD_AUTH__LIMITS__PRO__BURST": "7"}
    )
    assert (loaded.settings.auth.limits.pro.rate, loaded.settings.auth.limits.pro.burst) == (20, 7)
    assert loaded.settings.auth.limits.free.burst == 5


# --- the audit log -------------------------------------------------------------------


async def test_failures_are_audited_without_the_key(app: App, server: HTTPServer) -> None:
    app.audit.take_pending()
    await exchange(server, request("GET", "/guarded"))
    await exchange(server, request("GET", "/guarded", "X-API-Key: guess-0123456789abcdef"))
    await exchange(server, request("POST", "/write", f"X-API-Key: {READER}", body=b"x"))
    events = app.audit.take_pending()
    assert [(e["event"], e["reason"], e["key"]) for e in events] == [
        ("auth_failed", "no_key", None),
        ("auth_failed", "unknown_key", None),
        ("auth_failed", "missing_scope", "reader"),
    ]
    assert events[2]["scope"] == "trade"
    assert events[2]["method"] == "POST"
    assert events[2]["path"] == "/write"
    text = json.dumps(events)
    assert "guess-0123456789abcdef" not in text
    assert READER not in text


async def test_rate_limit_trips_are_sampled(app: App, server: HTTPServer) -> None:
    app.audit.take_pending()
    await exchange(server, request("GET", "/guarded", f"X-API-Key: {SLOW}") * 12)
    events = app.audit.take_pending()
    # Seven trips inside one sample interval: one line, counting the first.
    assert [(e["event"], e["key"], e["trips"]) for e in events] == [("rate_limited", "slow", 1)]
    assert app.guard is not None
    assert app.guard.denied["rate_limited"] == 7


async def test_admin_actions_are_audited_with_their_outcome(
    app: App, server: HTTPServer, plugin: _Plugin
) -> None:
    app.audit.take_pending()
    answer = await exchange(server, request("POST", "/purge", f"X-API-Key: {ADMIN}", body=b"x"))
    assert status_of(answer) == 200
    answer = await exchange(server, request("POST", "/reset", f"X-API-Key: {ADMIN}", body=b"x"))
    assert status_of(answer) == 202
    answer = await exchange(server, request("POST", "/purge", f"X-API-Key: {TRADER}", body=b"x"))
    assert status_of(answer) == 403
    assert plugin.purged == 1
    events = app.audit.take_pending()
    assert [(e["event"], e.get("key"), e.get("status"), e["path"]) for e in events] == [
        ("admin_action", "admin", 200, "/purge"),
        ("admin_action", "admin", 202, "/reset"),
        ("auth_failed", "trader", None, "/purge"),
    ]


async def test_admin_actions_are_audited_with_auth_off(plugin: _Plugin) -> None:
    app = make_app([plugin])
    await exchange(make_server(app), request("POST", "/purge", body=b"x"))
    assert [(e["event"], e["key"], e["status"]) for e in app.audit.take_pending()] == [
        ("admin_action", None, 200)
    ]


# --- keys from the environment and files -----------------------------------------------


def _guarded_app(plugin: _Plugin, env: dict[str, str]) -> App:
    return make_app([plugin], {"SPRINTD_AUTH__ENABLED": "true", **env})


def test_key_from_env_and_file(
    plugin: _Plugin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SPRINTD_KEY", READER)
    secret = tmp_path / "key"
    secret.write_text(TRADER + "\n")
    secret.chmod(0o600)
    app = _guarded_app(
        plugin,
        {
            "SPRINTD_AUTH__KEYS__A__KEY_ENV": "TEST_SPRINTD_KEY",
            "SPRINTD_AUTH__KEYS__B__KEY_FILE": str(secret),
        },
    )
    assert app.guard is not None
    assert app.guard.identify(READER.encode()).name == "a"  # type: ignore[union-attr]
    assert app.guard.identify(TRADER.encode()).name == "b"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"SPRINTD_AUTH__KEYS__A__KEY_ENV": "TEST_SPRINTD_NOT_SET"},
            "auth.keys.a.key_env = 'TEST_SPRINTD_NOT_SET': no such environment variable",
        ),
        (
            {"SPRINTD_AUTH__KEYS__A__KEY_FILE": "/nonexistent/key"},
            "auth.keys.a.key_file = '/nonexistent/key': cannot read it: No such file or directory",
        ),
        (
            {"SPRINTD_AUTH__KEYS__A__KEY": READER, "SPRINTD_AUTH__KEYS__B__KEY": READER},
            "auth.keys.a and auth.keys.b hold the same key",
        ),
    ],
)
def test_unusable_keys_stop_start_up(plugin: _Plugin, env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _guarded_app(plugin, env)
    assert str(caught.value) == expected
    assert READER not in str(caught.value)


def test_a_short_key_from_a_file_is_refused(plugin: _Plugin, tmp_path: Path) -> None:
    secret = tmp_path / "key"
    secret.write_text("short")
    with pytest.raises(ConfigError, match=r"^auth\.keys\.a\.key_file = .*: an API key is 16"):
        _guarded_app(plugin, {"SPRINTD_AUTH__KEYS__A__KEY_FILE": str(secret)})


@pytest.mark.parametrize(
    "env",
    [
        {"SPRINTD_AUTH__KEYS__A__KEY": "short-secret"},
        {"SPRINTD_AUTH__KEYS__A__KEY": "has a space 0123456789"},
        {
            "SPRINTD_AUTH__KEYS__A__KEY": "a-secret-0123456789",
            "SPRINTD_AUTH__KEYS__A__KEY_ENV": "X",
        },
        {"SPRINTD_AUTH__KEYS__A__KYE": "a-secret-0123456789"},
        {"SPRINTD_AUTH__KEYS__A": "a-secret-0123456789"},
    ],
)
def test_config_errors_never_show_a_key(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(("auth.keys.a", "SPRINTD_AUTH__KEYS__A"))
    for secret in env.values():
        if secret != "X":
            assert secret not in message


def test_sprintd_config_masks_keys(sprintd_cli: Any) -> None:
    result = sprintd_cli(
        "config",
        env={"SPRINTD_AUTH__ENABLED": "true", "SPRINTD_AUTH__KEYS__OPS__KEY": ADMIN},
    )
    assert result.returncode == 0, result.stderr
    assert ADMIN not in result.stdout
    assert "auth.keys.ops.key" in result.stdout
    assert "**********" in result.stdout


# --- on a real daemon ------------------------------------------------------------------


def _daemon_env(audit: Path) -> dict[str, str]:
    return auth_environ(
        SPRINTD_AUDIT__FILE=str(audit),
        SPRINTD_AUTH__KEYS__ENV__KEY_ENV="TEST_SPRINTD_ENV_KEY",
        SPRINTD_AUTH__KEYS__ENV__SCOPES='["read", "trade"]',
        TEST_SPRINTD_ENV_KEY="env-key-0123456789abcd",
    )


def _audit_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_guarded_daemon_end_to_end(daemon: Any, tmp_path: Path, poll: Any) -> None:
    audit = tmp_path / "audit.log"
    served = daemon(env=_daemon_env(audit))
    order = json.dumps(
        {"symbol": "BTC-USD", "side": "buy", "type": "limit", "price": "100", "qty": "1"}
    ).encode()
    json_type = {"Content-Type": "application/json"}
    # The orders plugin's scopes: reads need read, changes need trade.
    assert served.get("/v1/book/BTC-USD").status == 401
    assert served.get("/v1/book/BTC-USD", headers={"X-API-Key": READER}).status == 200
    assert served.request("POST", "/v1/orders", order, json_type).status == 401
    reader = json_type | {"X-API-Key": READER}
    assert served.request("POST", "/v1/orders", order, reader).status == 403
    trader = json_type | {"Authorization": "Bearer env-key-0123456789abcd"}
    assert served.request("POST", "/v1/orders", order, trader).status == 201
    assert served.get("/health").status == 200
    assert served.get("/livez").status == 200
    # No secret anywhere a client or an operator can read.
    health = served.get("/health").body.decode()
    metrics = served.get("/metrics").body.decode()
    events = poll(lambda: (found := _audit_lines(audit)) and len(found) >= 5 and found)
    for text in (health, metrics, audit.read_text(), served.stderr()):
        for secret in (READER, TRADER, ADMIN, SLOW, "env-key-0123456789abcd"):
            assert secret not in text
    kinds = [event["event"] for event in events]
    assert kinds[:2] == ["config_loaded", "tuning_applied"]
    assert kinds[2:] == ["auth_failed"] * 3
    loaded = events[0]
    assert loaded["auth"] is True
    assert {key["name"]: key["source"] for key in loaded["keys"]}["env"] == "key_env"
    assert [event["reason"] for event in events[2:]] == ["no_key", "no_key", "missing_scope"]
    assert all(event["peer"].startswith("127.0.0.1:") for event in events[2:])


def test_sighup_is_audited(daemon: Any, tmp_path: Path, poll: Any) -> None:
    audit = tmp_path / "audit.log"
    served = daemon(env=_daemon_env(audit))
    served.signal(1)  # SIGHUP
    event = poll(lambda: next((e for e in _audit_lines(audit) if "reload" in e["event"]), None))
    assert event["event"] == "config_reloaded"
    assert event["applied"] == []


def test_a_key_from_a_missing_variable_stops_start_up(sprintd_cli: Any) -> None:
    result = sprintd_cli(
        "run",
        "--port",
        "0",
        env={"SPRINTD_AUTH__ENABLED": "true", "SPRINTD_AUTH__KEYS__A__KEY_ENV": "NOT_SET_ANYWHERE"},
    )
    assert result.returncode == 2
    assert result.stderr_lines[-1] == (
        "sprintd: config error: auth.keys.a.key_env = 'NOT_SET_ANYWHERE': "
        "no such environment variable"
    )


def test_a_rejected_configuration_is_not_audited_as_loaded(
    sprintd_cli: Any, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    result = sprintd_cli(
        "run",
        "--port",
        "0",
        env={
            "SPRINTD_AUDIT__FILE": str(audit),
            "SPRINTD_AUTH__ENABLED": "true",
            "SPRINTD_AUTH__KEYS__A__KEY_ENV": "NOT_SET_ANYWHERE",
        },
    )
    assert result.returncode == 2
    kinds = [event["event"] for event in _audit_lines(audit)]
    assert "config_loaded" not in kinds
    assert "tuning_applied" not in kinds


def test_the_example_config_is_valid() -> None:
    path = Path(__file__).parents[1] / "config" / "secure.toml"
    loaded = load_settings(config_path=str(path), sections=plugin_sections(make_manager()))
    auth = loaded.settings.auth
    assert auth.enabled
    assert {name: key.scopes for name, key in auth.keys.items()} == {
        "trading-bot": ("read", "trade"),
        "desk": ("read",),
        "ops": ("read", "admin"),
    }
    assert (auth.limits.pro.rate, auth.limits.pro.burst) == (10, 100)


def test_a_changed_key_is_listed_as_needing_a_restart() -> None:
    before = load_settings(environ={"SPRINTD_AUTH__KEYS__A__KEY": READER})
    after = load_settings(environ={"SPRINTD_AUTH__KEYS__A__KEY": TRADER})
    kept, applied, restart = reloaded(before, after)
    assert applied == []
    assert restart == ["auth.keys.a.key"]
    # The running settings keep the old key until the restart.
    key = kept.settings.auth.keys["a"].key
    assert key is not None and key.get_secret_value() == READER
