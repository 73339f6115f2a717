"""sprintd.peers: a worker's questions to its siblings, answered or given up on in time."""

from __future__ import annotations

import os
import socket
from itertools import count

import trio

from sprintd.peers import ASK_TIMEOUT_S, Peers

_daemons = count()


def _namespace() -> str:
    # Unique per test: abstract names are machine-wide.
    return f"test-{os.getpid()}-{next(_daemons)}"


async def test_a_question_is_answered_by_every_sibling() -> None:
    namespace = _namespace()
    workers = [Peers(namespace, index, 3) for index in range(3)]
    for peers in workers:
        peers.handle("who", lambda peers=peers: {"index": peers.index, "big": list(range(50_000))})
    async with trio.open_nursery() as nursery:
        for peers in workers:
            await nursery.start(peers.serve)
        answers = await workers[1].ask("who")
        nursery.cancel_scope.cancel()
    assert sorted(answers) == [0, 2]
    assert answers[2]["index"] == 2
    assert answers[0]["big"] == list(range(50_000))


async def test_a_sibling_not_listening_is_left_out() -> None:
    peers = Peers(_namespace(), 0, 2)
    assert await peers.ask("who") == {}


async def test_a_stuck_sibling_is_given_up_on_after_the_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    namespace = _namespace()
    asker = Peers(namespace, 0, 2)
    # Worker 1 accepts (the kernel does) but never answers: a stopped process.
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.bind(asker.address(1))
    stuck.listen(4)
    try:
        start = trio.current_time()
        assert await asker.ask("who") == {}
        assert trio.current_time() - start == ASK_TIMEOUT_S
    finally:
        stuck.close()


async def test_a_failing_or_unknown_answer_is_left_out_and_the_sibling_goes_on() -> None:
    namespace = _namespace()
    asker, sibling = Peers(namespace, 0, 2), Peers(namespace, 1, 2)

    def broken() -> object:
        raise RuntimeError("a bug in the answer")

    sibling.handle("broken", broken)
    sibling.handle("fine", lambda: "ok")
    async with trio.open_nursery() as nursery:
        await nursery.start(sibling.serve)
        assert await asker.ask("broken") == {}
        assert await asker.ask("unknown") == {}
        assert await asker.ask("fine") == {1: "ok"}
        nursery.cancel_scope.cancel()


async def test_two_daemons_never_hear_each_other() -> None:
    ours, theirs = Peers(_namespace(), 0, 2), Peers(_namespace(), 1, 2)
    theirs.handle("who", lambda: "the other daemon")
    async with trio.open_nursery() as nursery:
        await nursery.start(theirs.serve)
        assert await ours.ask("who") == {}
        nursery.cancel_scope.cancel()
