"""The asgi plugin: a real FastAPI application (tests/asgi_app.py) served by
real daemons, beside the plugins, with auth, lifespan and the daemon's errors."""

from __future__ import annotations

import concurrent.futures
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from sprintd.plugins.asgi.plugin import AsgiPlugin
from sprintd.testing import exchange, make_app, make_server

from .daemons import TESTS_DIR, CLIResult, Daemon, DaemonFactory, wait_for

APP_ENV = {"SPRINTD_ASGI__APP": "asgi_app:app", "SPRINTD_ASGI__MOUNT": "/api"}
KEY = "asgi-test-key-0123456789"


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    return module_daemon(env=APP_ENV, pythonpath=[TESTS_DIR])


def _url(daemon: Daemon, path: str) -> str:
    return f"http://{daemon.host}:{daemon.port}{path}"


@pytest.mark.slow
def test_path_parameters_and_the_query_string_reach_the_application(served: Daemon) -> None:
    result = served.get("/api/items/42?q=caf%C3%A9")
    assert result.status == 200
    assert result.json() == {"item_id": 42, "q": "café"}
    # A percent-encoded path is decoded in the scope's path, as received in raw_path.
    assert served.get("/api/items/%34%32").json() == {"item_id": 42, "q": None}
    invalid = served.get("/api/items/not-a-number")
    assert invalid.status == 422


@pytest.mark.slow
def test_a_json_body_is_validated_and_answered(served: Daemon) -> None:
    body = json.dumps({"name": "widget", "price": 9.5, "tags": ["a"]}).encode()
    created = served.request(
        "POST", "/api/items", body, headers={"Content-Type": "application/json"}
    )
    assert created.status == 201
    assert created.json() == {"created": {"name": "widget", "price": 9.5, "tags": ["a"]}}
    refused = served.request(
        "POST", "/api/items", b'{"name": "x"}', headers={"Content-Type": "application/json"}
    )
    assert refused.status == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "price"]


@pytest.mark.slow
def test_a_plain_function_endpoint_runs_in_a_worker_thread(served: Daemon) -> None:
    answer = served.get("/api/sync").json()
    assert answer["thread"] != answer["main"]


@pytest.mark.slow
def test_request_headers_reach_the_application(served: Daemon) -> None:
    result = served.get("/api/headers", headers={"X-Token": "t0k3n", "Accept": "text/x"})
    assert result.json() == {"x_token": "t0k3n", "accept": "text/x"}
    assert served.get("/api/headers").status == 422  # X-Token required


@pytest.mark.slow
def test_the_scope_has_the_mount_as_root_path_and_the_addresses(served: Daemon) -> None:
    with httpx.Client() as client:
        response = client.get(_url(served, "/api/scope?a=1&b=%20"))
    scope = response.json()
    assert scope["path"] == "/api/scope"
    assert scope["raw_path"] == "/api/scope"
    assert scope["root_path"] == "/api"
    assert scope["query_string"] == "a=1&b=%20"
    assert scope["server"] == [served.host, served.port]
    assert scope["client"][0] == "127.0.0.1"
    assert scope["http_version"] == "1.1"
    # The application's own URLs carry the mount.
    assert scope["url_for"] == f"http://{served.host}:{served.port}/api/items/1"
    assert scope["state"] == "hello from the lifespan"


@pytest.mark.slow
def test_only_paths_under_the_mount_reach_it_and_the_plugins_keep_theirs(served: Daemon) -> None:
    assert served.get("/apix/items/1").json()["error"]["code"] == "not_found"
    assert served.get("/api/nope").json() == {"detail": "Not Found"}  # FastAPI's 404
    assert served.get("/health").status == 200
    assert served.get("/livez").status == 200


@pytest.mark.slow
def test_a_streaming_response_comes_in_pieces(served: Daemon) -> None:
    with (
        httpx.Client() as client,
        client.stream("GET", _url(served, "/api/stream?n=50")) as response,
    ):
        assert response.headers["transfer-encoding"] == "chunked"
        lines = [line for line in response.iter_lines() if line]
    assert lines == [f"piece {i}" for i in range(50)]


