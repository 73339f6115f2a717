"""Headless chromium driven over its DevTools protocol, for the dashboard's browser test.

Chromium (Debian's package, installed by tests/system-deps.sh) starts with
``--remote-debugging-port=0`` and writes the port it took to
``DevToolsActivePort`` in its profile directory; the test talks to the
page's target over a websocket (the ``websocket-client`` package): one
request at a time, events skipped. Everything is bounded by timeouts, and the
browser's process group is killed on the way out.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import websocket

__all__ = ["Browser", "BrowserUnavailable", "chromium"]

START_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 30.0


class BrowserUnavailable(Exception):
    """Chromium is missing or could not start here (the test fails with this reason)."""


class Browser:
    """One page of a running chromium."""

    def __init__(self, socket: websocket.WebSocket) -> None:
        self.socket = socket
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result.

        Raises:
            AssertionError: the browser answered with an error.
        """
        self._next_id += 1
        self.socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == self._next_id:
                assert "error" not in message, (method, message["error"])
                result: dict[str, Any] = message["result"]
                return result

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (awaited if a promise)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float) -> Any:
        """Poll until ``expression`` is truthy in the page; its value."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            assert time.monotonic() < deadline, f"not true within {timeout} s: {expression}"
            time.sleep(0.1)
        return value

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])


@contextlib.contextmanager
def chromium(profile: Path, width: int = 1400, height: int = 1000) -> Iterator[Browser]:
    """A headless chromium with one blank page.

    Raises:
        BrowserUnavailable: no chromium on PATH, or it did not start.
    """
    binary = shutil.which("chromium")
    if binary is None:
        raise BrowserUnavailable("chromium is not installed (tests/system-deps.sh installs it)")
    argv = [
        binary,
        "--headless=new",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-extensions",
        "--no-first-run",
        "--no-default-browser-check",
        "--hide-scrollbars",
        "--mute-audio",
        "about:blank",
    ]
    if os.geteuid() == 0:
        # Chromium's sandbox refuses to run as root.
        argv.insert(1, "--no-sandbox")
    log = profile / "chromium.log"
    profile.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        port = _devtools_port(profile, process, log)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as answer:
            targets = json.loads(answer.read())
        page = next(t for t in targets if t["type"] == "page")
        socket = websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=CALL_TIMEOUT_S, suppress_origin=True
        )
        try:
            yield Browser(socket)
        finally:
            socket.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _devtools_port(profile: Path, process: subprocess.Popen[bytes], log: Path) -> int:
    active = profile / "DevToolsActivePort"
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        # Written once the port is open; read whole only after that.
        with contextlib.suppress(OSError, ValueError, IndexError):
            return int(active.read_text().split()[0])
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text("utf-8", "replace").strip().splitlines()[-5:]
            raise BrowserUnavailable(f"chromium did not start: {' | '.join(tail)}")
        time.sleep(0.05)
