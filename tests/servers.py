"""External servers the tests start for real: redis-server, PostgreSQL, payment processors.

A ``RedisServer`` runs ``redis-server`` on a free loopback port in a temporary
directory, without persistence unless asked, and is ready once it answers
PING. A ``PostgresServer`` (``sprintd.plugins.history.pgserver``, shared with
the history bench) runs a PostgreSQL cluster of its own on a free loopback
port. ``tests/system-deps.sh`` installs both. ``Processors`` are the
Rinha payment processors of ``sprintd.plugins.payments.emulator``, served
from threads of the test process.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import signal
import socket
import subprocess
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sprintd.plugins.history.pgserver import PostgresServer
from sprintd.plugins.payments.emulator import Processor, ProcessorThread

__all__ = ["PostgresServer", "Processors", "RedisServer", "free_port"]

REDIS_START_TIMEOUT = 10.0


def free_port() -> int:
    """A port free on 127.0.0.1 now (the kernel's pick; another process could take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _command(port: int, *args: str, timeout: float = 1.0) -> bytes:
    """One inline command over a raw socket; the first line of the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(" ".join(args).encode() + b"\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
        return reply.strip()


class RedisServer:
    """``redis-server`` on 127.0.0.1 and a free port, in ``directory``."""

    def __init__(self, directory: Path, *, persist: bool = False) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run tests/system-deps.sh")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(directory),
            "--save",
            "",
            "--appendonly",
            "yes" if persist else "no",
            "--logfile",
            str(directory / "redis.log"),
        ]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        while True:
            with contextlib.suppress(OSError):
                if _command(self.port, "PING") == b"+PONG":
                    break
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = (directory / "redis.log").read_text(errors="replace")
                pytest.fail(f"redis-server did not answer PING on {self.port}:\n{log}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        assert _command(self.port, "FLUSHALL") == b"+OK"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Processors:
    """The two payment processors (``sprintd.plugins.payments.emulator``), each in a thread
    of its own on a free loopback port, and their admin API."""

    TOKEN = "test-token"

    def __init__(self, **options: Any) -> None:
        self.default = ProcessorThread(Processor(fee=Decimal("0.05"), token=self.TOKEN, **options))
        self.fallback = ProcessorThread(Processor(fee=Decimal("0.15"), token=self.TOKEN, **options))
        self.default.start()
        self.fallback.start()

    def env(self) -> dict[str, str]:
        """A daemon's environment naming these processors."""
        return {
            "SPRINTD_PAYMENTS__DEFAULT_URL": self.default.url,
            "SPRINTD_PAYMENTS__FALLBACK_URL": self.fallback.url,
        }

    def __getitem__(self, name: str) -> ProcessorThread:
        return {"default": self.default, "fallback": self.fallback}[name]

    def admin(self, name: str, method: str, path: str, body: Any = None) -> Any:
        """One admin call, with the token; its JSON answer (None for 204)."""
        proc = self[name]
        conn = http.client.HTTPConnection(proc.host, proc.port, timeout=10)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"X-Rinha-Token": self.TOKEN})
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        assert response.status in (200, 204), (response.status, raw)
        return json.loads(raw, parse_float=Decimal) if raw else None

    def configure(
        self, name: str, *, delay: int | None = None, failure: bool | None = None
    ) -> None:
        if delay is not None:
            self.admin(name, "PUT", "/admin/configurations/delay", {"delay": delay})
        if failure is not None:
            self.admin(name, "PUT", "/admin/configurations/failure", {"failure": failure})

    def stats(self, name: str) -> dict[str, int]:
        stats: dict[str, int] = self.admin(name, "GET", "/admin/stats")
        return stats

    def payments(self, name: str) -> dict[str, int]:
        """correlationId -> requestedAt (us) of what the processor recorded."""
        found: dict[str, int] = self.admin(name, "GET", "/admin/payments")
        return found

    def summary(self, name: str, query: str = "") -> dict[str, Any]:
        found: dict[str, Any] = self.admin(name, "GET", "/admin/payments-summary" + query)
        return found

    def stop(self) -> None:
        self.default.stop()
        self.fallback.stop()
