"""A PostgreSQL cluster of its own, for the tests and the history bench.

``PostgresServer`` runs Debian's PostgreSQL (the newest under
``/usr/lib/postgresql/*/bin``, else ``postgres`` on the PATH): ``initdb``
into a fresh temporary directory, ``postgres`` on a free loopback port,
trust authentication for the user ``sprintd``, and a ``history`` database.
When run as root (which ``initdb`` refuses) the server runs as ``postgres``
(the package's user) or ``nobody``. ``stop``/``start`` restart it on the same
port and data: the restarts the history projector must survive. Durability
is off (``fsync=off``): these clusters are thrown away.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

__all__ = ["PostgresError", "PostgresServer"]

# initdb and a first start on a loaded two-core machine take a few seconds.
START_TIMEOUT = 60.0


class PostgresError(RuntimeError):
    """PostgreSQL is not installed, or would not initialise or start (the log says why)."""


def _free_port() -> int:
    """A port free on 127.0.0.1 now (the kernel's pick; another process could take it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _postgres_bin() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps them per version)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if not found:
        located = shutil.which("postgres")
        if located is None:
            raise PostgresError("PostgreSQL is not installed: run tests/system-deps.sh")
        return Path(located).parent
    return Path(found[-1]).parent


class PostgresServer:
    """A PostgreSQL cluster of its own on 127.0.0.1 and a free port; ``stop``/``start``
    restart it on the same port and data (a restart the projector must survive)."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        # Not under pytest's tmp_path: that is root's (0700), and the server
        # runs as another user when the tests run as root.
        self.directory = Path(tempfile.mkdtemp(prefix="sprintd-pg-"))
        self.data = self.directory / "data"
        self.user = self._run_as()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.directory, entry.pw_uid, entry.pw_gid)
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "sprintd", "-A", "trust",
             "--no-sync", "-E", "UTF8", "--locale", "C"]
        )  # fmt: skip
        self.start()
        self.databases = 0
        self.create_database("history")

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        self._run([str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                   "-U", "sprintd", name])  # fmt: skip
        return self.url_of(name)

    def fresh_database(self) -> str:
        """A new database with a name of its own (one per test on a shared server)."""
        self.databases += 1
        return self.create_database(f"test{self.databases}")

    def url_of(self, database: str) -> str:
        return f"postgresql://sprintd@127.0.0.1:{self.port}/{database}"

    @staticmethod
    def _run_as() -> str | None:
        """initdb refuses root: run as ``postgres`` (the package's user), or ``nobody``."""
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
        raise PostgresError("running as root with neither a postgres nor a nobody user")

    def _argv(self, args: list[str]) -> list[str]:
        if self.user is None:
            return args
        return ["runuser", "-u", self.user, "--", *args]

    def _run(self, args: list[str]) -> None:
        done = subprocess.run(
            self._argv(args), capture_output=True, cwd=self.directory, timeout=120, check=False
        )
        if done.returncode != 0:
            raise PostgresError(f"{args[0]} failed ({done.returncode}):\n{done.stderr.decode()}")

    @property
    def url(self) -> str:
        return self.url_of("history")

    def start(self) -> None:
        """Start ``postgres`` (again) on the same port and data; ready once it accepts."""
        log = open(self.directory / "postgres.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.process = subprocess.Popen(
            self._argv(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={self.directory}",
                 "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=20",
                 "-c", "shared_buffers=32MB"]
            ),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        ready = [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)]
        while subprocess.run(ready, check=False).returncode != 0:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                text = (self.directory / "postgres.log").read_text(errors="replace")
                raise PostgresError(f"postgres did not start on {self.port}:\n{text}")
            time.sleep(0.05)

    def stop(self, mode: signal.Signals = signal.SIGINT) -> None:
        """Stop the server: SIGINT is a fast shutdown (clients cut off, data kept),
        SIGQUIT an immediate one (crash recovery at the next start)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, mode)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def close(self) -> None:
        """Stop the server and remove its data."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
