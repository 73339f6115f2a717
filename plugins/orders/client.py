"""A small blocking client for the order-entry port (``README.md`` beside this file).

    with EntryClient("127.0.0.1", 9080) as client:  # sprintd run --port 8080
        [reply] = client.request([["new", {"symbol": "BTC-USD", "side": "buy",
                                          "price": "64000.00", "qty": "0.5"}]])

``send`` and ``receive`` may be used apart to pipeline many frames before
reading their replies, which come back in order.
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Any

from sprintd import FrameDecoder, FrameError, decode_payload, encode_frame

__all__ = ["EntryClient", "EntryError"]


class EntryError(Exception):
    """The connection broke, or the daemon closed it with a reason."""


class EntryClient:
    """A blocking client of the order-entry port, for scripts, tests and benches:
    frames out, replies back in order (``request``), or many frames pipelined
    (``send_many`` then ``receive``)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder = FrameDecoder()
        self._replies: list[list[Any]] = []

    def send(self, commands: list[list[Any]]) -> None:
        """Send one frame holding ``commands``."""
        self.sock.sendall(encode_frame(commands))

    def send_many(self, frames: list[list[list[Any]]]) -> None:
        self.sock.sendall(b"".join(encode_frame(commands) for commands in frames))

    def receive(self) -> list[Any]:
        """The next reply frame: one reply per command of the frame it answers.

        Raises:
            EntryError: the daemon closed the connection or broke the framing.
        """
        while not self._replies:
            data = self.sock.recv(65536)
            if not data:
                raise EntryError("the daemon closed the connection")
            self._decoder.feed(data)
            try:
                self._replies.extend(decode_payload(p) for p in self._decoder.frames())
            except (FrameError, ValueError) as exc:
                raise EntryError(f"unreadable reply: {exc}") from None
        return self._replies.pop(0)

    def request(self, commands: list[list[Any]]) -> list[Any]:
        self.send(commands)
        return self.receive()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> EntryClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
