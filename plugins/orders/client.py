"""A small blocking client for the order-entry port (``README.md`` beside this file).

    with EntryClient("127.0.0.1", 9080) as client:  # sprintd run --port 8080
        [reply] = client.request([["new", {"symbol": "BTC-USD", "side": "buy",
                                          "price": "64000.00", "qty": "0.5"}]])

``send`` and ``receive`` may be used apart to pipeline many frames before
reading their replies, which come back in order.

The compact protocol (``README.md``, "The compact protocol") on the same
client: ``hello`` binds the connection to an account and learns the symbols'
indexes, then frames of positional commands go out with ``send_compact``
(``compact`` module for the codes) and ``receive`` answers their reply
frames' replies; execution reports pushed meanwhile are kept in ``reports``
as ``(seq, report)``, in order:

    with EntryClient("127.0.0.1", 9080) as client:
        client.hello("alice")
        btc = client.symbols["BTC-USD"]
        [reply] = client.request_compact([[NEW, btc, BUY, 6_400_000, 5000]])
"""

from __future__ import annotations

import socket
from types import TracebackType
from typing import Any

from sprintd import FrameDecoder, FrameError, decode_payload, encode_frame

from .compact import HELLO, OK, REPLIES, REPORTS, SESSION_ERROR, VERSION

__all__ = ["EntryClient", "EntryError"]


class EntryError(Exception):
    """The connection broke, or the daemon closed it with a reason."""


class EntryClient:
    """A blocking client of the order-entry port, for scripts, tests and benches:
    frames out, replies back in order (``request``), or many frames pipelined
    (``send_many`` then ``receive``)."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder = FrameDecoder()
        self._replies: list[list[Any]] = []
        #: Compact sessions: the hello's answer, the symbols' indexes by name,
        #: and the execution reports received, ``(seq, report)`` in order.
        self.compact = False
        self.epoch = 0
        self.last_seq = 0
        self.symbols: dict[str, int] = {}
        self.reports: list[tuple[int, list[Any]]] = []

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
            self._read(self.sock.recv(65536))
        return self._replies.pop(0)

    def _read(self, data: bytes) -> None:
        """Sort the frames ``data`` completes into replies and reports."""
        if not data:
            raise EntryError("the daemon closed the connection")
        self._decoder.feed(data)
        try:
            frames = [decode_payload(p) for p in self._decoder.frames()]
        except (FrameError, ValueError) as exc:
            raise EntryError(f"unreadable reply: {exc}") from None
        for frame in frames:
            self._take(frame)

    def _take(self, frame: list[Any]) -> None:
        if not self.compact:
            self._replies.append(frame)
        elif frame[0] == REPLIES:
            self._replies.append(frame[1:])
        elif frame[0] == REPORTS:
            first = frame[1]
            self.reports.extend((first + i, report) for i, report in enumerate(frame[2:]))
        elif frame[0] == SESSION_ERROR:
            raise EntryError(f"session closed: {frame[1]}: {frame[2]}")
        else:
            raise EntryError(f"unknown frame kind {frame[0]!r}")

    def poll(self, timeout: float) -> bool:
        """Read what arrives within ``timeout`` seconds (reports, replies);
        whether anything did.

        Raises:
            EntryError: as ``receive``.
        """
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        finally:
            self.sock.settimeout(self.timeout)
        self._read(data)
        return True

    def hello(self, account: str, after_seq: int | None = None) -> list[Any]:
        """Begin a compact session for ``account`` (replaying the reports after
        ``after_seq``, which arrive in ``reports``); the hello's reply.

        Raises:
            EntryError: the daemon refused it (the reply's code and message).
        """
        command: list[Any] = [HELLO, account] if after_seq is None else [HELLO, account, after_seq]
        self.compact = True
        reply: list[Any] = self.request_compact([command])[0]
        if reply[0] != OK:
            self.compact = False
            raise EntryError(f"hello refused: {reply[1]}: {reply[2]}")
        _, self.epoch, self.last_seq, table = reply
        self.symbols = {row[0]: index for index, row in enumerate(table)}
        return reply

    def send_compact(self, commands: list[list[Any]]) -> None:
        """Send one compact frame holding ``commands``."""
        self.sock.sendall(encode_frame([VERSION, *commands]))

    def request_compact(self, commands: list[list[Any]]) -> list[Any]:
        """One compact frame's replies, one per command."""
        self.send_compact(commands)
        return self.receive()

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
