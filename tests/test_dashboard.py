"""The dashboard page and ``sprintd top``: served, self-contained, rendered, quit cleanly."""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rich.console import Console

from sprintd.plugins.dashboard import top
from sprintd.plugins.dashboard.plugin import DashboardPlugin
from sprintd.testing import exchange, make_app, make_server

from .daemons import CLIResult, Daemon, DaemonFactory, clean_environ

JSON_HEADERS = {"Content-Type": "application/json"}
# Runs the CLI with the pty as its controlling terminal, as a shell would:
# then Ctrl-C typed on the pty reaches it as SIGINT.
TTY_BOOT = (
    "import fcntl, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "from sprintd.cli import main; sys.exit(main(sys.argv[1:]))"
)
ALT_SCREEN_OFF = b"\x1b[?1049l"


# --- the page --------------------------------------------------------------------


async def test_the_page_is_served_whole_and_fetches_nothing_from_elsewhere() -> None:
    server = make_server(make_app([DashboardPlugin()]))
    answer = await exchange(server, b"GET /dashboard HTTP/1.1\r\nHost: t\r\n\r\n")
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"content-type: text/html; charset=utf-8" in head
    page = body.decode("utf-8")
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    # Self-contained: no external URL, no file to load (scripts and styles inline).
    assert not re.search(r"(?i)https?:|//[a-z0-9]|\bsrc\s*=|<link\b|@import|url\(", page)
    assert page.count("<script>") == page.count("</script>") == 1
    assert page.count("<style>") == 1
    # What it shows and where it reads it from.
    for needle in (
        '"/v1/stats"',
        '"/v1/price-engine/metrics"',
        '"/health"',
        '"/v1/price-engine/performance-test"',
        '<canvas id="chart">',
        'id="run-test"',
        'id="perf-result"',
        "POLL_MS = 1000",
        "/v1/ws`",
        'id="book"',
        'id="trades"',
    ):
        assert needle in page, needle


# --- sprintd top -----------------------------------------------------------------


@pytest.fixture(scope="module")
def served(module_daemon: DaemonFactory) -> Daemon:
    daemon = module_daemon()
    for price in ("1.5", "2.5", "3.5"):
        body = json.dumps({"symbol": "TOP-1", "price": price}).encode()
        assert daemon.request("POST", "/v1/prices", body, JSON_HEADERS).status == 200
    return daemon


def _url(served: Daemon) -> str:
    return f"http://{served.host}:{served.port}"


def _text(renderable: object, width: int = 160) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue()


@pytest.mark.slow
def test_top_renders_the_daemons_figures(served: Daemon) -> None:
    first = top.fetch(_url(served))
    assert not first.errors
    frame = _text(top.render(first, None, _url(served)))
    health = served.health()
    assert f"tier {health['tier']} ({health['optimization_level']})" in frame
    assert "status " + health["status"].upper() in frame
    metrics = served.get("/v1/price-engine/metrics").json()
    assert f"processed {metrics['messages_processed']:,}" in frame
    assert metrics["messages_processed"] >= 3
    p95 = metrics["latency"]["p95"]
    assert re.search(r"p95 [\d.]+ (µs|ms)", frame)
    assert "(avg since start)" in frame
    assert "/v1/prices" in frame
    for knob in health["tuning"]:
        assert knob in frame
    assert p95 > 0

    # The next frame's rates are the difference between two polls.
    served.request("POST", "/v1/prices", b'{"symbol":"TOP-1","price":9}', JSON_HEADERS)
    second = top.fetch(_url(served))
    frame = _text(top.render(second, first, _url(served)))
    assert "(now)" in frame
    rate = re.search(r"updates\s+([\d.]+)/s", frame)
    assert rate is not None and float(rate.group(1)) > 0


@pytest.mark.slow
def test_top_without_the_prices_plugin_says_so_and_nothing_else(daemon: DaemonFactory) -> None:
    served = daemon(env={"SPRINTD_PRICES__ENABLED": "false"})
    sample = top.fetch(_url(served))
    assert not sample.errors
    frame = _text(top.render(sample, None, _url(served)))
    assert "price engine: not served by this daemon" in frame
    assert "cannot read" not in frame


@pytest.mark.slow
def test_top_keeps_reading_with_the_example_configs_operator_key(
    daemon: DaemonFactory, tmp_path: Path
) -> None:
    key = "ops-key-0123456789abcdef"
    secure = Path(__file__).parents[1] / "config" / "secure.toml"
    key_file = tmp_path / "ops.key"
    key_file.write_text(key)
    key_file.chmod(0o600)
    served = daemon(
        "--config",
        str(secure),
        env={
            "SPRINTD_SERVER__HOST": "127.0.0.1",
            "SPRINTD_AUDIT__FILE": str(tmp_path / "audit.log"),
            "SPRINTD_AUTH__KEYS__OPS__KEY_FILE": str(key_file),
            "TRADING_BOT_KEY": "bot-key-0123456789abcdef",
            "DESK_KEY": "desk-key-0123456789abcdef",
        },
    )
    url = _url(served)
    # Twenty frames, as fast as they come: 40 keyed reads, far past the free
    # tier's burst of 5 that the operator key once had.
    for _ in range(20):
        sample = top.fetch(url, key=key)
        assert not sample.errors, sample.errors
    assert "price engine: not served" not in _text(top.render(sample, None, url))


