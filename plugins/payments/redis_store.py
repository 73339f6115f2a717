"""The Redis store: payments shared by every instance that names the same Redis.

Keys, under ``[payments] redis_prefix`` (``P``)::

    P:accepted         HASH  correlationId -> amount       every accepted payment
    P:inflight         HASH  correlationId -> owner|processor|requestedAt
                             accepted and not done; the processor part is set
                             by accept and commit, emptied by release
    P:done:default     ZSET  score requestedAt (ms), member correlationId:amount
    P:done:fallback    ZSET  the same
    P:owner:ID         an instance's heartbeat, expiring after owner_ttl
    P:health:NAME      the last health result of a processor (JSON)
    P:health-lock:NAME held by the instance that may poll NAME now

Each step is one round trip: a Lua script where it reads before it writes,
so two instances never both win. An instance handles the payments it
accepted (its owner id is in their ``inflight`` value); commit checks that
the payment is still its own, so a payment taken over by another instance,
or purged, is dropped rather than sent. Every second each instance renews
its heartbeat and takes over the in-flight payments of owners whose
heartbeat has expired (a crashed or killed instance), pins included.

The summary reads both ``done`` sets by score in one pipeline, so every
instance computes it from the same data and gives the same answer.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import trio

from sprintd import Redis, RedisError, Script

from .contract import PROCESSORS, Totals, amount_text, bound_ms
from .store import Accepted, Pending, StoreError

__all__ = ["RedisStore"]

# How often an instance renews its heartbeat and looks for orphaned payments.
TICK = 1.0
# A correlationId is a UUID in its 36-character text form (contract.parse_payment).
_CID_LENGTH = 36
# Payments taken over from dead owners per look, so one look stays short.
ADOPT_BATCH = 1000

# Also renews the instance's heartbeat: a payment is never owned by an
# instance that looks dead (one accepting before its first heartbeat tick).
_ACCEPT = Script(
    """
local prev = redis.call('HGET', KEYS[1], ARGV[1])
if prev then return prev end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('SET', KEYS[3], 1, 'PX', ARGV[4])
return 1
"""
)
# Commit (or, with empty processor and requestedAt, release) if still ours.
_COMMIT = Script(
    """
local v = redis.call('HGET', KEYS[1], ARGV[1])
local mine = ARGV[2] .. '|'
if not v or string.sub(v, 1, #mine) ~= mine then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], mine .. ARGV[3] .. '|' .. ARGV[4])
return 1
"""
)
_DONE = Script(
    """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[3])
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""
)
_ADOPT = Script(
    """
local out = {}
local alive = {}
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  local cid, v = all[i], all[i + 1]
  local owner, rest = string.match(v, '^([^|]*)(|.*)$')
  if owner and owner ~= ARGV[1] then
    local live = alive[owner]
    if live == nil then
      live = redis.call('EXISTS', ARGV[2] .. owner) == 1
      alive[owner] = live
    end
    if not live then
      redis.call('HSET', KEYS[1], cid, ARGV[1] .. rest)
      out[#out + 1] = cid
      out[#out + 1] = rest
      out[#out + 1] = redis.call('HGET', KEYS[2], cid) or ''
      if #out >= tonumber(ARGV[3]) * 3 then break end
    end
  end
end
return out
"""
)


