"""Start the installed ``sprintd`` on a free port, ask /health, stop it with SIGTERM.

``make install-check`` runs this with the interpreter of a throwaway venv, once
per install mode (``pip install .`` and ``pip install -e .``), from outside the
repository, so only what the install put in place is imported. Standard
library only: the venv has nothing but sprintd and its dependencies.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO

SERVING = re.compile(r"worker \d+ serving http on (\S+):(\d+)")
START_TIMEOUT = 30.0


def main() -> int:
    sprintd = Path(sys.executable).with_name("sprintd")
    with tempfile.TemporaryDirectory() as data, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen(
            [str(sprintd), "run", "--port", "0", "--data-dir", data],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT
            while not (found := SERVING.search(_read(err))):
                if process.poll() is not None or time.monotonic() > deadline:
                    print(f"smoke: sprintd did not start:\n{_read(err)}", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            url = f"http://{found.group(1)}:{found.group(2)}/health"
            with urllib.request.urlopen(url, timeout=10) as answer:
                health = json.loads(answer.read())
            print(f"smoke: {sprintd} answered /health: {health['status']}, tier {health['tier']}")
        finally:
            process.send_signal(signal.SIGTERM)
            code = process.wait(timeout=30)
    return 0 if code == 0 else 1


def _read(err: IO[str]) -> str:
    err.seek(0)
    return err.read()


if __name__ == "__main__":
    sys.exit(main())
