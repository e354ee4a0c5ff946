"""The rate limiter's asyncio path on a real redis-server: the same token bucket as the sync path, and a Redis
that cannot be reached lets requests through quickly instead of blocking the event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
import redis

from api.cli.stack import Stack, free_port
from api.ratelimit import RateLimiter, async_client

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(home=tmp_path_factory.mktemp("redis"), redis_port=free_port())
    stack.start_redis()
    yield stack
    stack.stop()


def test_the_async_bucket_shares_redis_with_the_sync_one(server: Stack) -> None:
    sync = redis.Redis.from_url(server.redis_url, decode_responses=True)
    sync.flushdb()

    async def scenario() -> list[bool]:
        limiter = RateLimiter(sync, rate=0.5, burst=2, aclient=async_client(server.redis_url))
        try:
            first = [(await limiter.acheck("t1")).allowed for _ in range(2)]
            return [*first, limiter.check("t1").allowed, (await limiter.acheck("t1")).allowed]
        finally:
            await limiter.aclose()

    assert asyncio.run(scenario()) == [True, True, False, False]
    assert sync.pttl("sieve:ratelimit:t1") > 0
    sync.close()


def test_redis_down_lets_the_request_through() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"

    async def scenario() -> bool:
        limiter = RateLimiter(redis.Redis.from_url(url), rate=1, burst=1, aclient=async_client(url))
        try:
            return (await limiter.acheck("t1")).allowed
        finally:
            await limiter.aclose()

    assert asyncio.run(scenario())
