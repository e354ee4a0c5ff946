"""Per-tenant token buckets: a burst, then 429 with Retry-After; refill; tenants apart; off at 0."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from api.cli.stack import free_port
from api.ratelimit import RateLimiter
from tests.support.apikit import ADMIN, T1, T2, running


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def limiter(rate: float = 2.0, burst: int = 3, **overrides: tuple[float, int]) -> tuple[RateLimiter, Clock]:
    clock = Clock()
    client = fakeredis.FakeRedis(decode_responses=True)
    return RateLimiter(client, rate=rate, burst=burst, overrides=overrides, clock=clock), clock


def test_a_burst_then_refusals_with_the_wait() -> None:
    limit, _ = limiter(rate=0.25, burst=3)
    assert [limit.check("t1").allowed for _ in range(3)] == [True, True, True]
    refused = limit.check("t1")
    assert not refused.allowed and refused.retry_after_s == 4  # one token every 4 s


def test_tokens_come_back_at_the_rate() -> None:
    limit, clock = limiter(rate=2.0, burst=3)
    for _ in range(3):
        limit.check("t1")
    assert not limit.check("t1").allowed
    clock.now += 0.5
    assert limit.check("t1").allowed and not limit.check("t1").allowed
    clock.now += 60  # a long pause refills up to the burst, not beyond
    assert [limit.check("t1").allowed for _ in range(4)] == [True, True, True, False]


def test_tenants_have_their_own_buckets_and_overrides() -> None:
    limit, _ = limiter(rate=1.0, burst=2, big=(100.0, 50))
    assert [limit.check("t1").allowed for _ in range(3)] == [True, True, False]
    assert [limit.check("t2").allowed for _ in range(2)] == [True, True]
    assert all(limit.check("big").allowed for _ in range(50)) and not limit.check("big").allowed
    assert limit.limit_for("big").describe() == "100 requests/s with bursts of 50"


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 10), (5.0, 0)])
def test_zero_means_no_limit(rate: float, burst: int) -> None:
    limit, _ = limiter(rate=rate, burst=burst)
    assert all(limit.check("t1").allowed for _ in range(500))


def test_redis_down_lets_requests_through() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    assert RateLimiter(client, rate=1, burst=1).check("t1").allowed


def test_the_api_answers_429_with_retry_after_naming_the_limit(tmp_path: Path) -> None:
    with running(tmp_path, rate_limit_per_s=0.5, rate_limit_burst=2, rate_limits={"t2": (100, 100)}) as h:
        ok = [h.client.get("/v1/documents", headers=T1).status_code for _ in range(2)]
        refused = h.client.post("/v1/search", json={"query": "x"}, headers=T1)
        assert ok == [200, 200] and refused.status_code == 429
        assert refused.headers["Retry-After"] == "2"
        message = refused.json()["error"]["message"]
        assert "'t1'" in message and "0.5 requests/s with bursts of 2" in message
        assert all(h.client.get("/v1/documents", headers=T2).status_code == 200 for _ in range(10))
        assert h.client.get("/v1/review", headers=T1).status_code == 429  # the review routes count too
        assert h.client.get("/v1/review", headers=ADMIN).status_code == 200  # the admin is not a tenant