class RedisStore:
    """Payments in Redis, shared by every instance; see the module docstring."""

    kind = "redis"

    def __init__(self, redis: Redis, prefix: str, owner_ttl: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.owner = uuid.uuid4().hex[:16]
        self.owner_ttl_ms = int(owner_ttl * 1000)
        self.owner_key = f"{prefix}:owner:{self.owner}"
        self.accepted_key = f"{prefix}:accepted"
        self.inflight_key = f"{prefix}:inflight"
        self.done_keys = {name: f"{prefix}:done:{name}" for name in PROCESSORS}
        self.adopted = 0
        self.last_error: str | None = None

    async def _script(self, script: Script, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.redis.script(script, keys, args)
        except RedisError as exc:
            self.last_error = str(exc)
            raise StoreError(f"redis: {exc}") from None

    # --- the steps ------------------------------------------------------------------

    async def accept(
        self, cid: str, amount: Decimal, processor: str, at: int
    ) -> tuple[Accepted, Pending | None]:
        text = amount_text(amount)
        found = await self._script(
            _ACCEPT,
            [self.accepted_key, self.inflight_key, self.owner_key],
            [cid, text, f"{self.owner}|{processor}|{at}", self.owner_ttl_ms],
        )
        if found == 1:
            return Accepted.NEW, Pending(cid, text, (processor, at))
        return (Accepted.SAME if Decimal(found.decode()) == amount else Accepted.CONFLICT), None

    async def commit(self, payment: Pending, processor: str, at: int) -> bool:
        mine = await self._script(
            _COMMIT, [self.inflight_key], [payment.cid, self.owner, processor, at]
        )
        if mine:
            payment.committed = (processor, at)
        return bool(mine)

    async def release(self, payment: Pending) -> None:
        payment.committed = None
        await self._script(_COMMIT, [self.inflight_key], [payment.cid, self.owner, "", ""])

    async def done(self, payment: Pending, processor: str, at: int) -> None:
        await self._script(
            _DONE,
            [self.accepted_key, self.inflight_key, self.done_keys[processor]],
            [payment.cid, at, f"{payment.cid}:{payment.amount}"],
        )

    async def summary(self, low_us: int | None, high_us: int | None) -> Totals:
        low, high = bound_ms(low_us, low=True), bound_ms(high_us, low=False)
        try:
            replies = await self.redis.pipeline(
                [
                    (
                        "ZRANGE",
                        self.done_keys[name],
                        "-inf" if low is None else low,
                        "+inf" if high is None else high,
                        "BYSCORE",
                    )
                    for name in PROCESSORS
                ]
            )
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from None
        totals: Totals = {}
        for name, members in zip(PROCESSORS, replies, strict=True):
            # Members are "<36-character correlationId>:<amount>". Amounts
            # repeat (the challenge's are all 19.90): counted as bytes, in C,
            # then each distinct one made a decimal once.
            counts = Counter(member[_CID_LENGTH + 1 :] for member in members)
            total = sum((Decimal(text.decode()) * n for text, n in counts.items()), Decimal(0))
            totals[name] = (len(members), total)
        return totals

    async def purge(self) -> None:
        try:
            await self.redis.execute(
                "DEL", self.accepted_key, self.inflight_key, *self.done_keys.values()
            )
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from None

    # --- shared health ----------------------------------------------------------------

    async def claim_health(self, name: str, hold_ms: int) -> tuple[bool, bytes | None]:
        """Take the right to poll ``name`` for ``hold_ms`` if nobody has it; the
        shared result either way."""
        try:
            won, result = await self.redis.pipeline(
                [
                    ("SET", f"{self.prefix}:health-lock:{name}", self.owner, "NX", "PX", hold_ms),
                    ("GET", f"{self.prefix}:health:{name}"),
                ]
            )
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from None
        return won is not None, result

    async def publish_health(self, name: str, result: bytes) -> None:
        try:
            await self.redis.execute("SET", f"{self.prefix}:health:{name}", result)
        except RedisError as exc:
            raise StoreError(f"redis: {exc}") from None

    # --- owners -----------------------------------------------------------------------

    async def heartbeat_and_adopt(self) -> list[Pending]:
        """Renew this instance's heartbeat; take over dead owners' payments."""
        try:
            await self.redis.execute("SET", self.owner_key, 1, "PX", self.owner_ttl_ms)
        except RedisError as exc:
            self.last_error = str(exc)
            raise StoreError(f"redis: {exc}") from None
        found = await self._script(
            _ADOPT,
            [self.inflight_key, self.accepted_key],
            [self.owner, f"{self.prefix}:owner:", ADOPT_BATCH],
        )
        adopted = []
        for i in range(0, len(found), 3):
            cid, rest, amount = found[i].decode(), found[i + 1].decode(), found[i + 2].decode()
            _, processor, at = rest.split("|")
            if not amount:
                continue  # purged since
            committed = (processor, int(at)) if processor else None
            adopted.append(Pending(cid, amount, committed, pinned=committed is not None))
        self.adopted += len(adopted)
        return adopted

    async def run(self, submit: Callable[[Pending], None]) -> None:
        """Heartbeat and adoption, every ``TICK``, until cancelled; adopted
        payments go to ``submit``."""
        while True:
            try:
                for payment in await self.heartbeat_and_adopt():
                    submit(payment)
            except StoreError:
                pass  # kept in last_error, shown on /health; the next tick retries
            await trio.sleep(TICK)

    def details(self) -> dict[str, Any]:
        details: dict[str, Any] = {
            "store": self.kind,
            "owner": self.owner,
            "connected": self.redis.connected,
            "adopted": self.adopted,
        }
        if self.last_error:
            details["last_error"] = self.last_error
        return details
