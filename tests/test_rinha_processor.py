"""The payment-processor emulator (``sprintd.plugins.payments.emulator``) keeps the challenge's
contract.

The payments tests and the bench judge sprintd against it, so its own rules
are tested here: duplicates, failure, overload, the health rate limit, the
token, inclusive summaries; and it runs from the installed package, anywhere.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from sprintd.plugins.payments.emulator import Processor, ProcessorThread

from .servers import Processors

UUIDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(10)]


class _Address(NamedTuple):
    """A processor in another process: where it listens."""

    host: str
    port: int


def _call(
    proc: ProcessorThread | _Address,
    method: str,
    path: str,
    body: Any = None,
    token: str | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection(proc.host, proc.port, timeout=10)
    try:
        headers = {"X-Rinha-Token": token} if token else {}
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, (json.loads(raw, parse_float=Decimal) if raw else None)


def _pay(proc: ProcessorThread | _Address, i: int, at: str, amount: str = "10.50") -> int:
    body = f'{{"correlationId":"{UUIDS[i]}","amount":{amount},"requestedAt":"{at}"}}'
    return _call(proc, "POST", "/payments", body.encode())[0]


def test_payments_duplicates_failure_and_summary(processors: Processors) -> None:
    proc = processors.default
    assert _pay(proc, 0, "2025-07-15T12:00:00.000Z") == 200
    assert _pay(proc, 0, "2025-07-15T12:00:00.000Z") == 422
    assert _pay(proc, 1, "2025-07-15T12:00:01.000Z", "0.01") == 200
    assert _call(proc, "POST", "/payments", {"correlationId": UUIDS[2]})[0] == 400
    processors.configure("default", failure=True)
    assert _pay(proc, 2, "2025-07-15T12:00:02.000Z") == 500
    processors.configure("default", failure=False)
    assert processors.summary("default") == {
        "totalRequests": 2,
        "totalAmount": Decimal("10.51"),
        "totalFee": Decimal("0.5255"),
        "feePerTransaction": Decimal("0.05"),
    }
    # Both bounds inclusive, to the millisecond.
    inside = "?from=2025-07-15T12:00:00.000Z&to=2025-07-15T12:00:01.000Z"
    assert processors.summary("default", inside)["totalRequests"] == 2
    later = "?from=2025-07-15T12:00:00.001Z"
    assert processors.summary("default", later)["totalRequests"] == 1
    assert processors.stats("default")["failed"] == 1
    processors.admin("default", "POST", "/admin/purge-payments")
    assert processors.summary("default")["totalRequests"] == 0


def test_health_answers_once_per_interval_and_admin_wants_the_token(
    processors: Processors,
) -> None:
    proc = processors.fallback
    assert _call(proc, "GET", "/payments/service-health") == (
        200,
        {"failing": False, "minResponseTime": 0},
    )
    assert _call(proc, "GET", "/payments/service-health")[0] == 429
    assert _call(proc, "GET", "/admin/payments-summary")[0] == 401
    assert _call(proc, "GET", "/admin/payments-summary", token="wrong")[0] == 401
    status, _ = _call(
        proc, "PUT", "/admin/configurations/token", {"token": "new"}, token=processors.TOKEN
    )
    assert status == 204
    # The contest's requests.js aborts the test unless the delay and failure
    # settings answer 200 (and the token 204, above).
    assert _call(proc, "PUT", "/admin/configurations/delay", {"delay": 7}, token="new")[0] == 200
    assert _call(proc, "GET", "/admin/payments-summary", token="new")[0] == 200
    failing = {"failure": True}
    assert _call(proc, "PUT", "/admin/configurations/failure", failing, token="new")[0] == 200
    assert (proc.proc.delay_ms, proc.proc.failure) == (7, True)
    stats = _call(proc, "GET", "/admin/stats", token="new")[1]
    assert (stats["health_calls"], stats["health_limited"]) == (1, 1)


def test_overload_answers_429() -> None:
    proc = ProcessorThread(Processor(Decimal("0.05"), "t", delay_ms=300, max_inflight=1)).start()
    try:
        statuses: list[int] = []

        def pay(i: int) -> None:
            statuses.append(_pay(proc, i, "2025-07-15T12:00:00.000Z"))

        threads = [threading.Thread(target=pay, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200, 429, 429, 429]
    finally:
        proc.stop()


def test_the_emulator_runs_from_the_installed_package(tmp_path: Path) -> None:
    # Outside the repository, with nothing on PYTHONPATH: only what pip installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    argv = [sys.executable, "-m", "sprintd.plugins.payments.emulator", "--port", "0"]
    argv += ["--fee", "0.15", "--token", "t"]
    process = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("processor listening on 127.0.0.1:"), line
        port = int(line.split()[3].rpartition(":")[2])
        proc = _Address("127.0.0.1", port)
        assert _pay(proc, 3, "2025-07-15T12:00:00.000Z") == 200
        summary = _call(proc, "GET", "/admin/payments-summary", token="t")
        assert summary == (
            200,
            {
                "totalRequests": 1,
                "totalAmount": Decimal("10.50"),
                "totalFee": Decimal("1.5750"),
                "feePerTransaction": Decimal("0.15"),
            },
        )
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(10) == 0
