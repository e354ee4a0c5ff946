"""Bounded admission: /v1/search and the model routes run at most N at once, let M wait, then answer 429 with
Retry-After; the key check, the rate limit and every 429 are answered on the event loop, also while the thread
pool is full."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import fakeredis
import httpx
import pytest
from fastapi.testclient import TestClient

from api.limits import Admission, OverloadedError
from api.ratelimit import RateLimiter
from tests.support.apikit import T1, T2, running


# -- the gate ------------------------------------------------------------------------------------------------
def test_a_full_queue_refuses_at_once_and_a_released_slot_goes_to_the_first_waiter() -> None:
    async def scenario() -> list[str]:
        gate = Admission(1, 1, timeout_s=30, name="search queue", settings="API_SEARCH_CONCURRENCY")
        order: list[str] = []
        release = asyncio.Event()

        async def work(name: str) -> None:
            async with gate.admit():
                order.append(f"{name} runs")
                await release.wait()

        first = asyncio.create_task(work("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(work("second"))
        await asyncio.sleep(0)
        assert (gate.running, gate.waiting) == (1, 1)
        with pytest.raises(OverloadedError, match="search queue is full .*API_SEARCH_CONCURRENCY"):
            async with gate.admit():
                order.append("third runs")
        release.set()
        await asyncio.gather(first, second)
        assert (gate.running, gate.waiting) == (0, 0)
        return order

    assert asyncio.run(scenario()) == ["first runs", "second runs"]


def test_a_wait_past_the_timeout_is_refused_and_leaves_the_queue() -> None:
    async def scenario() -> None:
        gate = Admission(1, 1, timeout_s=0.01, retry_after_s=2)
        async with gate.admit():
            with pytest.raises(OverloadedError, match="within 0.01 s") as refused:
                async with gate.admit():
                    pass
            assert refused.value.retry_after_s == 2 and gate.waiting == 0
        assert gate.running == 0

    asyncio.run(scenario())


def test_a_cancelled_waiter_gives_its_place_back() -> None:
    async def scenario() -> None:
        gate = Admission(1, 1, timeout_s=30)
        async with gate.admit():
            waiter = asyncio.create_task(gate.admit().__aenter__())
            await asyncio.sleep(0)
            assert gate.waiting == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            assert gate.waiting == 0
        assert gate.running == 0

    asyncio.run(scenario())


def test_threads_and_coroutines_share_the_slots() -> None:
    gate = Admission(1, 1, timeout_s=30)

    async def admitted() -> None:
        async with gate.admit():
            pass

    with gate.slot():  # a thread holds the slot: a coroutine waits, then runs when it is released
        late = threading.Thread(target=lambda: asyncio.run(admitted()))
        late.start()
        _until(lambda: gate.waiting == 1)
    late.join(timeout=30)
    assert (gate.running, gate.waiting) == (0, 0)
    got: list[str] = []

    def in_a_thread() -> None:
        with gate.slot():
            got.append("thread")

    async def hold() -> None:  # a coroutine holds it: a thread waits, then runs when it is released
        async with gate.admit():
            thread = threading.Thread(target=in_a_thread)
            thread.start()
            while gate.waiting == 0:
                await asyncio.sleep(0.001)
        await anyio.to_thread.run_sync(thread.join)

    asyncio.run(hold())
    assert got == ["thread"] and gate.running == 0


def test_the_async_rate_limiter_asks_redis_without_a_thread() -> None:
    async def scenario() -> list[bool]:
        server = fakeredis.FakeServer()
        limiter = RateLimiter(
            fakeredis.FakeRedis(server=server, decode_responses=True),
            rate=0.5,
            burst=2,
            aclient=fakeredis.FakeAsyncRedis(server=server, decode_responses=True),
        )
        decisions = [await limiter.acheck("t1") for _ in range(3)]
        await limiter.aclose()
        assert decisions[-1].retry_after_s == 2
        return [d.allowed for d in decisions]

    assert asyncio.run(scenario()) == [True, True, False]


# -- the routes ----------------------------------------------------------------------------------------------
def test_search_past_its_queue_is_429_with_retry_after(tmp_path: Path) -> None:
    with running(tmp_path, search_concurrency=1, search_queue=0, retry_after_s=3) as h:
        h.upload(T1, "bees", "Honey bees dance to show where flowers grow.")
        h.drain()
        with h.res.search.admission.slot():  # the one search slot is busy and nothing may wait
            refused = h.client.post("/v1/search", json={"query": "bees"}, headers=T1)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "3"
        message = refused.json()["error"]["message"]
        assert "search queue is full" in message and "API_SEARCH_CONCURRENCY" in message
        assert h.search(T1, "bees")["hits"]  # served again once the slot is free


def test_the_search_queue_lets_waiters_through_in_turn(tmp_path: Path) -> None:
    with running(tmp_path, search_concurrency=1, search_queue=4) as h:
        h.upload(T1, "bees", "Honey bees dance to show where flowers grow.")
        h.drain()
        results: list[int] = []
        with h.res.search.admission.slot():
            threads = [
                threading.Thread(
                    target=lambda: results.append(
                        h.client.post("/v1/search", json={"query": "bees"}, headers=T1).status_code
                    )
                )
                for _ in range(3)
            ]
            for t in threads:
                t.start()
            _until(lambda: h.res.search.admission.waiting == 3)
        for t in threads:
            t.join(timeout=30)
        assert results == [200, 200, 200]


@contextmanager
def pool_blocked(client: TestClient) -> Iterator[None]:
    """Every thread of the app's pool busy: one token, held by a call that waits for the test."""
    portal = client.portal
    assert portal is not None
    release = threading.Event()

    async def one_token() -> None:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1

    async def holder() -> None:
        await anyio.to_thread.run_sync(release.wait)

    async def borrowed() -> float:
        return anyio.to_thread.current_default_thread_limiter().borrowed_tokens

    portal.call(one_token)
    held = portal.start_task_soon(holder)
    _until(lambda: portal.call(borrowed) == 1)
    try:
        yield
    finally:
        release.set()
        held.result(timeout=30)

        async def restore() -> None:
            anyio.to_thread.current_default_thread_limiter().total_tokens = 40

        portal.call(restore)


