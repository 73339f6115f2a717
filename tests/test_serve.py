"""A worker's lifetime in process: ``serve`` started with ``nursery.start``, then drained.

The server binds real loopback sockets and is sent a real SIGTERM, but runs
on trio's autojump clock: the drain's pre-stop delay and timeout are
measured exactly on that clock and cost no real time.
"""

from __future__ import annotations

import functools
import os
import signal

import trio

from sprintd.app import Route, SnapshotSpec
from sprintd.health import HealthPlugin
from sprintd.http import Request, Response
from sprintd.server.limits import REAPER_TICK
from sprintd.server.serve import serve
from sprintd.testing import StaticPlugin, make_app

DRAIN_DELAY = 5.0
DRAIN_TIMEOUT = 10.0
SETTINGS = {
    "SPRINTD_SERVER__PORT": "0",
    "SPRINTD_SERVER__DRAIN_DELAY": str(DRAIN_DELAY),
    "SPRINTD_SERVER__DRAIN_TIMEOUT": str(DRAIN_TIMEOUT),
}


async def _slow(request: Request) -> Response:
    await trio.sleep(float(request.query_params()["s"]))
    return Response(200, b'{"slow":true}')


def _app() -> object:
    static = StaticPlugin([SnapshotSpec("/ping", b"{}")], [Route("GET", "/slow", _slow)])
    return make_app([HealthPlugin(), static], SETTINGS)


async def _get(address: tuple[str, int], path: str) -> bytes:
    """One GET on a new connection: the whole answer (the server closes it)."""
    stream = await trio.open_tcp_stream(*address)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )
        answer = b""
        while chunk := await stream.receive_some():
            answer += chunk
    return answer


async def _refused(address: tuple[str, int]) -> bool:
    try:
        stream = await trio.open_tcp_stream(*address)
    except OSError:
        return True
    await stream.aclose()
    return False


async def test_serve_reports_where_it_listens_and_drains_on_sigterm(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = _app()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(functools.partial(serve, app))
        address = bound["http"]
        assert (await _get(address, "/readyz")).startswith(b"HTTP/1.1 200 ")
        started = trio.current_time()
        os.kill(os.getpid(), signal.SIGTERM)
        while (await _get(address, "/readyz")).startswith(b"HTTP/1.1 200 "):
            await trio.sleep(REAPER_TICK)
        # /readyz fails first; everything else is still served, on new
        # connections too, until the delay is over.
        assert (await _get(address, "/readyz")).startswith(b"HTTP/1.1 503 ")
        assert (await _get(address, "/ping")).startswith(b"HTTP/1.1 200 ")
        while not await _refused(address):
            await trio.sleep(REAPER_TICK)
        assert DRAIN_DELAY <= trio.current_time() - started <= DRAIN_DELAY + 2 * REAPER_TICK
    # serve() returned: nothing was left to drain.
    assert trio.current_time() - started < DRAIN_DELAY + DRAIN_TIMEOUT


async def test_a_request_still_running_at_the_drain_timeout_is_cancelled(
    autojump_clock: trio.abc.Clock,
) -> None:
    app = _app()
    answers: list[bytes] = []
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(functools.partial(serve, app))
        address = bound["http"]

        async def slow(seconds: float) -> None:
            try:
                answers.append(await _get(address, f"/slow?s={seconds}"))
            except OSError:
                answers.append(b"")

        nursery.start_soon(slow, 1.0)  # done within the drain
        nursery.start_soon(slow, 1000.0)  # not
        await trio.sleep(REAPER_TICK)
        started = trio.current_time()
        os.kill(os.getpid(), signal.SIGTERM)
    elapsed = trio.current_time() - started
    assert DRAIN_DELAY + DRAIN_TIMEOUT <= elapsed <= DRAIN_DELAY + DRAIN_TIMEOUT + 1
    finished, cancelled = sorted(answers, key=len, reverse=True)
    assert finished.startswith(b"HTTP/1.1 200 ") and finished.endswith(b'{"slow":true}')
    assert cancelled == b""
