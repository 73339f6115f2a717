"""External servers the tests start for real: redis-server from Debian.

A ``RedisServer`` runs ``redis-server`` on a free loopback port in a temporary
directory, without persistence unless asked, and is ready once it answers
PING. ``tests/system-deps.sh`` installs the binary.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

__all__ = ["RedisServer", "free_port"]

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
