"""A payment processor as the Rinha de Backend 2025 describes it, for tests and the bench.

Written from the challenge's spec; it needs nothing of sprintd (trio and h11
only), so it stands for the processors a real deployment would call. It ships
with the package as a tool: the payments plugin never imports it. Run it from
any directory once sprintd is installed::

    python -m sprintd.plugins.payments.emulator --port 8001 --fee 0.05 --token 123

The API:

=========================================  ===============================================
``POST /payments``                          ``{correlationId, amount, requestedAt}``: 200
                                            after ``delay`` ms; 500 while ``failure`` is on
                                            (nothing recorded); 422 for a correlationId it
                                            already has; 429 with more than
                                            ``max_inflight`` payments in progress; 400 for
                                            a bad body
``GET /payments/service-health``            ``{failing, minResponseTime}``; 429 when asked
                                            again within ``health_interval`` (5 s) of the
                                            last answered call, whoever asks
``GET /admin/payments-summary?from=&to=``   ``{totalRequests, totalAmount, totalFee,
                                            feePerTransaction}`` over ``requestedAt``,
                                            inclusive bounds, both optional
``PUT /admin/configurations/delay``         ``{delay}`` in ms: 200
``PUT /admin/configurations/failure``       ``{failure}``: 200
``PUT /admin/configurations/token``         ``{token}``: 204
``POST /admin/purge-payments``              forget every payment
=========================================  ===============================================

The admin endpoints want the header ``X-Rinha-Token`` (401 otherwise). Two
more, not in the challenge, let tests look inside: ``GET /admin/payments``
(``{correlationId: requestedAt}``), ``GET /admin/lateness``
(``{correlationId: ms from its requestedAt to its recording}``) and ``GET
/admin/stats`` (counters).

Amounts are kept as decimals and totals are exact; ``totalAmount`` is a JSON
number written from the decimal, never through a float.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import h11
import trio

__all__ = ["Processor", "ProcessorThread", "parse_instant", "serve"]

# The challenge allows one health call per 5 s per processor.
HEALTH_INTERVAL = 5.0
# Payments in progress beyond this get 429: the processor is overloaded.
MAX_INFLIGHT = 1000
MAX_BODY = 64 * 1024


def parse_instant(text: str) -> int:
    """An ISO-8601 instant as microseconds since the epoch (naive means UTC).

    Raises:
        ValueError: not an ISO-8601 date-time.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _number(value: Decimal) -> str:
    """A decimal as a JSON number literal, exactly (no float, no exponent)."""
    return format(value, "f")


@dataclass
class Processor:
    """The processor's state; ``serve`` answers HTTP from it."""

    fee: Decimal
    token: str
    delay_ms: int = 0
    failure: bool = False
    health_interval: float = HEALTH_INTERVAL
    max_inflight: int = MAX_INFLIGHT
    # correlationId -> (requestedAt in us, amount)
    payments: dict[str, tuple[int, Decimal]] = field(default_factory=dict)
    # correlationId -> ms from its requestedAt to its recording here: what the
    # contest's consistency check, on a window ending 1.5 s back, can see.
    lateness: dict[str, int] = field(default_factory=dict)
    stats: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "received",
                "processed",
                "duplicates",
                "failed",
                "overloaded",
                "health_calls",
                "health_limited",
                "peak_inflight",  # the most payments in progress at once
            ),
            0,
        )
    )
    inflight: int = 0
    last_health: float = float("-inf")

    def summary(self, low: int | None, high: int | None) -> dict[str, Any]:
        count, total = 0, Decimal(0)
        for at, amount in self.payments.values():
            if (low is None or at >= low) and (high is None or at <= high):
                count += 1
                total += amount
        return {"count": count, "total": total}


class _Answer(Exception):
    def __init__(self, status: int, body: Any) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body, parse_float=Decimal)
    except ValueError:
        raise _Answer(400, {"error": "body is not JSON"}) from None
    if not isinstance(data, dict):
        raise _Answer(400, {"error": "body is not an object"})
    return data


