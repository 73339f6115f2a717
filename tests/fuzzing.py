"""What every fuzz test checks besides its parser's answers: no hang, no growth.

- ``bounded(seconds)``: a block that runs past ``seconds`` fails with
  ``Hang`` (raised from SIGALRM in the main thread), so a parser that loops,
  or backtracks without end, fails the test instead of stalling the suite.
  The bounds are hundreds of times what the code needs: they catch hangs,
  they do not time anything.
- ``retained_per_call(run, calls)``: memory blocks still allocated per call
  after many calls on the same inputs (``sys.getallocatedblocks`` with the
  GC collected around it); a parser that keeps something per input grows it.
- ``corpus(seed, count, samples)``: inputs from a seeded generator, the
  same on every run: random bytes, and valid samples with bytes flipped,
  inserted, deleted or cut.
"""

from __future__ import annotations

import gc
import random
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType

__all__ = ["Hang", "bounded", "corpus", "mutate", "retained_per_call"]

# Blocks a parser may keep per call: allocator noise, far below one object a call.
NOISE_PER_CALL = 0.02


class Hang(Exception):
    """A block ran past its bound."""


@contextmanager
def bounded(seconds: float) -> Iterator[None]:
    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def retained_per_call(run: Callable[[], object], calls: int) -> float:
    for _ in range(max(10, calls // 10)):  # caches, interned names, free lists
        run()
    gc.collect()
    gc.disable()
    try:
        before = sys.getallocatedblocks()
        for _ in range(calls):
            run()
        gc.collect()
        after = sys.getallocatedblocks()
    finally:
        gc.enable()
    return (after - before) / calls


def mutate(rng: random.Random, data: bytes, edits: int = 3) -> bytes:
    out = bytearray(data)
    for _ in range(edits):
        if not out:
            break
        at = rng.randrange(len(out))
        kind = rng.randrange(4)
        if kind == 0:
            out[at] = rng.randrange(256)
        elif kind == 1:
            out[at:at] = rng.randbytes(rng.randint(1, 4))
        elif kind == 2:
            del out[at]
        else:
            del out[at:]
    return bytes(out)


def corpus(seed: int, count: int, samples: Sequence[bytes], max_random: int = 256) -> list[bytes]:
    rng = random.Random(seed)
    found: list[bytes] = []
    for n in range(count):
        if n % 3 == 0 or not samples:
            found.append(rng.randbytes(rng.randint(0, max_random)))
        else:
            found.append(mutate(rng, rng.choice(samples), rng.randint(1, 4)))
    return found