def test_top_says_why_it_cannot_read_the_price_engine() -> None:
    sample = top.Sample(0.0, errors={"metrics": "HTTP 429"})
    frame = _text(top.render(sample, None, "http://127.0.0.1:1"))
    assert "price engine: cannot read it (HTTP 429)" in frame
    assert "not served by this daemon" not in frame


def test_top_shows_an_unreachable_daemon() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"  # bound, never listening
        sample = top.fetch(url, timeout=1)
    assert set(sample.errors) == set(top.ENDPOINTS)
    assert f"cannot read {url}" in _text(top.render(sample, None, url))


def test_spark_scales_to_the_largest_and_keeps_gaps() -> None:
    assert top.spark([1.0, None, 8.0, 4.0]) == "▁ █▄"
    assert top.spark([None, None]) == "  "


@pytest.mark.slow
def test_top_once_prints_a_frame(served: Daemon, sprintd_cli: Callable[..., CLIResult]) -> None:
    result = sprintd_cli("top", "--once", "--url", _url(served))
    assert result.returncode == 0, result.stderr
    assert "price engine" in result.stdout
    assert "/v1/prices" in result.stdout
    unreachable = sprintd_cli("top", "--once", "--url", "http://127.0.0.1:9")
    assert unreachable.returncode == 1
    assert "cannot read" in unreachable.stdout


class _Terminal:
    """``sprintd top`` on a pseudo-terminal of 50 rows and 140 columns."""

    def __init__(self, url: str) -> None:
        self.master, self.slave = pty.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 140, 0, 0))
        self.modes = termios.tcgetattr(self.slave)
        self.output = bytearray()
        self.process = subprocess.Popen(
            [sys.executable, "-c", TTY_BOOT, "top", "--url", url],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            env=clean_environ({"TERM": "xterm-256color"}),
            start_new_session=True,
        )

    def read_until(self, needle: bytes, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.output:
            assert self.process.poll() is None, self.output.decode("utf-8", "replace")
            assert time.monotonic() < deadline, f"{needle!r} not shown: {bytes(self.output)!r}"
            self._drain(0.1)

    def _drain(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            with contextlib.suppress(OSError):  # EIO once the child has gone
                self.output += os.read(self.master, 65536)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def wait(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, "sprintd top did not exit"
            self._drain(0.05)  # it may be writing: keep the pty from filling
        self._drain(0)
        return self.process.returncode

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        os.close(self.master)
        os.close(self.slave)


@pytest.mark.slow
@pytest.mark.parametrize(("key", "how"), [(b"q", "q"), (b"\x03", "Ctrl-C")])
def test_top_quits_cleanly_and_gives_the_terminal_back(
    served: Daemon, key: bytes, how: str
) -> None:
    terminal = _Terminal(_url(served))
    try:
        terminal.read_until(b"price engine")
        terminal.read_until(b"/v1/prices")
        # While it runs the terminal is in cbreak mode: no echo, no line buffer.
        assert not termios.tcgetattr(terminal.slave)[3] & (termios.ICANON | termios.ECHO)
        terminal.type(key)
        assert terminal.wait() == 0, (how, terminal.output[-2000:])
        # Back as it was: modes restored and the alternate screen left.
        assert termios.tcgetattr(terminal.slave) == terminal.modes
        assert ALT_SCREEN_OFF in terminal.output[-200:]
        assert b"Traceback" not in terminal.output
    finally:
        terminal.close()


@pytest.mark.slow
def test_top_and_the_page_send_an_api_key_when_auth_is_on(daemon: DaemonFactory) -> None:
    key = "ops-key-0123456789abcdef"
    guarded = daemon(
        env={
            "SPRINTD_AUTH__ENABLED": "true",
            "SPRINTD_AUTH__KEYS__OPS__KEY": key,
            "SPRINTD_AUTH__KEYS__OPS__SCOPES": '["read"]',
        }
    )
    url = _url(guarded)
    # /v1/stats follows [auth] metrics_scope (open by default); the price figures need read.
    assert set(top.fetch(url).errors) == {"metrics"}
    assert not top.fetch(url, key=key).errors
    # The page is open; it takes the key from its URL's fragment.
    page = guarded.get("/dashboard").body.decode()
    assert "location.hash" in page and '"X-API-Key"' in page
