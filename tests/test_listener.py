"""Listeners only one daemon can hold: a port in use stops start-up with one
line and exit 2, whoever holds it, on every listener and with any number of
workers; a supervisor's workers share each port; default binary ports follow
the HTTP port.
"""

from __future__ import annotations

import http.client
import os
import re
import signal
import socket
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from .daemons import NO_ORDERS, PLUGINS_DIR, CLIResult, Daemon, DaemonFactory, run_cli, wait_for

FRAMED_PLUGIN = {"SPRINTD_PLUGINS": '["sprintd_test_framed"]'}
# A second daemon that is not stopped by its port is still running after this.
START_BOUND = 20.0


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def _one_line(result: CLIResult, address: str, name: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr_lines if line.startswith("sprintd:")]
    assert errors == [f"sprintd: cannot listen on {address} ({name}): address already in use"], (
        result.stderr
    )
    assert "Traceback" not in result.stderr


def _start(*args: str, env: dict[str, str], cwd: Path, plugins: bool = False) -> CLIResult:
    """``sprintd run ARGS`` expected to stop at start-up (fails if still running)."""
    pythonpath = [PLUGINS_DIR] if plugins else []
    return run_cli(
        "run",
        "--data-dir",
        "data",
        *args,
        env=env,
        pythonpath=pythonpath,
        cwd=cwd,
        timeout=START_BOUND,
    )


@pytest.fixture
def held() -> Iterator[socket.socket]:
    """A port held by a plain listening socket of another program."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_held_by_another_program_is_one_line_and_exit_2(
    held: socket.socket, workers: str, tmp_path: Path
) -> None:
    port = held.getsockname()[1]
    result = _start("--port", str(port), "--workers", workers, env=NO_ORDERS, cwd=tmp_path)
    _one_line(result, f"127.0.0.1:{port}", "http")


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_a_foreign_reuseport_group_is_not_joined(workers: str, tmp_path: Path) -> None:
    with socket.socket() as foreign:
        foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        foreign.bind(("127.0.0.1", 0))
        foreign.listen()
        port = foreign.getsockname()[1]
        result = _start("--port", str(port), "--workers", workers, env=NO_ORDERS, cwd=tmp_path)
    _one_line(result, f"127.0.0.1:{port}", "http")


@pytest.mark.parametrize("first", [1, 2], ids=["first-1-worker", "first-2-workers"])
@pytest.mark.parametrize("second", ["1", "2"], ids=["second-1-worker", "second-2-workers"])
def test_a_second_daemon_on_an_occupied_port_fails_to_start(
    daemon: DaemonFactory, first: int, second: str, tmp_path: Path
) -> None:
    served = daemon("--workers", str(first), workers=first, env=NO_ORDERS)
    result = _start("--port", str(served.port), "--workers", second, env=NO_ORDERS, cwd=tmp_path)
    _one_line(result, f"{served.host}:{served.port}", "http")
    # The first daemon has every connection still.
    assert served.get("/livez").status == 200


def test_a_plugin_port_in_use_names_its_listener(held: socket.socket, tmp_path: Path) -> None:
    port = held.getsockname()[1]
    result = _start("--port", "0", env={"SPRINTD_ORDERS__ENTRY_PORT": str(port)}, cwd=tmp_path)
    _one_line(result, f"127.0.0.1:{port}", "orders-entry")


def test_a_plugin_port_in_use_stops_a_supervised_daemon(
    held: socket.socket, tmp_path: Path
) -> None:
    port = held.getsockname()[1]
    env = NO_ORDERS | FRAMED_PLUGIN | {"FRAMED_TEST_PORT": str(port)}
    result = _start("--port", "0", "--workers", "2", env=env, cwd=tmp_path, plugins=True)
    _one_line(result, f"127.0.0.1:{port}", "test-framed")


def _serving(served: Daemon, name: str) -> set[tuple[str, int]]:
    found = re.findall(rf"worker (\d+) serving {name} on (\S+):(\d+)", served.stderr())
    return {(host, int(port)) for _, host, port in found}


def test_the_workers_of_one_daemon_share_a_plugin_port(daemon: DaemonFactory) -> None:
    env = NO_ORDERS | FRAMED_PLUGIN
    served = daemon("--workers", "2", workers=2, env=env, pythonpath=[PLUGINS_DIR])
    wait_for(lambda: len(re.findall(r"serving test-framed", served.stderr())) == 2)
    ((host, port),) = _serving(served, "test-framed")
    # ... and no other process can join it.
    result = run_cli(
        "run",
        "--port",
        "0",
        "--data-dir",
        str(served.workdir / "second"),
        env=env | {"FRAMED_TEST_PORT": str(port)},
        pythonpath=[PLUGINS_DIR],
        timeout=START_BOUND,
    )
    _one_line(result, f"{host}:{port}", "test-framed")
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    # Its port closed with the daemon: the supervisor kept no copy open.
    assert _refused(host, port)


def test_a_restarted_worker_serves_the_same_port(daemon: DaemonFactory) -> None:
    served = daemon("--workers", "2", workers=2, env=NO_ORDERS)
    pids: set[int] = set()

    def both() -> bool:
        pids.add(served.get("/health").json()["runtime"]["pid"])
        return len(pids) == 2

    wait_for(both, timeout=20, interval=0)
    victim = pids.pop()
    os.kill(victim, signal.SIGKILL)
    fresh: set[int] = set()

    def restarted() -> bool:
        pid = served.get("/health").json()["runtime"]["pid"]
        if pid not in pids and pid != victim:
            fresh.add(pid)
        return bool(fresh)

    wait_for(restarted, timeout=20, interval=0)
    assert served.process.poll() is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _bound(port: int) -> bool:
    """Whether something holds ``port`` now."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_two_daemons_that_differ_only_in_port_both_start(daemon: DaemonFactory) -> None:
    # Two neighbouring HTTP ports whose derived binary ports are free too.
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            base: int = sock.getsockname()[1]
        wanted = [base + offset for offset in (0, 1, 1000, 1001, 2000, 2001)]
        if wanted[-1] < 65536 and not any(_bound(port) for port in wanted):
            break
    else:
        pytest.fail("no free run of ports")
    # The test environment pins the binary ports to 0; unset here, they
    # follow the HTTP port, as for two instances on one host.
    unpinned: dict[str, str | None] = {
        "SPRINTD_ORDERS__ENTRY_PORT": None,
        "SPRINTD_PRICES__FEED_PORT": None,
    }
    for http_port in (base, base + 1):
        served = daemon("--port", str(http_port), env=unpinned)
        assert served.port == http_port
        assert _serving(served, "orders-entry") == {("127.0.0.1", http_port + 1000)}
        assert _serving(served, "prices-feed") == {("127.0.0.1", http_port + 2000)}


