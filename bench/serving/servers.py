"""How to start each server under test, and check it answers right.

Every server runs as one worker process (plus the supervisor some of them
always keep), started and stopped by ``bench.common.net.running``.
"""

from __future__ import annotations

import contextlib
import http.client
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench.common.net import ServerError, request, running
from bench.common.paths import BIN, REPO
from bench.serving.payload import ECHO_BODY, ECHO_PATH, GET_BODY, GET_PATH

__all__ = ["SERVERS", "Server", "serving"]

HERE = Path(__file__).resolve().parent


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
    # that are compared separately (sprintd's fast path and its dynamic path).
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
        titles={"GET": "sprintd fast path", "POST": "sprintd dynamic path"},
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


@contextlib.contextmanager
def serving(
    server: Server, argv: list[str], port: int, log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``server`` started with ``argv``, ready and checked to serve the payload.

    Raises:
        ServerError: it did not start, or answered other bytes.
    """
    with running(
        argv, port, server.pythonpath, log_path, ready_path=GET_PATH, check=_check_payload
    ) as process:
        yield process


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
