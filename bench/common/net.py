"""Loopback ports and HTTP: a free port, one request, a server started and
waited for until it answers, and stopped for sure.

A server runs in a session of its own, so stopping it is one signal to its
process group and nothing it forked can outlive the bench.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bench.common.paths import REPO
from bench.common.processes import stop_group

__all__ = [
    "ServerError",
    "call_json",
    "free_port",
    "port_free",
    "request",
    "running",
    "wait_http",
]

HOST = "127.0.0.1"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


class ServerError(Exception):
    """A server that did not start, or answered something other than it should."""


def free_port() -> int:
    """A loopback port nothing listens on; the server binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_free(port: int) -> bool:
    """Whether a server could bind ``port`` on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 2.0,
) -> tuple[int, bytes]:
    """One request to 127.0.0.1:``port`` (a body goes as JSON): status and body.

    Raises:
        OSError, http.client.HTTPException: no answer.
    """
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        sent = dict(headers or {})
        if body is not None:
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def call_json(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    headers: Mapping[str, str] | None = None,
    parse_float: Callable[[str], Any] = float,
) -> Any:
    """One JSON call (``body`` encoded unless None) and its decoded 200 answer.

    Raises:
        ServerError: an answer other than 200.
    """
    data = None if body is None else json.dumps(body).encode()
    status, answer = request(port, method, path, data, headers=headers, timeout=30.0)
    if status != 200:
        raise ServerError(f"{method} :{port}{path} answered {status} {answer[:200]!r}")
    return json.loads(answer, parse_float=parse_float)


def wait_http(
    port: int,
    path: str,
    gone: Callable[[], str | None],
    *,
    ready: Callable[[int], bool] = (200).__eq__,
    timeout_s: float = READY_TIMEOUT_S,
) -> None:
    """Poll ``GET path`` until its status is ``ready``; ``gone()`` says why the
    server can no longer answer (it exited), or None while it runs.

    Raises:
        ServerError: the server is gone, or not ready after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        why = gone()
        if why is not None:
            raise ServerError(why)
        try:
            status, _ = request(port, "GET", path, timeout=1.0)
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        else:
            if ready(status):
                return
            last = f"HTTP {status}"
        time.sleep(0.05)
    raise ServerError(f"not serving GET {path} on {port} after {timeout_s:.0f}s ({last})")


@contextlib.contextmanager
def running(
    argv: list[str],
    port: int,
    pythonpath: tuple[Path, ...],
    log_path: Path,
    *,
    ready_path: str,
    check: Callable[[int], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server (``env`` added to this process's environment), wait until
    ``ready_path`` answers 200, run ``check(port)``, and stop it on the way out.

    Raises:
        ServerError: it exited or never answered 200, or ``check`` raised it.
    """
    environ = dict(os.environ, **(env or {}))
    environ["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=environ,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_http(port, ready_path, lambda: _exited(process, log_path))
            if check is not None:
                check(port)
            yield process
        finally:
            stop_group(process.pid, STOP_TIMEOUT_S)
            process.wait()


def _exited(process: subprocess.Popen[bytes], log_path: Path) -> str | None:
    if process.poll() is None:
        return None
    text = log_path.read_text("utf-8", "replace").strip().splitlines()
    return f"exited with {process.returncode}: {' | '.join(text[-5:]) or 'no output'}"
