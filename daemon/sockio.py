"""Socket reads and writes on trio's low-level wait primitives.

Trio's SocketStream costs ~11 us a request in wrappers and checkpoints; the
server talks to non-blocking stdlib sockets directly and parks on
``wait_readable``/``wait_writable``, which are the checkpoints.

Cancellation: a cancelled ``send_all`` may have sent some, all or none of the
data, so a connection whose send was cancelled is closed, never reused.
"""

from __future__ import annotations

import errno
import socket

import trio
from trio.lowlevel import wait_readable, wait_writable

# A lingering close reads and drops in pieces of this size.
LINGER_READ = 64 * 1024

__all__ = ["connect", "linger", "recv", "send_all", "send_now", "send_rest"]


async def connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking TCP socket with TCP_NODELAY (clients of the
    daemon's own: Redis, the payment processors).

    Cancellation: a cancelled connect closes the socket.

    Raises:
        OSError: the name does not resolve or the connection is refused.
    """
    infos = await trio.socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(address)
        if code == errno.EINPROGRESS:
            await wait_writable(sock)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            raise OSError(code, f"connect to {host}:{port}: {errno.errorcode.get(code, code)}")
    except BaseException:
        sock.close()
        raise
    return sock


async def recv(sock: socket.socket, view: memoryview) -> bytes:
    """The next bytes from the peer; ``b""`` at end of stream or on a reset."""
    while True:
        await wait_readable(sock)
        try:
            n = sock.recv_into(view)
        except (BlockingIOError, InterruptedError):
            continue  # woken without data (a spurious epoll edge)
        except OSError:
            return b""  # reset by the peer: the same as its end of stream to us
        return bytes(view[:n])


def send_now(sock: socket.socket, data: bytes) -> int:
    """Send what the socket takes without waiting; how much that was.

    The hot paths call this and only await ``send_rest`` when it falls short:
    a coroutine per response costs more than the syscall, which almost
    always takes everything.
    """
    try:
        return sock.send(data)
    except BlockingIOError:
        return 0


async def send_all(sock: socket.socket, data: bytes) -> None:
    """Send everything, waiting for room when the socket's buffer is full."""
    sent = send_now(sock, data)
    if sent != len(data):
        await send_rest(sock, data, sent)


async def send_rest(sock: socket.socket, data: bytes, sent: int) -> None:
    """Send ``data[sent:]``, waiting for room in the socket's buffer."""
    view = memoryview(data)
    while sent < len(data):
        await wait_writable(sock)
        try:
            sent += sock.send(view[sent:])
        except BlockingIOError:
            continue


async def linger(sock: socket.socket, *, seconds: float, quiet: float, most: int) -> None:
    """The reading half of a lingering close, as nginx's: send FIN, then read
    and drop what the peer still sends until it closes too, ``quiet`` seconds
    pass without a byte, ``seconds`` pass in all, or ``most`` bytes came.

    Closing a socket with input unread makes the kernel send a reset, which
    can destroy a response the peer has not read yet, and tells an idle
    client "reset" where "closed" is the truth.

    Cancellation: reading stops; the caller closes the socket either way.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:  # the peer has gone already
        return
    with trio.move_on_after(seconds):
        while most > 0:
            more = b""
            with trio.move_on_after(quiet):
                while True:
                    await wait_readable(sock)
                    try:
                        more = sock.recv(LINGER_READ)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        return
                    break
            if not more:  # the peer closed, or was quiet for ``quiet``
                return
            most -= len(more)
