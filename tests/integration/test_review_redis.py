"""The review queue, the rate limiter and the cache on a real redis-server of the project's own (free port,
append-only file as the embedded stack runs it): the sink contract, the Lua token bucket on Redis's clock,
and flagged searches surviving a restart of Redis."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from api.cli.stack import Stack, free_port
from api.ratelimit import RateLimiter
from api.review import ReviewQueue, ReviewSink
from tests.contract.review_sink import ReviewSinkContract
from tests.support.apikit import ADMIN, T1, running

pytestmark = pytest.mark.integration


def start(home: Path, port: int) -> Stack:
    stack = Stack(home=home, redis_port=port)
    stack.start_redis()
    return stack


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = start(tmp_path_factory.mktemp("redis"), free_port())
    yield stack
    stack.stop()


@pytest.fixture
def client(server: Stack) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(server.redis_url, decode_responses=True)
    r.flushdb()
    yield r
    r.close()


class TestReviewQueueOnRedis(ReviewSinkContract):
    @pytest.fixture
    def sink(self, client: redis.Redis) -> ReviewSink:
        return ReviewQueue(client)


def test_the_token_bucket_runs_on_redis_time(client: redis.Redis) -> None:
    limit = RateLimiter(client, rate=4.0, burst=2)
    assert [limit.check("t1").allowed for _ in range(3)] == [True, True, False]
    assert limit.check("t2").allowed
    time.sleep(0.3)  # one token back after 0.25 s
    assert limit.check("t1").allowed and not limit.check("t1").allowed
    assert 0 < client.pttl("sieve:ratelimit:t1") <= 1500


def test_flagged_searches_and_labels_survive_a_redis_restart(tmp_path: Path) -> None:
    home, port = tmp_path / "stack", free_port()
    stack = start(home, port)
    try:
        with running(tmp_path, client=redis.Redis.from_url(stack.redis_url, decode_responses=True)) as h:
            h.upload(T1, "bees", "Honey bees dance to show where the flowers grow.")
            h.drain()
            h.reranker.unsure.update({"what is dark matter", "why is the sky blue"})
            h.search(T1, "what is dark matter")
            h.search(T1, "why is the sky blue")
            first, second = h.client.get("/v1/review", headers=T1).json()["items"]
            assert (
                h.client.post(f"/v1/review/{first['id']}", json={"indices": [0]}, headers=T1).status_code
                == 200
            )

            stack.stop()  # SIGTERM: Redis writes its append-only file out and exits
            with pytest.raises(redis.ConnectionError):
                h.redis.ping()
            stack.start_redis()  # same data dir, same port

            after = h.client.get("/v1/review", headers=ADMIN).json()["items"]
            assert [i["id"] for i in after] == [first["id"], second["id"]]
            assert after[0]["state"] == "labelled" and after[1]["state"] == "pending"
            assert after[1]["candidates"] == second["candidates"]
            claimed = h.client.post("/v1/review/claim", headers=ADMIN, params={"reviewer": "ann"}).json()
            assert [i["id"] for i in claimed] == [second["id"]]  # the consumer group came back too
            assert len(h.client.get("/v1/review/export", headers=T1).text.splitlines()) == 1
    finally:
        stack.stop()
    assert (home / "redis").exists() and any((home / "redis").rglob("*.aof*"))