@pytest.mark.slow
def test_an_application_exception_is_a_500_and_the_connection_goes_on(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(b"GET /api/boom HTTP/1.1\r\nHost: t\r\n\r\n")
        failed = conn.read_response()
        conn.send(b"GET /api/items/1 HTTP/1.1\r\nHost: t\r\n\r\n")
        after = conn.read_response()
    assert failed.status == 500
    assert after.status == 200
    assert "handler failed after its answer: GET /api/boom" in served.stderr()
    assert "ZeroDivisionError: the application's own bug" in served.stderr()


@pytest.mark.slow
def test_a_head_request_has_the_get_s_length_and_no_body(served: Daemon) -> None:
    with served.connect() as conn:
        conn.send(b"HEAD /api/items/7 HTTP/1.1\r\nHost: t\r\n\r\n")
        head = conn.read_response(head=True)
        conn.send(b"GET /api/items/7 HTTP/1.1\r\nHost: t\r\n\r\n")
        got = conn.read_response()
    assert head.status == 200
    assert head.header("content-length") == str(len(got.body))


@pytest.mark.slow
def test_requests_are_served_concurrently(served: Daemon) -> None:
    # Each answer waits for all eight to be in the application together.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: served.get("/api/gather?n=8"), range(8)))
    assert [r.json() for r in results] == [{"gathered": 8}] * 8


@pytest.mark.slow
def test_the_mount_s_latency_is_recorded_as_a_route_s(served: Daemon) -> None:
    for _ in range(3):
        served.get("/api/items/1")
    stats = served.get("/v1/stats").json()
    assert "/api (asgi)" in json.dumps(stats)


@pytest.mark.slow
def test_a_key_the_daemon_requires_is_required_by_the_mount(daemon: DaemonFactory) -> None:
    env = {
        **APP_ENV,
        "SPRINTD_ASGI__SCOPE": "trade",
        "SPRINTD_AUTH__ENABLED": "true",
        "SPRINTD_AUTH__KEYS__READER__KEY": KEY,
        "SPRINTD_AUTH__KEYS__TRADER__KEY": KEY[::-1],
        "SPRINTD_AUTH__KEYS__TRADER__SCOPES": '["read", "trade"]',
    }
    served = daemon(env=env, pythonpath=[TESTS_DIR])
    missing = served.get("/api/items/1")
    assert missing.status == 401
    assert missing.json()["error"]["code"] == "unauthorized"
    assert served.get("/api/items/1", headers={"X-API-Key": KEY}).status == 403
    allowed = served.get("/api/items/1", headers={"Authorization": f"Bearer {KEY[::-1]}"})
    assert allowed.json() == {"item_id": 1, "q": None}


@pytest.mark.slow
def test_a_bare_application_without_lifespan_is_served_and_its_fault_is_our_500(
    daemon: DaemonFactory,
) -> None:
    served = daemon(env={"SPRINTD_ASGI__APP": "asgi_app:raw"}, pythonpath=[TESTS_DIR])
    wait_for(lambda: "has no lifespan" in served.stderr())
    with served.connect() as conn:
        conn.send(b"GET /fail HTTP/1.1\r\nHost: t\r\n\r\n")
        failed = conn.read_response()
        conn.send(b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi")
        after = conn.read_response()
    assert failed.status == 500
    assert failed.json()["error"]["code"] == "internal_error"
    assert after.body == b"POST /x hi"
    assert "handler failed: GET /fail: KeyError" in served.stderr()


@pytest.mark.slow
def test_the_lifespan_shuts_down_when_the_daemon_stops(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    marker = tmp_path / "shutdown"
    served = daemon(env={**APP_ENV, "ASGI_APP_SHUTDOWN_FILE": str(marker)}, pythonpath=[TESTS_DIR])
    assert served.get("/api/items/1").status == 200
    assert not marker.exists()
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert marker.read_text() == "shut down"


def _config_errors(result: CLIResult) -> list[str]:
    return [line for line in result.stderr_lines if line.startswith("sprintd: config error")]


@pytest.mark.slow
def test_a_failing_lifespan_start_up_stops_the_daemon_with_one_line(
    sprintd_cli: Callable[..., CLIResult],
) -> None:
    env = {**APP_ENV, "ASGI_APP_FAIL_STARTUP": "1"}
    result = sprintd_cli("run", "--port", "0", env=env, pythonpath=[TESTS_DIR])
    assert result.returncode == 2
    assert _config_errors(result) == [
        "sprintd: config error: asgi: lifespan start-up failed: "
        "RuntimeError: the database is not there"
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("app", "why"),
    [
        ("no_such_module:app", ": no module named 'no_such_module'"),
        ("asgi_app:nothing", ": 'asgi_app' has no attribute 'nothing'"),
        ("asgi_app:Item.name", ": 'asgi_app' has no attribute 'Item.name'"),
        ("asgi_app:_gathering", ": list is not an ASGI application"),
        ("asgi_app", " from environment SPRINTD_ASGI__APP: Value error, give the application"),
    ],
)
def test_an_app_that_cannot_be_loaded_is_a_config_error(
    sprintd_cli: Callable[..., CLIResult], app: str, why: str
) -> None:
    env: dict[str, Any] = {"SPRINTD_ASGI__APP": app}
    result = sprintd_cli("run", "--port", "0", env=env, pythonpath=[TESTS_DIR])
    assert result.returncode == 2
    (line,) = result.stderr_lines
    assert line.startswith(f"sprintd: config error: asgi.app = '{app}'{why}"), line


async def test_with_lifespan_off_the_application_is_served_at_once_in_process() -> None:
    # No daemon and no background task: nothing waits for a start-up.
    env = {"SPRINTD_ASGI__APP": "tests.asgi_app:raw", "SPRINTD_ASGI__LIFESPAN": "off"}
    server = make_server(make_app([AsgiPlugin()], env))
    raw = b"PUT /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody"
    answer = await exchange(server, raw + b"GET /fail HTTP/1.1\r\nHost: h\r\n\r\n")
    first, _, second = answer.partition(b"HTTP/1.1 500")
    assert first.startswith(b"HTTP/1.1 200 OK\r\n")
    assert first.endswith(b"\r\n\r\nPUT /a b body")
    assert b'"internal_error"' in second


def test_without_an_app_nothing_is_mounted() -> None:
    app = make_app([AsgiPlugin()])
    assert app.background == []
    assert not app.router.has_route(b"GET", b"/")


# --- WebSocket ------------------------------------------------------------------------


def _ws_url(daemon: Daemon, path: str) -> str:
    return f"ws://{daemon.host}:{daemon.port}{path}"


def test_a_websocket_is_accepted_and_echoes_text_and_bytes(served: Daemon) -> None:
    with connect(
        _ws_url(served, "/api/ws/echo"), subprotocols=["chat.v2", "chat.v1"], proxy=None
    ) as ws:
        assert ws.subprotocol == "chat.v2"
        assert json.loads(ws.recv(timeout=10)) == {"path": "/api/ws/echo", "root_path": "/api"}
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo: hello"
        ws.send(b"\x00\x01\x02")
        assert ws.recv(timeout=10) == b"\x02\x01\x00"
        big = "x" * 200_000  # fragmented by the client, whole to the application
        ws.send(big)
        assert ws.recv(timeout=10) == "echo: " + big


def test_the_application_closing_is_the_peers_close_code(served: Daemon) -> None:
    with connect(_ws_url(served, "/api/ws/echo"), proxy=None) as ws:
        ws.recv(timeout=10)
        ws.send("bye")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4000


def test_the_peers_close_reaches_the_application_as_a_disconnect(served: Daemon) -> None:
    before = httpx.get(_url(served, "/api/ws/disconnects")).json()
    with connect(_ws_url(served, "/api/ws/echo"), proxy=None) as ws:
        ws.recv(timeout=10)
        ws.close(code=4321)
    wait_for(lambda: httpx.get(_url(served, "/api/ws/disconnects")).json() == [*before, 4321])


def test_a_websocket_closed_before_it_is_accepted_is_a_403(served: Daemon) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(_ws_url(served, "/api/ws/refuse"), proxy=None, open_timeout=10)
    assert refused.value.response.status_code == 403


def test_a_websocket_application_that_fails_first_is_a_500_and_the_daemon_serves_on(
    served: Daemon,
) -> None:
    with pytest.raises(InvalidStatus) as failed:
        connect(_ws_url(served, "/api/ws/fail"), proxy=None, open_timeout=10)
    assert failed.value.response.status_code == 500
    with connect(_ws_url(served, "/api/ws/echo"), proxy=None) as ws:
        assert json.loads(ws.recv(timeout=10))["path"] == "/api/ws/echo"


def test_a_drain_closes_websockets_with_1001_and_tells_the_application(
    daemon: DaemonFactory,
) -> None:
    served = daemon(env=APP_ENV, pythonpath=[TESTS_DIR])
    with connect(_ws_url(served, "/api/ws/echo"), proxy=None) as ws:
        ws.recv(timeout=10)
        served.signal(signal.SIGTERM)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert served.wait() == 0
