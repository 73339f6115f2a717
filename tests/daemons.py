"""Real daemons in subprocesses, raw sockets and the command line, for the core suite.

Every daemon runs ``python -m sprintd run --port 0`` in its own process group
with a clean environment (no SPRINTD_* or seed names from the developer's
shell), and is found ready by the ``worker N serving http on HOST:PORT`` line
it logs to stderr. Teardown sends SIGTERM to the group, waits, then SIGKILLs.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
PLUGINS_DIR = TESTS_DIR / "plugins_for_tests"
REPO_DIR = TESTS_DIR.parent

# The seed system's environment names: settings too, so never inherited.
SEED_ENV = (
    "TIER",
    "GC_PERCENT",
    "MAX_CPU_CORES",
    "HIGH_PRIORITY",
    "LOCK_OS_THREAD",
    "PREALLOC_BUFFERS",
    "OPTIMIZE_SYSTEM",
)
# The port ends at a space, a quote or the line's end: the line may be a JSON
# object's message ([log] format = "json").
SERVING = re.compile(r"worker (\d+) serving http on (\S+):(\d+)(?=[\s\"]|$)", re.MULTILINE)
START_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
# Small server timeouts, so the timeout tests are quick and nothing lingers.
FAST_SERVER_ENV = {
    "SPRINTD_SERVER__HEADER_TIMEOUT": "0.5",
    "SPRINTD_SERVER__BODY_TIMEOUT": "0.5",
    "SPRINTD_SERVER__KEEPALIVE_TIMEOUT": "1.0",
    "SPRINTD_SERVER__DRAIN_TIMEOUT": "3",
}


# Without the built-in stateful plugins: a daemon whose test is about the
# server alone starts without a journal or an owner worker (tests/test_owner.py
# runs them with two workers).
NO_ORDERS = {
    "SPRINTD_ORDERS__ENABLED": "false",
    "SPRINTD_PRICES__ENABLED": "false",
    "SPRINTD_PAYMENTS__ENABLED": "false",
}


def clean_environ(
    extra: Mapping[str, str | None] | None = None, pythonpath: Sequence[Path | str] = ()
) -> dict[str, str]:
    """os.environ without anything sprintd reads, plus ``extra`` (a None there unsets)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("SPRINTD_")
        and name.upper() not in SEED_ENV
        and name != "PYTHONPATH"
    }
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    # The order-entry port is fixed by default; daemons side by side in tests
    # must not share it.
    env["SPRINTD_ORDERS__ENTRY_PORT"] = "0"
    env["SPRINTD_PRICES__FEED_PORT"] = "0"
    for name, value in (extra or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


# --- raw sockets ---------------------------------------------------------------


@dataclass
class RawResponse:
    status: int
    reason: str
    version: bytes
    headers: list[tuple[str, str]]
    body: bytes
    raw_head: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def json(self) -> Any:
        return json.loads(self.body)


class ConnectionClosed(Exception):
    """The peer closed (or reset) the connection before a whole response came."""


class RawConn:
    """A client socket that sends exact bytes and parses responses by hand."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.timeout = timeout
        self.buf = bytearray()
        self.eof = False

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self, timeout: float | None = None) -> bool:
        """Read more into the buffer; False at end of stream (or reset)."""
        if self.eof:
            return False
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def readable(self, timeout: float = 0.0) -> bool:
        """Whether bytes (or the end of stream) are waiting."""
        if self.buf or self.eof:
            return True
        ready, _, _ = select.select([self.sock], [], [], timeout)
        return bool(ready)

    def read_response(self, *, head: bool = False) -> RawResponse:
        """One response; ``head`` for the answer to a HEAD (no body)."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionClosed(f"closed before a response head: {bytes(self.buf)!r}")
        end = self.buf.index(b"\r\n\r\n") + 4
        raw_head = bytes(self.buf[:end])
        del self.buf[:end]
        status_line, *lines = raw_head[:-4].decode("latin-1").split("\r\n")
        version, status, reason = [*status_line.split(" ", 2), ""][:3]
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        response = RawResponse(int(status), reason, version.encode(), headers, b"", raw_head)
        length = response.header("content-length")
        code = int(status)
        if head or code < 200 or code in (204, 304):
            return response
        if length is None:
            while self._fill():
                pass
            response.body = bytes(self.buf)
            self.buf.clear()
            return response
        size = int(length)
        while len(self.buf) < size:
            if not self._fill():
                raise ConnectionClosed(f"closed inside a body: {bytes(self.buf)!r}")
        response.body = bytes(self.buf[:size])
        del self.buf[:size]
        return response

    def wait_closed(self, timeout: float) -> bytes:
        """Everything the peer sends until it closes; fails if it stays open."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"connection still open after {timeout} s")
            try:
                self._fill(timeout=left)
            except TimeoutError:
                continue
        data = bytes(self.buf)
        self.buf.clear()
        return data

    def is_open_after(self, seconds: float) -> bool:
        """True if the peer neither sent nor closed anything for ``seconds``."""
        if self.buf or self.eof:
            return False
        ready, _, _ = select.select([self.sock], [], [], seconds)
        return not ready


# --- daemons -------------------------------------------------------------------


@dataclass
class HTTPResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    host: str
    port: int
    workdir: Path
    data_dir: Path
    stderr_path: Path
    worker_lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text("utf-8", "replace")

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> HTTPResult:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            response = conn.getresponse()
            data = response.read()
            return HTTPResult(
                response.status, {k.lower(): v for k, v in response.getheaders()}, data
            )
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> HTTPResult:
        return self.request("GET", path, **kwargs)

    def health(self) -> dict[str, Any]:
        result = self.get("/health")
        assert result.status == 200, result.body
        body: dict[str, Any] = result.json()
        return body

    def connect(self, timeout: float = 10.0) -> RawConn:
        return RawConn(self.host, self.port, timeout)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon {self.pid} still running after {timeout} s; stderr:\n{self.stderr()}"
            ) from None

    def stop(self) -> int | None:
        """SIGTERM to the group, wait, then SIGKILL whatever is left."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Workers of a supervisor that died share its group: take them too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.returncode


class DaemonFactory:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.daemons: list[Daemon] = []
        self._count = 0

    def __call__(
        self,
        *args: str,
        env: Mapping[str, str | None] | None = None,
        pythonpath: Sequence[Path | str] = (),
        prefix: Sequence[str] = (),
        workers: int = 1,
        data_dir: Path | None = None,
    ) -> Daemon:
        """Start a daemon and wait until ``workers`` workers are serving."""
        self._count += 1
        workdir = self.base / f"daemon{self._count}"
        workdir.mkdir(parents=True)
        data_dir = data_dir or workdir / "data"
        stderr_path = workdir / "stderr.log"
        command = [
            *prefix,
            sys.executable,
            "-m",
            "sprintd",
            "run",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            *args,
        ]
        with open(stderr_path, "wb") as err, open(workdir / "stdout.log", "wb") as out:
            process = subprocess.Popen(
                command,
                cwd=workdir,
                env=clean_environ(env, pythonpath),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        daemon = Daemon(process, "", 0, workdir, data_dir, stderr_path)
        self.daemons.append(daemon)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            matches = SERVING.findall(daemon.stderr())
            if len(matches) >= workers:
                break
            if process.poll() is not None:
                pytest.fail(
                    f"sprintd exited with {process.returncode} before serving "
                    f"({' '.join(command)}); stderr:\n{daemon.stderr()}"
                )
            if time.monotonic() > deadline:
                daemon.stop()
                pytest.fail(
                    f"sprintd not serving after {START_TIMEOUT} s; stderr:\n{daemon.stderr()}"
                )
            time.sleep(0.02)
        ports = {int(port) for _, _, port in matches}
        assert len(ports) == 1, f"workers serve on different ports: {matches}"
        daemon.host = matches[0][1]
        daemon.port = ports.pop()
        daemon.worker_lines = [m[0] for m in matches]
        return daemon

    def stop_all(self) -> None:
        for daemon in self.daemons:
            daemon.stop()


# --- the command line ----------------------------------------------------------


@dataclass
class CLIResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(
    *args: str,
    env: Mapping[str, str | None] | None = None,
    pythonpath: Sequence[Path | str] = (),
    cwd: Path | None = None,
    timeout: float = 30.0,
) -> CLIResult:
    """``python -m sprintd ARGS`` to completion, in its own process group."""
    process = subprocess.Popen(
        [sys.executable, "-m", "sprintd", *args],
        cwd=cwd,
        env=clean_environ(env, pythonpath),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        pytest.fail(
            f"sprintd {' '.join(args)} still running after {timeout} s "
            f"(expected it to exit); stderr:\n{err.decode('utf-8', 'replace')}"
        )
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    return CLIResult(process.returncode, out.decode("utf-8"), err.decode("utf-8"))


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail at ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
