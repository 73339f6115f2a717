"""Log lines as JSON, and the access log, from real daemons (``sprintd.logs``)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .daemons import NO_ORDERS, PLUGINS_DIR, Daemon, DaemonFactory, RawResponse, run_cli, wait_for

FAULTY = {"SPRINTD_PLUGINS": '["sprintd_test_faulty"]'}
KEY = "logs-test-key-0123456789"
AUTH = {
    "SPRINTD_AUTH__ENABLED": "true",
    "SPRINTD_AUTH__KEYS__READER__KEY": KEY,
    "SPRINTD_AUTH__KEYS__READER__SCOPES": '["read", "admin"]',
}
TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def _ask(daemon: Daemon, head: str) -> RawResponse:
    with daemon.connect() as conn:
        conn.send(head.encode("latin-1"))
        return conn.read_response(head=head.startswith("HEAD "))


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_log_lines_parse_and_carry_the_fields(daemon: DaemonFactory) -> None:
    served = daemon(env={"SPRINTD_LOG__FORMAT": "json", **FAULTY}, pythonpath=[PLUGINS_DIR])
    response = _ask(
        served, "GET /test/faulty/none HTTP/1.1\r\nHost: x\r\nX-Request-ID: fault-7\r\n\r\n"
    )
    assert response.status == 500
    assert response.header("x-request-id") == "fault-7"
    failed = wait_for(
        lambda: [
            line for line in _json_lines(served.stderr()) if line.get("request_id") == "fault-7"
        ]
    )
    # Every line on stderr is one JSON object (json.loads above would raise).
    lines = _json_lines(served.stderr())
    for line in lines:
        assert {"time", "level", "logger", "message", "worker", "pid"} <= line.keys(), line
        assert TIME.fullmatch(line["time"]), line
    serving = [line for line in lines if "serving http" in line["message"]]
    assert serving and serving[0]["worker"] == 0 and serving[0]["level"] == "INFO"
    assert serving[0]["logger"] == "sprintd.server"
    assert len(failed) == 1
    assert failed[0]["level"] == "ERROR" and failed[0]["logger"] == "sprintd.server"
    assert "handler failed" in failed[0]["message"]
    assert "Traceback" in failed[0]["exc"]
    assert all("request_id" not in line for line in serving)


def test_text_log_lines_stay_as_they_were(daemon: DaemonFactory) -> None:
    served = daemon(env=FAULTY, pythonpath=[PLUGINS_DIR])
    _ask(served, "GET /test/faulty/none HTTP/1.1\r\nHost: x\r\nX-Request-ID: fault-8\r\n\r\n")
    line = wait_for(
        lambda: [line for line in served.stderr().splitlines() if "handler failed" in line]
    )[0]
    assert re.match(r"\S+ \S+ sprintd\[\d+\] ERROR sprintd\.server: handler failed", line), line
    assert line.endswith("[request_id=fault-8]"), line
    assert not served.stderr().lstrip().startswith("{")


def _access_lines(path: Path, count: int, skip: str = "") -> list[str]:
    """The first ``count`` lines of ``path``, once written; without those
    starting with ``skip`` (the audit log's, on a shared standard output)."""

    def ready() -> list[str] | None:
        lines = path.read_text().splitlines() if path.exists() else []
        lines = [line for line in lines if not (skip and line.startswith(skip))]
        return lines if len(lines) >= count else None

    lines: list[str] = wait_for(ready)
    return lines


def test_the_access_log_has_a_line_per_request_with_its_id(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    log = tmp_path / "logs" / "access.log"
    env = {"SPRINTD_LOG__ACCESS": str(log), "SPRINTD_LOG__FORMAT": "json", **AUTH}
    served = daemon(env=env)
    given = _ask(served, "GET /v1/stats HTTP/1.1\r\nHost: x\r\nX-Request-ID: acc-1\r\n\r\n")
    made = _ask(served, "GET /nope?q=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    keyed = _ask(
        served,
        f"POST /v1/price-engine/reset HTTP/1.1\r\nHost: x\r\nX-API-Key: {KEY}\r\n"
        "Content-Length: 0\r\n\r\n",
    )
    # A snapshot: with the access log on, the fast path leaves it to dispatch.
    snapshot = _ask(served, "GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
    lines = [json.loads(line) for line in _access_lines(log, 4)]
    assert len(lines) == 4, lines
    first, second, third, fourth = lines
    assert first["method"] == "GET" and first["target"] == "/v1/stats"
    assert first["status"] == 200 and first["request_id"] == "acc-1"
    assert first["key"] is None
    assert first["bytes"] == len(given.raw_head) + len(given.body)
    assert first["duration_ms"] >= 0 and first["worker"] == 0
    assert TIME.fullmatch(first["time"])
    assert second["target"] == "/nope?q=1" and second["status"] == 404
    assert second["request_id"] == made.header("x-request-id")
    assert third["status"] == keyed.status and third["key"] == "reader"
    assert third["request_id"] == keyed.header("x-request-id")
    assert fourth["target"] == "/livez" and fourth["status"] == snapshot.status == 200
    assert fourth["request_id"] is None


def test_the_access_log_in_text_goes_to_stdout(daemon: DaemonFactory) -> None:
    served = daemon(env={"SPRINTD_LOG__ACCESS": "stdout"})
    _ask(served, 'GET /v1/stats?a="b" HTTP/1.1\r\nHost: x\r\nX-Request-ID: txt-1\r\n\r\n')
    line = _access_lines(served.workdir / "stdout.log", 1, skip='{"ts":')[0]
    pattern = r'\S+Z 0 "GET /v1/stats\?a=\\"b\\"" 200 \d+ \d+\.\d{3} txt-1 -'
    assert re.fullmatch(pattern, line), line


def test_an_access_log_that_cannot_be_opened_stops_start_up(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli(
        "run",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "data"),
        env={"SPRINTD_LOG__ACCESS": str(blocker / "access.log")},
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr_lines[-1].startswith("sprintd: config error: log.access = "), result.stderr


def test_json_lines_name_each_worker_and_none_for_the_supervisor(daemon: DaemonFactory) -> None:
    env = {"SPRINTD_LOG__FORMAT": "json", **NO_ORDERS}
    served = daemon("--workers", "2", workers=2, env=env)
    lines = _json_lines(served.stderr())
    serving = {line["worker"] for line in lines if "serving http on" in line["message"]}
    assert serving == {0, 1}
    supervising = [line for line in lines if line["message"].startswith("supervising 2 workers")]
    assert len(supervising) == 1 and supervising[0]["worker"] is None
    assert supervising[0]["logger"] == "sprintd.workers"
