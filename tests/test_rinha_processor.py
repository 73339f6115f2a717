"""The payment-processor emulator (``bench.rinha.processor``) keeps the challenge's contract.

The payments tests and the bench judge sprintd against it, so its own rules
are tested here: duplicates, failure, overload, the health rate limit, the
token, inclusive summaries.
"""

from __future__ import annotations

import http.client
import json
import threading
from decimal import Decimal
from typing import Any

from bench.rinha.processor import Processor, ProcessorThread

from .servers import Processors

UUIDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(10)]


def _call(
    proc: ProcessorThread, method: str, path: str, body: Any = None, token: str | None = None
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


def _pay(proc: ProcessorThread, i: int, at: str, amount: str = "10.50") -> int:
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
    assert _call(proc, "GET", "/admin/payments-summary", token="new")[0] == 200
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
