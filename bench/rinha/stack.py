"""The Rinha set-up on loopback: two processors, sprintd (one, or two behind nginx) and Redis.

``up`` starts every part in a session of its own, waits until each answers,
and writes what it started to ``stack.json`` in its directory; ``down`` reads
that file and stops them (SIGTERM to each process group, SIGKILL after a
grace period). So the set-up survives the command that started it, and any
later command can stop it.

=============  ==============================================================
processors     ``python -m sprintd.plugins.payments.emulator`` (fees 5% and 15%)
one instance   sprintd on the front port, payments in memory, journaled
               (with ``workers`` > 1, worker 0 owns them and the others forward)
two instances  sprintd twice on free ports, payments in Redis; Debian's nginx
               on the front port balancing between them (``nginx.conf``)

sprintd's processes are left to the kernel's scheduler (``lock_os_thread``
off), or with ``pin`` each put on a core of its own with ``taskset``.
redis          Debian's ``redis-server`` (two instances only), no persistence
=============  ==============================================================
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common.net import ServerError, free_port, port_free, wait_http
from bench.common.pinning import TASKSET, pinned
from bench.common.processes import alive, stop_group

__all__ = ["TOKEN", "Stack", "StackError", "down", "up"]

HERE = Path(__file__).resolve().parent
TOKEN = "123"
FEES = {"default": "0.05", "fallback": "0.15"}
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
# The front first, the processors last: payments in flight still land.
STOP_ORDER = ("nginx", "sprintd", "redis", "processor")
NGINX_HINT = "install it with: sudo apt-get install nginx-light (or nginx)"


class StackError(Exception):
    """A part that is missing or did not start."""


@dataclass
class Stack:
    directory: str
    instances: int
    front: int
    processors: dict[str, int]
    sprintd: list[int]
    redis: int | None = None
    workers: int = 1
    # name -> pid (each the leader of its own process group)
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def backend(self) -> str:
        return f"http://127.0.0.1:{self.front}"

    def processor_url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.processors[name]}"

    def save(self) -> None:
        Path(self.directory, "stack.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> Stack:
        return cls(**json.loads((directory / "stack.json").read_text()))


def nginx_binary() -> str:
    found = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if found is None:
        raise StackError(f"nginx is not installed; {NGINX_HINT}")
    return found


def _spawn(name: str, argv: list[str], directory: Path, env: dict[str, str] | None = None) -> int:
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "wb") as log:
        process = subprocess.Popen(
            argv,
            cwd=directory,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return process.pid


def _wait_http(port: int, path: str, name: str, pid: int) -> None:
    def gone() -> str | None:
        return None if alive(pid) else "exited before it answered; see its log"

    try:
        # Any answer but a server error: the processors' admin API may refuse
        # the token-less probe, and that is an answer.
        wait_http(port, path, gone, ready=lambda status: status < 500)
    except ServerError as exc:
        raise StackError(f"{name}: {exc}") from None


def _wait_redis(port: int, pid: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(64).startswith(b"+PONG"):
                return
        if not alive(pid):
            raise StackError("redis-server exited before it answered; see its log")
        time.sleep(0.05)
    raise StackError(f"redis-server did not answer on {port}")


def _core_of(instance: int) -> str:
    """The core for instance i: a core each. (The maximum tiers pin worker
    i to core i, and every instance's only worker is worker 0.)"""
    cores = sorted(os.sched_getaffinity(0))
    return str(cores[(instance - 1) % len(cores)])


def _nginx_conf(stack: Stack, directory: Path) -> Path:
    template = (HERE / "nginx.conf").read_text()
    upstreams = "\n".join(f"        server 127.0.0.1:{port};" for port in stack.sprintd)
    temp = directory / "nginx-temp"
    temp.mkdir(exist_ok=True)
    temp.chmod(0o777)
    conf = template.replace("@UPSTREAMS@", upstreams)
    conf = conf.replace("@PORT@", str(stack.front)).replace("@DIR@", str(directory))
    path = directory / "nginx.conf"
    path.write_text(conf)
    return path


def up(
    directory: Path,
    *,
    instances: int,
    front: int,
    tier: str,
    pin: bool = False,
    processor_ports: dict[str, int] | None = None,
    workers: int = 1,
) -> Stack:
    """Start the whole set-up, the processors on ``processor_ports`` (free
    ports when None); on any failure, stop what was started and raise.

    Raises:
        StackError: a binary is missing, the front port is taken, a part did not start.
    """
    if instances not in (1, 2):
        raise StackError("instances: 1 (memory store) or 2 (Redis, behind nginx)")
    if pin and not os.access(TASKSET, os.X_OK):
        raise StackError(f"--pin needs {TASKSET} (util-linux)")
    for port in (front, *(processor_ports or {}).values()):
        if not port_free(port):
            raise StackError(
                f"port {port} is taken (a set-up already up? python -m bench.rinha down)"
            )
    redis_bin = shutil.which("redis-server")
    if instances == 2:
        nginx_binary()
        if redis_bin is None:
            raise StackError("redis-server is not installed: tests/system-deps.sh installs it")
    directory.mkdir(parents=True, exist_ok=True)
    stack = Stack(
        directory=str(directory),
        instances=instances,
        front=front,
        processors=processor_ports or {"default": free_port(), "fallback": free_port()},
        sprintd=[front] if instances == 1 else [free_port(), free_port()],
        redis=free_port() if instances == 2 else None,
        workers=workers,
    )
    try:
        for name, port in stack.processors.items():
            argv = [sys.executable, "-m", "sprintd.plugins.payments.emulator", "--port", str(port)]
            argv += ["--fee", FEES[name], "--token", TOKEN]
            stack.pids[f"processor-{name}"] = _spawn(f"processor-{name}", argv, directory)
            stack.save()
        if stack.redis is not None:
            assert redis_bin is not None
            argv = [redis_bin, "--port", str(stack.redis), "--bind", "127.0.0.1"]
            argv += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
            stack.pids["redis"] = _spawn("redis", argv, directory)
            stack.save()
            _wait_redis(stack.redis, stack.pids["redis"])
        for name, port in stack.processors.items():
            _wait_http(port, "/admin/stats", f"processor-{name}", stack.pids[f"processor-{name}"])
        for i, port in enumerate(stack.sprintd, 1):
            settings = {
                "SPRINTD_PAYMENTS__DEFAULT_URL": stack.processor_url("default"),
                "SPRINTD_PAYMENTS__FALLBACK_URL": stack.processor_url("fallback"),
                "SPRINTD_ORDERS__ENABLED": "false",
            }
            if not pin:
                # The maximum tiers pin worker 0 to the first core it may
                # use: both instances would share one. The kernel places them.
                settings["SPRINTD_TUNING__LOCK_OS_THREAD"] = "false"
            if stack.redis is not None:
                settings["SPRINTD_PAYMENTS__STORE"] = "redis"
                settings["SPRINTD_REDIS__URL"] = f"redis://127.0.0.1:{stack.redis}/0"
            argv = [sys.executable, "-m", "sprintd", "run", "--port", str(port), "--tier", tier]
            argv += ["--workers", str(workers), "--data-dir", str(directory / f"sprintd{i}")]
            argv = pinned(argv, _core_of(i) if pin else None)
            stack.pids[f"sprintd{i}"] = _spawn(f"sprintd{i}", argv, directory, settings)
            stack.save()
        for i, port in enumerate(stack.sprintd, 1):
            _wait_http(port, "/readyz", f"sprintd{i}", stack.pids[f"sprintd{i}"])
        if instances == 2:
            conf = _nginx_conf(stack, directory)
            argv = [nginx_binary(), "-c", str(conf), "-p", str(directory)]
            stack.pids["nginx"] = _spawn("nginx", argv, directory)
            stack.save()
            _wait_http(front, "/readyz", "nginx", stack.pids["nginx"])
    except BaseException:
        down(directory)
        raise
    return stack


def down(directory: Path) -> list[str]:
    """Stop what ``up`` started in ``directory``; the names stopped."""
    try:
        stack = Stack.load(directory)
    except FileNotFoundError:
        return []
    order = sorted(stack.pids, key=lambda name: STOP_ORDER.index(name.split("-")[0].rstrip("12")))
    stopped = []
    for name in order:
        stop_group(stack.pids[name], STOP_TIMEOUT_S)
        stopped.append(name)
    (directory / "stack.json").unlink(missing_ok=True)
    return stopped
