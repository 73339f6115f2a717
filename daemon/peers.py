"""The workers of one daemon, to each other: a question and its answers over local sockets.

With ``workers = N`` each worker listens on an abstract Unix socket named
after its supervisor and its own index (nothing on disk to clean up after a
kill -9: the kernel drops the name with the process). A worker asks its
siblings a question by name and gathers their answers; ``/metrics`` uses it
so that one scrape, whichever worker the kernel hands it to, answers for
the daemon.

Wire: the core's framing (``framing``: a 4-byte length, then msgpack). A
question is ``[name]``; the answer ``[True, value]``, or ``[False, reason]``
when the sibling's handler failed. One connection per question: questions
are scrapes and health checks, seconds apart, not the hot path.

Failure: a sibling that is restarting, stuck or gone does not answer within
``ASK_TIMEOUT_S``; it is left out of the answers (the caller reports it as
missing), and the asker never waits longer than that.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import trio

from .framing import FrameDecoder, FrameError, PayloadError, decode_payload, encode_frame

__all__ = ["ASK_TIMEOUT_S", "Peers", "connect_local", "frames", "listen_local"]

log = logging.getLogger("sprintd.peers")

ASK_TIMEOUT_S = 1.0
# Answers are metrics and health documents: a few hundred kilobytes at most.
MAX_ANSWER = 16 << 20
READ_SIZE = 1 << 16


class Peers:
    """Worker ``index`` of ``count``: answers its siblings' questions and asks them its own.

    ``namespace`` names the daemon (its supervisor's pid): two daemons on one
    machine never hear each other.
    """

    def __init__(self, namespace: str, index: int, count: int) -> None:
        self.namespace = namespace
        self.index = index
        self.count = count
        self._handlers: dict[str, Callable[[], Any]] = {}

    def address(self, index: int) -> bytes:
        return f"\0sprintd-{self.namespace}-worker-{index}".encode()

    def handle(self, question: str, answer: Callable[[], Any]) -> None:
        """Answer ``question`` with ``answer()`` (anything msgpack encodes)."""
        self._handlers[question] = answer

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer the siblings until cancelled.

        Raises:
            OSError: the address is taken (another worker of this index is alive).
        """
        listener = await listen_local(self.address(self.index), self.count * 4)
        task_status.started()
        await trio.serve_listeners(self._answer, [listener])

    async def _answer(self, stream: trio.SocketStream) -> None:
        async with stream:
            try:
                question = await _first_frame(stream)
                handler = self._handlers.get(str(question[0])) if question else None
                if handler is None:
                    reply = [False, f"no answer to {question!r:.60}"]
                else:
                    try:
                        reply = [True, handler()]
                    except Exception as exc:
                        log.exception("peers: answering %r failed", question[0])
                        reply = [False, f"{type(exc).__name__}: {exc}"]
                await stream.send_all(encode_frame(reply))
            except (trio.BrokenResourceError, FrameError, PayloadError, EOFError):
                pass  # the asker gave up or sent garbage: nothing to tell it

    async def ask(self, question: str) -> dict[int, Any]:
        """Every sibling's answer to ``question`` that came in time, by index."""
        answers: dict[int, Any] = {}

        async def one(index: int) -> None:
            with trio.move_on_after(ASK_TIMEOUT_S):
                try:
                    ok, value = await self._ask_one(index, question)
                except (OSError, trio.BrokenResourceError, FrameError, PayloadError, EOFError):
                    return  # not listening (restarting) or gone mid-answer
                if ok:
                    answers[index] = value

        async with trio.open_nursery() as nursery:
            for index in range(self.count):
                if index != self.index:
                    nursery.start_soon(one, index)
        return answers

    async def _ask_one(self, index: int, question: str) -> list[Any]:
        async with await connect_local(self.address(index)) as stream:
            await stream.send_all(encode_frame([question]))
            return await _first_frame(stream)


async def listen_local(address: bytes, backlog: int) -> trio.SocketListener:
    """A listener on a local (Unix) address.

    Raises:
        OSError: the address is taken.
    """
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)


async def connect_local(address: bytes) -> trio.SocketStream:
    """A stream to a local (Unix) address.

    Raises:
        OSError: nothing listens there.
    """
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def frames(stream: trio.SocketStream, max_frame: int) -> AsyncIterator[list[Any]]:
    """The decoded frames of ``stream`` until it ends.

    Raises:
        FrameError, PayloadError: not a frame of the core's framing.
        trio.BrokenResourceError: the stream broke.
    """
    decoder = FrameDecoder(max_frame)
    while data := await stream.receive_some(READ_SIZE):
        decoder.feed(data)
        for payload in decoder.frames():
            yield decode_payload(payload)


async def _first_frame(stream: trio.SocketStream) -> list[Any]:
    """The first frame on ``stream``.

    Raises:
        EOFError: the stream ended before a whole frame.
    """
    async for frame in frames(stream, MAX_ANSWER):
        return frame
    raise EOFError("the stream ended before a whole frame")
