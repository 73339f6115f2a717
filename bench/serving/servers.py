"""How to start each server under test, check it answers right, and stop it for sure.

Every server runs as one worker process (plus the supervisor some of them
always keep) in a session of its own, so stopping it is one signal to its
process group and nothing it forked can outlive the bench.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.serving.payload import CONTENT_TYPE, ECHO_BODY, ECHO_PATH, GET_BODY, GET_PATH

__all__ = ["REPO", "SERVERS", "Server", "ServerError", "free_port", "request", "running"]

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# The venv's console scripts sit beside its interpreter.
BIN = Path(sys.executable).parent

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0


class ServerError(Exception):
    """A server that did not start, or answered something other than the payload."""


@dataclass(frozen=True)
class Server:
    key: str
    title: str
    # Distributions whose versions the report lists for this server.
    packages: tuple[str, ...]
    # ``{port}`` and ``{data_dir}`` are filled in at launch.
    argv: tuple[str, ...]
    pythonpath: tuple[Path, ...] = (REPO,)
    # The row title per request method when one process serves two paths
    # that are compared separately (sprintd's fast path and its h11 path).
    titles: Mapping[str, str] = field(default_factory=dict)

    def title_for(self, method: str) -> str:
        return self.titles.get(method, self.title)

    def command(self, port: int, data_dir: Path, extra: tuple[str, ...] = ()) -> list[str]:
        return [arg.format(port=port, data_dir=data_dir) for arg in self.argv] + list(extra)


def _granian(interface: str, target: str) -> tuple[str, ...]:
    # --runtime-threads 1 keeps granian's Rust side to one thread as well, so
    # "one worker" means the same thing as for the Python servers.
    return (
        f"{BIN}/granian",
        "--interface",
        interface,
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        "1",
        "--runtime-threads",
        "1",
        "--http",
        "1",
        "--no-ws",
        "--loop",
        "uvloop",
        "--log-level",
        "warning",
        "--no-access-log",
        target,
    )


SERVERS: tuple[Server, ...] = (
    Server(
        key="sprintd",
        title="sprintd",
        packages=("sprintd", "trio", "h11"),
        argv=(
            f"{BIN}/sprintd",
            "run",
            "--config",
            str(HERE / "sprintd.toml"),
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--workers",
            "1",
            "--data-dir",
            "{data_dir}",
        ),
        pythonpath=(HERE, REPO),
        titles={"GET": "sprintd fast path", "POST": "sprintd h11 path"},
    ),
    Server(
        key="uvicorn",
        title="uvicorn (httptools, uvloop)",
        packages=("uvicorn", "httptools", "uvloop"),
        argv=(
            f"{BIN}/uvicorn",
            "bench.serving.peers.asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            "{port}",
            "--workers",
            "1",
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--lifespan",
            "on",
            "--no-access-log",
            "--log-level",
            "warning",
        ),
    ),
    Server(
        key="granian-rsgi",
        title="granian rsgi",
        packages=("granian", "uvloop"),
        argv=_granian("rsgi", "bench.serving.peers.rsgi_app:app"),
    ),
    Server(
        key="granian-asgi",
        title="granian asgi",
        packages=("granian", "uvloop"),
        argv=_granian("asgi", "bench.serving.peers.asgi_app:app"),
    ),
    Server(
        key="hypercorn",
        title="hypercorn (trio worker)",
        packages=("hypercorn", "trio", "h11"),
        argv=(
            f"{BIN}/hypercorn",
            "--worker-class",
            "trio",
            "--workers",
            "1",
            "--bind",
            "127.0.0.1:{port}",
            "--log-level",
            "warning",
            "bench.serving.peers.asgi_app:app",
        ),
    ),
)


def free_port() -> int:
    """A loopback port nothing listens on; the server binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running(
    argv: list[str],
    port: int,
    pythonpath: tuple[Path, ...],
    log_path: Path,
    *,
    ready_path: str = GET_PATH,
    check: Callable[[int], None] | None = None,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a server (``env`` added to this process's environment), wait until
    ``ready_path`` answers 200, run ``check`` (by default: it serves the
    payload), and stop it on the way out.

    Raises:
        ServerError: it exited, never answered 200, or answered other bytes.
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
            _wait_ready(process, port, log_path, ready_path)
            (check or _check_payload)(port)
            yield process
        finally:
            _stop(process)


def _wait_ready(process: subprocess.Popen[bytes], port: int, log_path: Path, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = "no answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"exited with {process.returncode}: {_tail(log_path)}")
        try:
            status, _ = request(port, "GET", path)
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status}"
        time.sleep(0.1)
    raise ServerError(f"not serving GET {path} after {READY_TIMEOUT_S:.0f}s ({last})")


def _check_payload(port: int) -> None:
    # Throughput of a server answering the wrong bytes (a 404, an empty body)
    # would be meaningless, and wrk counts any 2xx as a success.
    for method, path, body, expected in (
        ("GET", GET_PATH, None, GET_BODY),
        ("POST", ECHO_PATH, ECHO_BODY, ECHO_BODY),
    ):
        try:
            status, answer = request(port, method, path, body)
        except (OSError, http.client.HTTPException) as exc:
            raise ServerError(f"{method} {path} failed: {exc!r}") from None
        if (status, answer) != (200, expected):
            raise ServerError(f"{method} {path} answered {status} {answer[:80]!r}")


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """One request to 127.0.0.1:``port`` (a body goes as JSON): status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        headers = {"Content-Type": CONTENT_TYPE.decode()} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    # A second Ctrl-C must not cut this short and leave a server running; it
    # is delivered once the server is gone.
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        # The session's process group is the server's pid: SIGTERM lets it
        # drain, SIGKILL then takes whatever is left, workers included.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=STOP_TIMEOUT_S)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _tail(log_path: Path, lines: int = 5) -> str:
    text = log_path.read_text("utf-8", "replace").strip().splitlines()
    return " | ".join(text[-lines:]) or "no output"
