"""Per-tenant rate limits: a token bucket in Redis, read and updated atomically by one Lua script.

A tenant's bucket holds up to ``burst`` tokens and gains ``rate`` tokens a second; each request takes one.
An empty bucket answers 429 with ``Retry-After``: the whole seconds until a token is back. The bucket lives in
Redis (``sieve:ratelimit:{tenant}``), so every API process behind a balancer shares it, and the script reads
the clock of Redis (``TIME``), so the API hosts' clocks do not matter. A rate or burst of 0 means no limit.
When Redis cannot be reached the request is let through (a warning is logged): the limit protects the
service, it is not a reason to refuse all traffic.

The API checks on its event loop (``await acheck``) through an asyncio Redis client (``async_client``: short
timeouts, no retries), never in the thread pool: a 429 must not wait behind the model calls that fill it.
``check`` is the same for threads and scripts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import redis
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ingestion import keyspace

logger = logging.getLogger(__name__)


# KEYS[1] the bucket; ARGV rate, burst, cost, [now in seconds: tests pass a clock; else Redis TIME].
# Returns {allowed (0/1), seconds to wait (a string: Lua numbers become integers in replies)}.
TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


@dataclass(frozen=True, slots=True)
class Limit:
    rate: float
    burst: int

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.burst > 0

    def describe(self) -> str:
        return f"{self.rate:g} requests/s with bursts of {self.burst}"


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: int  # whole seconds, at least 1 when refused
    limit: Limit


class RateLimiter:
    def __init__(
        self,
        client: redis.Redis,
        *,
        rate: float,
        burst: int,
        overrides: Mapping[str, tuple[float, int]] | None = None,
        clock: Callable[[], float] | None = None,
        aclient: redis.asyncio.Redis | None = None,
    ) -> None:
        self._r = client
        self._aclient = aclient
        self._ascript = aclient.register_script(TOKEN_BUCKET) if aclient is not None else None
        self.default = Limit(rate, burst)
        self.overrides = {tenant: Limit(r, b) for tenant, (r, b) in (overrides or {}).items()}
        self._clock = clock
        self._script = client.register_script(TOKEN_BUCKET)

    def limit_for(self, tenant: str) -> Limit:
        return self.overrides.get(tenant, self.default)

    def _args(self, limit: Limit) -> list[float | int]:
        args: list[float | int] = [limit.rate, limit.burst, 1]
        if self._clock is not None:
            args.append(self._clock())
        return args

    def check(self, tenant: str, limit: Limit | None = None) -> Decision:
        """Take one token from the tenant's bucket, if it has one."""
        limit = limit or self.limit_for(tenant)
        if not limit.enabled:
            return Decision(True, 0, limit)
        try:
            reply = self._script(keys=[keyspace.ratelimit(tenant)], args=self._args(limit))
        except redis.RedisError as exc:
            return _unavailable(limit, exc)
        return _decision(limit, reply)

    async def acheck(self, tenant: str, limit: Limit | None = None) -> Decision:
        """``check`` on the event loop without blocking it, through the asyncio client. A limiter built
        without one (over an in-memory client, in tests) calls ``check`` inline. ``limit``: the tenant's
        limit stored in Redis (``api.tenant_keys``), over the configured one."""
        limit = limit or self.limit_for(tenant)
        if not limit.enabled:
            return Decision(True, 0, limit)
        if self._ascript is None:
            return self.check(tenant, limit)
        try:
            reply = await self._ascript(keys=[keyspace.ratelimit(tenant)], args=self._args(limit))
        except redis.RedisError as exc:
            return _unavailable(limit, exc)
        return _decision(limit, reply)

    @property
    def aclient(self) -> redis.asyncio.Redis | None:
        return self._aclient

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()


def _decision(limit: Limit, reply: list[object]) -> Decision:
    allowed, wait = reply
    if int(str(allowed)):
        return Decision(True, 0, limit)
    return Decision(False, max(1, math.ceil(float(str(wait)))), limit)


def _unavailable(limit: Limit, exc: Exception) -> Decision:
    logger.warning("rate limiter unavailable, letting the request through: %s", exc)
    return Decision(True, 0, limit)


def async_client(url: str) -> redis.asyncio.Redis:
    """The limiter's asyncio client: Redis down or slow lets requests through within half a second."""
    return redis.asyncio.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
