"""The server's receive buffers: fixed-size, reused across connections.

A connection takes one only once its peer has sent something (``connection``)
and gives it back when it ends. The tier's ``prealloc_buffers`` knob
(``tuning``) decides whether the pool is filled at start-up, its pages
touched before the first request, or fills as connections come and go.
"""

from __future__ import annotations

__all__ = ["BufferPool"]


class BufferPool:
    """Fixed-size receive buffers, reused across connections.

    With preallocation the buffers are made (and their pages touched) at
    start-up; without it each connection makes its own. Either way a released
    buffer goes back to the pool while there is room.
    """

    def __init__(self, count: int, size: int, *, preallocate: bool) -> None:
        self.size = size
        self.capacity = count
        self._free = [bytearray(size) for _ in range(count if preallocate else 0)]
        self.misses = 0

    def acquire(self) -> bytearray:
        if self._free:
            return self._free.pop()
        self.misses += 1
        return bytearray(self.size)

    def release(self, buf: bytearray) -> None:
        if len(self._free) < self.capacity:
            self._free.append(buf)

    @property
    def available(self) -> int:
        return len(self._free)
