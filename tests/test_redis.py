"""The trio Redis client (``sprintd.redis``) against a real redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from sprintd.redis import (
    Redis,
    RedisConnectionError,
    RedisReplyError,
    Script,
    open_redis,
)
from sprintd.redisurl import parse_url
from sprintd.settings import ConfigError, load_settings

from .servers import RedisServer, free_port

INCR_BELOW = Script(
    """
local value = tonumber(redis.call('GET', KEYS[1]) or '0')
if value >= tonumber(ARGV[1]) then return -1 end
return redis.call('INCR', KEYS[1])
"""
)


def test_urls() -> None:
    assert parse_url("redis://127.0.0.1:6380/2").port == 6380
    assert parse_url("redis://h/3").db == 3
    address = parse_url("redis://u:p%40ss@h:1/0")
    assert (address.username, address.password) == ("u", "p@ss")
    for bad in ("http://h:1/0", "redis://h:1/x", "redis:///0", "redis://h:99999/0"):
        with pytest.raises(ValueError):
            parse_url(bad)


def test_the_redis_url_is_a_core_setting() -> None:
    loaded = load_settings(environ={"SPRINTD_REDIS__URL": "redis://127.0.0.1:7000/1"})
    assert loaded.settings.redis.url == "redis://127.0.0.1:7000/1"
    with pytest.raises(ConfigError, match=r"^redis\.url = 'tcp://x' from environment"):
        load_settings(environ={"SPRINTD_REDIS__URL": "tcp://x"})


async def test_commands_replies_and_errors(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        assert await redis.execute("SET", "k", "v") == b"OK"
        assert await redis.execute("GET", "k") == b"v"
        assert await redis.execute("GET", "missing") is None
        assert await redis.execute("RPUSH", "l", 1, 2.5, b"\x00bin") == 3
        assert await redis.execute("LRANGE", "l", 0, -1) == [b"1", b"2.5", b"\x00bin"]
        with pytest.raises(RedisReplyError, match="WRONGTYPE"):
            await redis.execute("INCR", "l")
        # An error reply leaves the connection in step.
        assert await redis.execute("INCR", "n") == 1
        replies = await redis.pipeline(
            [("INCR", "n"), ("LPOP", "k"), ("INCR", "n")], raise_on_error=False
        )
        assert replies[0] == 2 and replies[2] == 3
        assert isinstance(replies[1], RedisReplyError)
        with pytest.raises(RedisReplyError):
            await redis.pipeline([("INCR", "n"), ("LPOP", "k")])
        assert await redis.execute("GET", "n") == b"4"
        assert await redis.pipeline([]) == []


async def test_concurrent_callers_get_their_own_replies_in_order(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        got: dict[int, list[bytes]] = {}

        async def caller(i: int) -> None:
            values = []
            for j in range(20):
                await redis.execute("SET", f"key{i}", f"{i}:{j}")
                values.append(await redis.execute("GET", f"key{i}"))
            got[i] = values

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(caller, i)
        assert got == {i: [f"{i}:{j}".encode() for j in range(20)] for i in range(50)}
        assert redis.connects == 1


async def test_a_large_pipeline_crosses_many_writes_and_reads(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        value = b"x" * 1000
        replies = await redis.pipeline([("SET", f"big{i}", value) for i in range(3000)])
        assert replies == [b"OK"] * 3000
        got = await redis.pipeline([("GET", f"big{i}") for i in range(3000)])
        assert got == [value] * 3000


async def test_scripts_load_on_first_use_then_run_by_sha(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        await redis.execute("SCRIPT", "FLUSH")
        assert await redis.script(INCR_BELOW, ["c"], [2]) == 1
        assert await redis.execute("SCRIPT", "EXISTS", INCR_BELOW.sha) == [1]
        assert await redis.script(INCR_BELOW, ["c"], [2]) == 2
        assert await redis.script(INCR_BELOW, ["c"], [2]) == -1
        with pytest.raises(RedisReplyError, match="ERR"):
            await redis.script(Script("return redis.call('NOSUCHCOMMAND')"))


async def test_a_cancelled_call_does_not_put_the_connection_out_of_step(redis_url: str) -> None:
    async with open_redis(redis_url) as redis:
        with trio.move_on_after(0.05) as scope:
            # Blocks in Redis for 0.3 s: the reply comes after we gave up.
            await redis.execute("BLPOP", "never", 0.3)
        assert scope.cancelled_caught
        assert await redis.execute("ECHO", "after") == b"after"
        assert redis.connects == 1


async def test_database_selection(redis_url: str) -> None:
    async with open_redis(redis_url.replace("/0", "/3")) as three, open_redis(redis_url) as zero:
        await three.execute("SET", "where", "three")
        assert await zero.execute("GET", "where") is None
        assert await three.execute("GET", "where") == b"three"


async def test_no_server_is_a_clear_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(RedisConnectionError, match=r"127\.0\.0\.1"):
        async with open_redis(url, connect_timeout=0.5):
            pass
    # Running in the background, a command waits connect_timeout, then fails.
    redis = Redis(url, connect_timeout=0.2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(redis.run)
        with pytest.raises(RedisConnectionError, match=r"not connected within 0\.2 s"):
            await redis.execute("PING")
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_lost_connection_fails_waiters_then_reconnects(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    try:
        async with open_redis(server.url) as redis:
            assert await redis.execute("SET", "a", "1") == b"OK"
            # The server closes our connection while a command waits.
            async with trio.open_nursery() as nursery:

                async def blocked() -> None:
                    with pytest.raises(RedisConnectionError, match="may or may not have run"):
                        await redis.execute("BLPOP", "never", 5)

                nursery.start_soon(blocked)
                async with open_redis(server.url) as admin:
                    # Once Redis shows the BLPOP blocked, it is in flight.
                    with trio.fail_after(5):
                        while b"cmd=blpop" not in await admin.execute("CLIENT", "LIST"):
                            await trio.sleep(0.01)
                    await admin.execute("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            with trio.fail_after(5):
                while True:
                    try:
                        assert await redis.execute("GET", "a") == b"1"
                        break
                    except RedisConnectionError:
                        await trio.sleep(0.01)
            assert redis.connects == 2
    finally:
        server.stop()
