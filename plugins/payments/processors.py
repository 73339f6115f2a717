"""The payment processors as the daemon calls them: an HTTP/1.1 client on Trio and h11.

Strategy: h11 drives each connection (client role) and the core's socket
helpers (``sprintd.sockio``: non-blocking sockets parked on Trio's
wait primitives, as the server does) carry the bytes; connections are kept
alive and reused, newest first, so a
steady stream of payments costs no connect. A connection is reused only when
h11 says both sides finished the exchange cleanly; anything else closes it.

What a failed call means decides whether a payment may move to the other
processor, so failures are split in two:

- ``NotSent``: the connection could not be made; the processor never saw the
  request.
- ``Unsure``: the request was (or may have been) written and no whole answer
  came back: a timeout, a reset, a closed keep-alive connection, a malformed
  response. The processor may have recorded the payment.

Cancellation: a call cancelled mid-exchange closes its connection (a
response may still be on its way), never returns it to the pool.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import trio

from sprintd import connect, recv, send_all

from .contract import iso_ms

__all__ = ["HTTPClient", "NotSent", "Processor", "ProcessorHealth", "Unsure"]

READ_SIZE = 16 * 1024
# Idle connections kept per processor; more than the dispatcher can use at
# once would only hold file descriptors.
MAX_IDLE = 512
# Request heads kept for reuse (one per body length seen, in practice a few).
MAX_CACHED_REQUESTS = 64
# A processor's answer is small; a larger one is a broken peer.
MAX_RESPONSE = 64 * 1024


class NotSent(Exception):
    """The request never reached the processor."""


class Unsure(Exception):
    """The request may have reached the processor; no whole answer came back."""


class _Connection:
    __slots__ = ("h11", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=MAX_RESPONSE)


class HTTPClient:
    """Keep-alive HTTP/1.1 to one origin (``http://host:port``)."""

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise ValueError(f"{url!r}: expected http://host:port")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.base = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self._host_header = (b"host", parts.netloc.encode())
        self._idle: list[_Connection] = []
        # h11 validates a Request's headers when it is made: a payment's
        # differ only in Content-Length, so one is made per (method, path,
        # length) and reused.
        self._requests: dict[tuple[str, str, int], h11.Request] = {}
        # One read buffer for every connection: sockio.recv copies out of it
        # before it can await again.
        self._view = memoryview(bytearray(READ_SIZE))

    async def _connect(self) -> _Connection:
        try:
            with trio.fail_after(self.connect_timeout):
                sock = await connect(self.host, self.port)
        except (OSError, trio.TooSlowError) as exc:
            raise NotSent(f"{self.host}:{self.port}: cannot connect: {exc!r}") from None
        return _Connection(sock)

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        timeout: float,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> tuple[int, bytes]:
        """One exchange: ``(status, body)``.

        Raises:
            NotSent: no connection could be made.
            Unsure: the request may have been delivered, but no answer came within
                ``timeout`` (or the connection failed or the answer was malformed).
        """
        conn = self._idle.pop() if self._idle else await self._connect()
        key = (method, path, len(body))
        request = self._requests.get(key) if not headers else None
        if request is None:
            request_headers = [self._host_header, *headers]
            if body or method in ("POST", "PUT"):
                request_headers.append((b"content-type", b"application/json"))
                request_headers.append((b"content-length", b"%d" % len(body)))
            request = h11.Request(method=method, target=self.base + path, headers=request_headers)
            if not headers and len(self._requests) < MAX_CACHED_REQUESTS:
                self._requests[key] = request
        parser = conn.h11
        reusable = False
        try:
            with trio.fail_after(timeout):
                out = parser.send(request)
                if body:
                    out += parser.send(h11.Data(data=body))
                out += parser.send(h11.EndOfMessage())
                await send_all(conn.sock, out)
                status, answer = await self._read(conn)
            reusable = parser.our_state is h11.DONE and parser.their_state is h11.DONE
        except (trio.TooSlowError, OSError, h11.ProtocolError) as exc:
            raise Unsure(f"{method} {self.host}:{self.port}{path}: {exc!r}") from None
        finally:
            if reusable and len(self._idle) < MAX_IDLE:
                parser.start_next_cycle()
                self._idle.append(conn)
            else:
                _close(conn.sock)
        return status, answer

    async def _read(self, conn: _Connection) -> tuple[int, bytes]:
        parser = conn.h11
        status = 0
        chunks: list[bytes] = []
        while True:
            event = parser.next_event()
            if event is h11.NEED_DATA:
                # b"" at the peer's close (or reset): h11 then says ConnectionClosed.
                parser.receive_data(await recv(conn.sock, self._view))
            elif type(event) is h11.Response:
                status = event.status_code
            elif type(event) is h11.Data:
                chunks.append(bytes(event.data))
            elif type(event) is h11.EndOfMessage:
                return status, b"".join(chunks)
            elif type(event) is h11.ConnectionClosed:
                raise OSError("closed before a whole response")
            # InformationalResponse (100 Continue): read on.

    def close(self) -> None:
        """Close the idle connections."""
        for conn in self._idle:
            _close(conn.sock)
        self._idle.clear()


def _close(sock: socket.socket) -> None:
    # Wakes any task parked on it (none, for an idle one) before the fd goes.
    trio.lowlevel.notify_closing(sock)
    sock.close()


@dataclass
class ProcessorHealth:
    """The last health result and what this worker saw itself."""

    failing: bool = False
    min_response_ms: int = 0
    # When the result was taken (wall clock, ms); 0: never.
    checked_ms: int = 0
    # Monotonic time before which this worker avoids the processor (it
    # answered 500 or timed out).
    suspect_until: float = 0.0
    # When it last took a payment here (wall clock, ms): newer than a failing
    # health result, it says the processor is back before the next poll does.
    ok_ms: int = 0
    # Seconds a payment took here (moving average of the answers that came).
    latency_s: float = 0.0

    def usable(self, now: float) -> bool:
        """Not failing by its last health result (or working since), and no
        500 or timeout seen here lately."""
        return (not self.failing or self.ok_ms > self.checked_ms) and self.suspect_until <= now

    def delay_s(self) -> float:
        """The processor's own delay: the smaller of its reported
        minResponseTime and the measured latency (the larger one is a health
        result up to 5 s old, or time spent queued: in a flooded processor or
        on this busy loop, which more sends would only make worse)."""
        reported = self.min_response_ms / 1000
        return min(reported, self.latency_s) if self.latency_s else reported


class Processor:
    """One processor: where it is, how it is, and the calls the daemon makes."""

    def __init__(self, name: str, url: str, *, connect_timeout: float) -> None:
        self.name = name
        self.url = url
        self.client = HTTPClient(url, connect_timeout=connect_timeout)
        self.health = ProcessorHealth()
        # The sends in flight here (the dispatcher sizes it).
        self.slots = trio.CapacityLimiter(1)
        self.sent = 0
        self.failures = 0

    async def pay(self, cid: str, amount: str, requested_ms: int, *, timeout: float) -> int:
        """``POST /payments``; the status (200 done, 422 it has it already, 429, 500 ...).

        Raises:
            NotSent: as ``HTTPClient.request``.
            Unsure: as ``HTTPClient.request``.
        """
        body = b'{"correlationId":"%s","amount":%s,"requestedAt":"%s"}' % (
            cid.encode(),
            amount.encode(),
            iso_ms(requested_ms).encode(),
        )
        status, _ = await self.client.request("POST", "/payments", body, timeout=timeout)
        return status

    async def check_health(self, *, timeout: float) -> tuple[bool, int] | None:
        """``GET /payments/service-health`` as (failing, minResponseTime); None if unanswered.

        A 429 (asked too often) or an unreadable answer is None too: the
        caller keeps the result it had.
        """
        try:
            status, body = await self.client.request(
                "GET", "/payments/service-health", timeout=timeout
            )
        except (NotSent, Unsure):
            return None
        if status != 200:
            return None
        try:
            data = json.loads(body)
            failing, min_ms = data["failing"], data["minResponseTime"]
        except (ValueError, KeyError, TypeError):
            return None
        if not isinstance(failing, bool) or not isinstance(min_ms, int):
            return None
        return failing, min_ms
