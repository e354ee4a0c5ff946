"""The search cache: hits for the same search, never a stale or another tenant's result, TTL, what the key
covers, degraded answers not kept."""

from __future__ import annotations

import json
import time
from pathlib import Path

import fakeredis
import pytest
from prometheus_client import REGISTRY

from api.cache import SearchCache, normalise_query
from api.search_models import SearchRequest, SearchResult
from api.snapshot import ModelSnapshot
from tests.support.apikit import T1, T2, Harness, running

BEES = "Honey bees dance to show where the flowers grow."
TIDES = "Tides follow the moon and the sun across the sea."


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    with running(tmp_path) as h:
        h.upload(T1, "bees", BEES)
        h.upload(T1, "tides", TIDES)
        h.drain()
        yield h


def counted(result: str) -> float:
    return REGISTRY.get_sample_value("sieve_search_cache_total", {"result": result}) or 0.0


def test_a_repeated_search_is_served_from_the_cache(harness: Harness) -> None:
    hits, misses = counted("hit"), counted("miss")
    first = harness.search(T1, "where do bees dance", top_k=2)
    calls = len(harness.reranker.calls)
    again = harness.search(T1, "  Where do BEES\tdance ", top_k=2)
    assert first["cached"] is False and again["cached"] is True
    assert len(harness.reranker.calls) == calls  # nothing recomputed
    assert again["hits"] == first["hits"] and again["query"] == "  Where do BEES\tdance "
    assert set(again["timings_ms"]) == {"cache", "total"}
    assert (counted("hit"), counted("miss")) == (hits + 1, misses + 1)


def test_an_ingest_is_seen_at_once(harness: Harness) -> None:
    query = "why do the seas rise and fall with the moon"
    before = harness.search(T1, query, top_k=5)
    assert {h["document_id"] for h in before["hits"]} == {"bees", "tides"}
    harness.upload(T1, "seas", "Seas rise and fall with the moon: why the tides come twice a day.")
    assert harness.search(T1, query, top_k=5)["cached"] is True  # not served yet: still the same answer
    harness.drain()
    after = harness.search(T1, query, top_k=5)
    assert after["cached"] is False and "seas" in {h["document_id"] for h in after["hits"]}


def test_a_delete_is_seen_at_once(harness: Harness) -> None:
    query = "tides of the moon"
    assert "tides" in {h["document_id"] for h in harness.search(T1, query)["hits"]}
    harness.delete(T1, "tides")  # before the worker removed a single chunk
    after = harness.search(T1, query)
    assert after["cached"] is False and "tides" not in {h["document_id"] for h in after["hits"]}
    harness.drain()
    assert "tides" not in {h["document_id"] for h in harness.search(T1, query)["hits"]}


def test_a_new_version_of_a_document_is_seen_at_once(harness: Harness) -> None:
    assert "flowers" in harness.search(T1, "bees", top_k=1)["hits"][0]["text"]
    harness.upload(T1, "bees", "Bees sleep in the hive at night.")
    harness.drain()
    hit = harness.search(T1, "bees", top_k=1)["hits"][0]
    assert "sleep" in hit["text"]


def test_tenants_never_get_each_others_results(harness: Harness) -> None:
    harness.upload(T2, "other", "Honey bees of the second tenant dance on the roof.")
    harness.drain()
    mine = harness.search(T1, "where do bees dance")
    theirs = harness.search(T2, "where do bees dance")
    assert theirs["cached"] is False
    assert {h["document_id"] for h in mine["hits"]} == {"bees", "tides"}
    assert {h["document_id"] for h in theirs["hits"]} == {"other"}
    assert harness.search(T2, "where do bees dance")["hits"] == theirs["hits"]


def request(**fields: object) -> SearchRequest:
    return SearchRequest.model_validate({"query": "Where do bees dance?", **fields})


def test_an_entry_under_a_tenants_key_holding_another_tenant_is_not_served() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    cache = SearchCache(r, ttl_s=60)
    key, hit = cache.lookup("t1", request(), embedder="e", reranker="r")
    assert key is not None and hit is None
    r.set(key.key, json.dumps({"tenant": "t2", "response": {"query": "x"}}))  # a bug, or a collision
    assert cache.lookup("t1", request(), embedder="e", reranker="r")[1] is None


def test_entries_expire_after_the_ttl() -> None:
    r = fakeredis.FakeRedis(decode_responses=True)
    cache = SearchCache(r, ttl_s=1)
    key, _ = cache.lookup("t1", request(), embedder="e", reranker="r")
    assert key is not None
    cache.put(key, {"query": "x"})
    assert 0 < r.pttl(key.key) <= 1000
    assert cache.lookup("t1", request(), embedder="e", reranker="r")[1] == {"query": "x"}
    time.sleep(1.05)
    assert cache.lookup("t1", request(), embedder="e", reranker="r")[1] is None


def test_ttl_zero_turns_the_cache_off(tmp_path: Path) -> None:
    with running(tmp_path, cache_ttl_s=0) as h:
        h.upload(T1, "bees", BEES)
        h.drain()
        assert [h.search(T1, "bees")["cached"] for _ in range(3)] == [False, False, False]
        assert len(h.reranker.calls) == 3
        assert not h.redis.keys("sieve:cache:*")


def key_of(
    tenant: str = "t1", version: int = 0, embedder: str = "e", reranker: str = "r", **fields: object
) -> str:
    cache = SearchCache(fakeredis.FakeRedis(), ttl_s=60)
    return cache.key(tenant, request(**fields), version=version, embedder=embedder, reranker=reranker).key


@pytest.mark.parametrize(
    "change",
    [
        {"tenant": "t2"},
        {"version": 1},
        {"embedder": "e2"},
        {"reranker": "r2"},
        {"query": "Where do wasps dance?"},
        {"top_k": 6},
        {"candidates": 51},
        {"filters": {"team": "bio"}},
        {"filters": {"team": 1}},
        {"instruction": "Find passages about insects"},
    ],
)
def test_the_key_changes_with_each_parameter(change: dict[str, object]) -> None:
    assert key_of(**change) != key_of()


def test_the_key_ignores_case_spacing_unicode_form_and_filter_order() -> None:
    assert normalise_query("  Ｗhere  do\nBEES   dance? ") == "where do bees dance?"
    assert key_of(query="where   do BEES dance?") == key_of()
    assert key_of(filters={"a": 1, "b": "x"}) == key_of(filters={"b": "x", "a": 1})
    assert key_of(tenant="t1").startswith("sieve:cache:t1:")


def test_a_degraded_answer_is_not_cached(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    real = harness.res.search.answer

    def degraded(models: ModelSnapshot, tenant: str, req: SearchRequest) -> SearchResult:
        return real(models, tenant, req).model_copy(update={"degraded": True})

    monkeypatch.setattr(harness.res.search, "answer", degraded)
    assert harness.search(T1, "bees")["cached"] is False
    assert harness.search(T1, "bees")["cached"] is False
    monkeypatch.setattr(harness.res.search, "answer", real)
    assert harness.search(T1, "bees")["cached"] is False  # the healthy answer is computed, then kept
    assert harness.search(T1, "bees")["cached"] is True


def test_a_cache_down_costs_nothing_but_the_cache(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    def down(*a: object, **k: object) -> None:
        raise redis.ConnectionError("cache down")

    monkeypatch.setattr(harness.res.search.cache._r, "get", down)
    assert harness.search(T1, "bees")["cached"] is False
    assert harness.search(T1, "bees")["cached"] is False