# --- [server] uds: a Unix socket beside the port -------------------------------


class _UnixConnection(http.client.HTTPConnection):
    """http.client over a Unix socket: the client a front proxy on the host is."""

    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(10)
        self.sock.connect(str(self.unix_path))


def _get(path: Path, target: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET ``target`` over the Unix socket at ``path``: status, headers, body."""
    conn = _UnixConnection(path)
    try:
        conn.request("GET", target, headers=headers)
        response = conn.getresponse()
        fields = {name.lower(): value for name, value in response.getheaders()}
        return response.status, fields, response.read()
    finally:
        conn.close()


def _uds(path: Path) -> dict[str, str]:
    return {"SPRINTD_SERVER__UDS": str(path)}


@pytest.mark.parametrize("workers", [1, 2])
def test_the_unix_socket_serves_http_and_goes_at_shutdown(
    daemon: DaemonFactory, tmp_path: Path, workers: int
) -> None:
    path = tmp_path / "run" / "http.sock"
    path.parent.mkdir()
    served = daemon("--workers", str(workers), workers=workers, env=NO_ORDERS | _uds(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o660
    assert stat.S_ISSOCK(path.stat().st_mode)
    status, fields, body = _get(path, "/v1/stats", **{"X-Request-ID": "uds-1"})
    assert status == 200 and fields["x-request-id"] == "uds-1"
    assert b"{" in body
    # TCP still serves beside it.
    assert served.get("/livez").status == 200
    if workers == 2:
        # Both workers accept on the one socket: two prefixes of made ids.
        prefixes: set[str] = set()

        def both() -> bool:
            _, made, _ = _get(path, "/v1/stats")
            prefixes.add(made["x-request-id"].split("-")[0])
            return len(prefixes) == 2

        wait_for(both, timeout=20)
    served.signal(signal.SIGTERM)
    assert served.wait() == 0
    assert not path.exists()


def test_the_socket_of_a_killed_daemon_is_replaced(daemon: DaemonFactory, tmp_path: Path) -> None:
    path = tmp_path / "http.sock"
    killed = daemon(env=NO_ORDERS | _uds(path))
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert stat.S_ISSOCK(path.stat().st_mode), "a killed daemon leaves its socket file"
    with pytest.raises(ConnectionRefusedError), socket.socket(socket.AF_UNIX) as probe:
        probe.connect(str(path))
    daemon(env=NO_ORDERS | _uds(path))
    assert _get(path, "/livez")[0] == 200


@pytest.mark.parametrize("second", ["1", "2"])
def test_a_socket_a_live_daemon_serves_is_one_line_and_exit_2(
    daemon: DaemonFactory, tmp_path: Path, second: str
) -> None:
    path = tmp_path / "http.sock"
    served = daemon(env=NO_ORDERS | _uds(path))
    result = _start("--port", "0", "--workers", second, env=NO_ORDERS | _uds(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr_lines if line.startswith("sprintd:")]
    assert errors == [
        f"sprintd: cannot listen on unix:{path} (http-unix): in use by a running process"
    ], result.stderr
    # The first daemon's socket is still there and still its own.
    with socket.socket(socket.AF_UNIX) as client:
        client.connect(str(path))
    assert served.get("/livez").status == 200


def test_a_path_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "http.sock"
    path.write_text("not a socket")
    result = _start("--port", "0", env=NO_ORDERS | _uds(path), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr_lines[-1] == (
        f"sprintd: cannot listen on unix:{path} (http-unix): exists and is not a socket: "
        "not replaced"
    ), result.stderr
    assert path.read_text() == "not a socket"
