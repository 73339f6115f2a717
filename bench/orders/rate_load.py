"""The constant-rate HTTP load: h2load (Debian's nghttp2-client) at a fixed ``--rps``.

k6 could not offer 10,000 orders/s from one shared core; h2load is C and
does HTTP/1.1 at a fixed rate per connection (``--h1 --rps``). It reports
no percentiles, so it writes every request to ``--log-file`` (start time,
status, microseconds to the end of the answer) and they are read from there
into the same ``Result`` wrk's and k6's runs give. The latency is from when
h2load sent each request. Over HTTP/1.1 a connection has one request in
flight, so the rate is spread over connections that each owe a request
every 4 ms (``PER_CONNECTION``): one that is still waiting for an answer
sends its next late, and a daemon that falls behind shows as fewer requests
than the rate asked (``dropped``), not only in the latency.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.common.pinning import pinned
from bench.serving.load import PERCENTILES, TOOL_GRACE_S, LoadError, Result

__all__ = ["H2LOAD", "run_rate"]

H2LOAD = shutil.which("h2load") or "h2load"
# Requests a connection may have answered per second without queueing: well
# above what the rate asks of each.
PER_CONNECTION = 250


def run_rate(
    url: str, body: bytes, rate: int, seconds: int, raw_path: Path, *, cpus: str | None
) -> Result:
    """POST ``body`` to ``url`` at ``rate`` requests/s for ``seconds``.

    Raises:
        LoadError: h2load is missing, failed, overran, or its log is unreadable.
    """
    connections = max(1, -(-rate // PER_CONNECTION))
    body_path = raw_path.with_suffix(".body")
    body_path.write_bytes(body)
    log_path = raw_path.with_suffix(".log.tsv")
    argv = pinned(
        [
            H2LOAD,
            "--h1",
            f"--clients={connections}",
            f"--rps={rate / connections:g}",
            f"--duration={seconds}",
            f"--data={body_path}",
            "--header=content-type: application/json",
            f"--log-file={log_path}",
            url,
        ],
        cpus,
    )
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=seconds + TOOL_GRACE_S,
            check=False,
        )
    except FileNotFoundError:
        raise LoadError("h2load not found: apt-get install nghttp2-client") from None
    except subprocess.TimeoutExpired:
        raise LoadError(f"h2load still running {TOOL_GRACE_S}s after its end") from None
    raw_path.write_text(f"$ {' '.join(argv)}\n{done.stdout}{done.stderr}", "utf-8")
    if done.returncode != 0:
        raise LoadError(f"h2load exited with {done.returncode}; see {raw_path}")
    try:
        return parse_log(log_path.read_text("ascii"), rate, seconds)
    except (OSError, ValueError) as exc:
        raise LoadError(f"h2load log {log_path}: {exc!r}") from None


def parse_log(text: str, rate: int, seconds: int) -> Result:
    """h2load's per-request log: ``start_us<TAB>status<TAB>elapsed_us`` lines."""
    elapsed: list[int] = []
    errors = 0
    for line in text.splitlines():
        _start, status, micros = line.split("\t")
        elapsed.append(int(micros))
        if not 200 <= int(status) < 300:
            errors += 1
    if not elapsed:
        raise ValueError("no request was logged")
    elapsed.sort()
    n = len(elapsed)
    return Result(
        requests=n,
        duration_s=seconds,
        rps=n / seconds,
        errors=errors,
        dropped=max(0, round(rate * seconds) - n),
        min_ms=elapsed[0] / 1000,
        mean_ms=sum(elapsed) / n / 1000,
        max_ms=elapsed[-1] / 1000,
        percentiles_ms=tuple(
            (p, elapsed[min(n - 1, int(p / 100 * n))] / 1000) for p in PERCENTILES
        ),
    )