def answered(call: Callable[[], httpx.Response]) -> httpx.Response:
    """The response, if it comes while the pool is blocked (it would never come from a route that needs a
    thread: the test fails instead of hanging)."""
    out: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: out.append(call()), daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert out, "no answer while the thread pool was full: the request waited for a thread"
    return out[0]


def test_401_and_429_never_wait_for_the_thread_pool(tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "search_concurrency": 1,
        "search_queue": 1,
        "search_queue_timeout_s": 30,
        "inference_concurrency": 1,
        "inference_queue": 0,
        "rate_limits": {"t2": (0.001, 1)},
        "rate_limit_per_s": 1000,
        "rate_limit_burst": 1000,
    }
    with running(tmp_path, **settings) as h:
        c = h.client
        serving = c.app_state["serving"]
        search = h.res.search.admission
        assert c.get("/v1/documents", headers=T2).status_code == 200  # t2's one token
        with pool_blocked(c):
            no_key = answered(lambda: c.post("/v1/search", json={"query": "bees"}))
            limited = answered(lambda: c.post("/v1/search", json={"query": "bees"}, headers=T2))
            with search.slot():  # a search runs; the next one waits in the queue, then times out
                search.timeout_s = 0.05
                timed_out = answered(lambda: c.post("/v1/search", json={"query": "bees"}, headers=T1))
                search.timeout_s = 30
                waiter = threading.Thread(target=lambda: _hold(search))
                with serving.queue.slot():
                    waiter.start()  # one more waits: the queue is full, the door sheds
                    _until(lambda: search.waiting == 1)
                    search_full = answered(lambda: c.post("/v1/search", json={"query": "bees"}, headers=T1))
                    embed_full = answered(
                        lambda: c.post("/v1/embeddings", json={"input": "bees"}, headers=T1)
                    )
        waiter.join(timeout=30)
        assert no_key.status_code == 401
        assert limited.status_code == 429 and "rate limit" in limited.json()["error"]["message"]
        assert timed_out.status_code == 429 and "within 0.05 s" in timed_out.json()["error"]["message"]
        assert search_full.status_code == 429 and "search queue" in search_full.json()["error"]["message"]
        assert embed_full.status_code == 429 and "inference queue" in embed_full.json()["error"]["message"]
        assert c.post("/v1/search", json={"query": "bees"}, headers=T1).status_code == 200


def test_a_full_queue_sheds_at_the_door_before_the_key_and_the_body(tmp_path: Path) -> None:
    with running(tmp_path, search_concurrency=1, search_queue=0) as h:
        with h.res.search.admission.slot():
            shed = h.client.post(
                "/v1/search", content=b"{not json", headers={"Content-Type": "application/json"}
            )
            assert shed.status_code == 429 and shed.headers["Retry-After"] == "1"
            assert "API_SEARCH_CONCURRENCY" in shed.json()["error"]["message"]
            assert h.client.get("/v1/documents").status_code == 401  # other routes: the key first, as ever
        assert h.client.post("/v1/search", content=b"{not json", headers=T1).status_code == 422
        metrics = h.client.get("/metrics").text
        assert 'sieve_http_requests_total{method="POST",route="unmatched",status="429"}' in metrics
        assert "sieve_search_overloaded_total" in metrics


def _hold(gate: Admission) -> None:
    with gate.slot():
        pass


def _until(condition: Callable[[], bool]) -> None:
    for _ in range(2000):
        if condition():
            return
        threading.Event().wait(0.005)
    raise AssertionError("condition not reached")