async def _payment(proc: Processor, body: bytes) -> tuple[int, Any]:
    proc.stats["received"] += 1
    data = _json(body)
    cid, amount, at = data.get("correlationId"), data.get("amount"), data.get("requestedAt")
    if not isinstance(cid, str) or not cid:
        raise _Answer(400, {"error": "correlationId is required"})
    if isinstance(amount, bool) or not isinstance(amount, int | Decimal) or amount <= 0:
        raise _Answer(400, {"error": "amount must be a positive number"})
    try:
        requested = parse_instant(at) if isinstance(at, str) else None
    except ValueError:
        requested = None
    if requested is None:
        raise _Answer(400, {"error": "requestedAt must be an ISO-8601 instant"})
    if proc.inflight >= proc.max_inflight:
        proc.stats["overloaded"] += 1
        raise _Answer(429, {"error": "overloaded"})
    proc.inflight += 1
    proc.stats["peak_inflight"] = max(proc.stats["peak_inflight"], proc.inflight)
    try:
        if proc.delay_ms:
            await trio.sleep(proc.delay_ms / 1000)
    finally:
        proc.inflight -= 1
    if proc.failure:
        proc.stats["failed"] += 1
        raise _Answer(500, {"error": "failing"})
    if cid in proc.payments:
        proc.stats["duplicates"] += 1
        raise _Answer(422, {"error": "correlationId already exists"})
    proc.payments[cid] = (requested, Decimal(amount))
    proc.lateness[cid] = (time.time_ns() // 1000 - requested) // 1000
    proc.stats["processed"] += 1
    return 200, {"message": "payment processed successfully"}


def _health(proc: Processor) -> tuple[int, Any]:
    now = trio.current_time()
    if now - proc.last_health < proc.health_interval:
        proc.stats["health_limited"] += 1
        raise _Answer(429, {"error": "one health call per 5 s"})
    proc.last_health = now
    proc.stats["health_calls"] += 1
    return 200, {"failing": proc.failure, "minResponseTime": proc.delay_ms}


def _bound(query: dict[str, str], name: str) -> int | None:
    text = query.get(name)
    if not text:
        return None
    try:
        return parse_instant(text)
    except ValueError:
        raise _Answer(400, {"error": f"{name} must be an ISO-8601 instant"}) from None


def _admin(proc: Processor, method: bytes, path: bytes, query: bytes, body: bytes) -> Any:
    if method == b"GET" and path == b"/admin/payments-summary":
        params = dict(parse_qsl(query.decode("latin-1")))
        found = proc.summary(_bound(params, "from"), _bound(params, "to"))
        fee = found["total"] * proc.fee
        return (
            f'{{"totalRequests":{found["count"]},"totalAmount":{_number(found["total"])},'
            f'"totalFee":{_number(fee)},"feePerTransaction":{_number(proc.fee)}}}'
        ).encode()
    if method == b"GET" and path == b"/admin/payments":
        return {cid: at for cid, (at, _) in proc.payments.items()}
    if method == b"GET" and path == b"/admin/lateness":
        return proc.lateness
    if method == b"GET" and path == b"/admin/stats":
        return {**proc.stats, "inflight": proc.inflight, "stored": len(proc.payments)}
    if method == b"POST" and path == b"/admin/purge-payments":
        proc.payments.clear()
        proc.lateness.clear()
        return {"message": "All payments purged."}
    if method == b"PUT" and path.startswith(b"/admin/configurations/"):
        data = _json(body)
        which = path.rsplit(b"/", 1)[1]
        # The contest's processors (and its test, which aborts on any other
        # status) answer 200 to the delay and the failure, 204 to the token.
        if which == b"delay" and isinstance(data.get("delay"), int) and data["delay"] >= 0:
            proc.delay_ms = data["delay"]
            return {"delay": proc.delay_ms}
        if which == b"failure" and isinstance(data.get("failure"), bool):
            proc.failure = data["failure"]
            return {"failure": proc.failure}
        if which == b"token" and isinstance(data.get("token"), str) and data["token"]:
            proc.token = data["token"]
            return None
        raise _Answer(400, {"error": f"bad configuration {which.decode()}"})
    raise _Answer(404, {"error": "not found"})


async def _respond(proc: Processor, request: h11.Request, body: bytes) -> tuple[int, bytes | None]:
    path, _, query = request.target.partition(b"?")
    method = request.method
    try:
        if path == b"/payments" and method == b"POST":
            status, answer = await _payment(proc, body)
        elif path == b"/payments/service-health" and method == b"GET":
            status, answer = _health(proc)
        elif path.startswith(b"/admin/"):
            token = dict(request.headers).get(b"x-rinha-token", b"").decode("latin-1")
            if token != proc.token:
                raise _Answer(401, {"error": "X-Rinha-Token is missing or wrong"})
            status, answer = 200, _admin(proc, method, path, query, body)
            if answer is None:
                return 204, None
        else:
            raise _Answer(404, {"error": "not found"})
    except _Answer as exc:
        status, answer = exc.status, exc.body
    if not isinstance(answer, bytes):
        answer = json.dumps(answer).encode()
    return status, answer


async def _connection(proc: Processor, stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                continue
            if not isinstance(event, h11.Request):
                return
            chunks = []
            size = 0
            while True:
                part = conn.next_event()
                if part is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(part, h11.Data):
                    size += len(part.data)
                    if size > MAX_BODY:
                        return
                    chunks.append(part.data)
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return
            status, body = await _respond(proc, event, b"".join(chunks))
            headers = [("content-type", "application/json")] if body is not None else []
            headers.append(("content-length", str(len(body or b""))))
            out = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            if body:
                out += conn.send(h11.Data(data=body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(out)
            if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def serve(
    proc: Processor,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``proc`` until cancelled; reports the bound port when listening."""
    listeners = await trio.open_tcp_listeners(port, host=host, backlog=4096)
    bound: int = listeners[0].socket.getsockname()[1]

    async def handler(stream: trio.SocketStream) -> None:
        await _connection(proc, stream)

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound)


class ProcessorThread:
    """A processor serving from a thread of its own (for tests): ``start()``, ``stop()``."""

    def __init__(self, proc: Processor, host: str = "127.0.0.1") -> None:
        self.proc = proc
        self.host = host
        self.port = 0
        self._token: trio.lowlevel.TrioToken | None = None
        self._cancel: Callable[[], None] | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _main(self) -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                self._token = trio.lowlevel.current_trio_token()
                self._cancel = nursery.cancel_scope.cancel
                self.port = await nursery.start(serve, self.proc, self.host, 0)
                self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    def start(self) -> ProcessorThread:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None or not self.port:
            raise RuntimeError(f"the processor did not start: {self._error!r}")
        return self

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` in the processor's thread (where its state lives)."""
        assert self._token is not None
        return trio.from_thread.run_sync(function, trio_token=self._token)

    def stop(self) -> None:
        if self._cancel is not None and self._token is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._cancel, trio_token=self._token)
        self._thread.join(10)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sprintd.plugins.payments.emulator", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--fee", type=Decimal, default=Decimal("0.05"))
    parser.add_argument("--token", default="123")
    parser.add_argument("--delay", type=int, default=0, help="ms before each payment answers")
    parser.add_argument("--failure", action="store_true", help="answer payments with 500")
    parser.add_argument("--max-inflight", type=int, default=MAX_INFLIGHT)
    args = parser.parse_args(argv)
    proc = Processor(
        fee=args.fee,
        token=args.token,
        delay_ms=args.delay,
        failure=args.failure,
        max_inflight=args.max_inflight,
    )

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve, proc, args.host, args.port)
            print(f"processor listening on {args.host}:{port} fee {args.fee}", flush=True)

    try:
        trio.run(run)
    except* KeyboardInterrupt:
        # Ctrl-C is how it stops; trio hands it up inside the nursery's group,
        # which contextlib.suppress does not look into before Python 3.12.
        pass


if __name__ == "__main__":
    main()
