"""/v1/search when stage 2 fails or is late (answered in stage-1 order, marked degraded, counted), and the
operations routes: /info, /metrics, the OpenAPI description of errors."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from ingestion.settings import IngestSettings
from reranking import RerankOverloadedError, RerankUnavailableError
from tests.support import compat_harness as harness
from tests.support.compat_harness import AUTH
from tests.support.fakes import FakeReranker

DOCS = {
    "bees.md": "Honey bees dance to show where flowers grow.",
    "tides.txt": "Tides follow the moon and the sun.",
    "hive.txt": "A hive of bees keeps its honey for the winter.",
}


def degraded_count(reason: str) -> float:
    return REGISTRY.get_sample_value("sieve_degraded_total", {"reason": reason}) or 0.0


def search(ingest: IngestSettings, reranker: FakeReranker, **api: object) -> dict:
    with harness.client(ingest, reranker, cache_ttl_s=0, **api) as (client, res):
        harness.index(res, "t1", DOCS)
        r = client.post("/v1/search", json={"query": "where do bees dance", "top_k": 2}, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def test_a_healthy_rerank_stage_is_not_degraded(ingest_settings: IngestSettings) -> None:
    body = search(ingest_settings, FakeReranker())
    assert body["degraded"] is False and body["degraded_reason"] is None
    assert body["rerank"]["applied"] is True and body["hits"][0]["rerank_score"] is not None


@pytest.mark.parametrize(
    ("failure", "kind", "fragment"),
    [
        (
            RerankUnavailableError("rerank server at http://x cannot be reached"),
            "unavailable",
            "cannot be reached",
        ),
        (RerankOverloadedError("queue full"), "overloaded", "overloaded"),
        (RuntimeError("CUDA error: secret detail"), "error", "the rerank stage failed"),
    ],
)
def test_a_failing_rerank_stage_gives_stage1_order(
    ingest_settings: IngestSettings, failure: BaseException, kind: str, fragment: str
) -> None:
    before = degraded_count(kind)
    body = search(ingest_settings, FakeReranker(fail=failure))
    assert body["degraded"] is True and fragment in body["degraded_reason"]
    assert "secret" not in str(body)
    assert body["rerank"] == {"backend": "test:overlap", "applied": False, "note": body["degraded_reason"]}
    hits = body["hits"]
    assert len(hits) == 2 and all(h["rerank_score"] is None and h["score"] == h["stage1_score"] for h in hits)
    assert [h["stage1_score"] for h in hits] == sorted((h["stage1_score"] for h in hits), reverse=True)
    assert degraded_count(kind) == before + 1


def test_a_late_rerank_stage_misses_its_deadline(ingest_settings: IngestSettings) -> None:
    before = degraded_count("timeout")
    body = search(ingest_settings, FakeReranker(delay_s=1.0), rerank_deadline_s=0.05)
    assert body["degraded"] is True and "0.05 s deadline" in body["degraded_reason"]
    assert body["timings_ms"]["rerank"] < 900
    assert degraded_count("timeout") == before + 1


def test_info_names_models_and_limits(ingest_settings: IngestSettings) -> None:
    with harness.client(ingest_settings, FakeReranker(), max_rerank_documents=7) as (client, _):
        info = client.get("/info").json()
    assert info["service"] == "sieve-api" and info["version"]
    assert (
        info["models"]["reranker"]["name"] == "test:overlap"
        and info["models"]["reranker"]["max_tokens"] == 512
    )
    assert info["models"]["embedder"] == {"name": "test:hash-bow:64", "dimension": 64, "max_tokens": 64}
    assert info["limits"]["max_rerank_documents"] == 7 and info["limits"]["max_embedding_inputs"] == 2048


def test_metrics_count_requests_stages_and_batches(ingest_settings: IngestSettings) -> None:
    with harness.client(ingest_settings, FakeReranker(), cache_ttl_s=0) as (client, res):
        harness.index(res, "t1", DOCS)
        client.post("/v1/rerank", json={"query": "bees", "documents": ["a", "b", "c"]}, headers=AUTH)
        client.post("/v1/search", json={"query": "bees"}, headers=AUTH)
        r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert 'sieve_http_requests_total{method="POST",route="/v1/rerank",status="200"}' in text
    assert 'sieve_batch_size_bucket{kind="rerank",le="4.0"}' in text
    for stage in ("embed", "stage1", "rerank", "rerank_call"):
        assert f'sieve_stage_seconds_count{{stage="{stage}"}}' in text
    for name in ("sieve_inference_queue_depth", "sieve_degraded_total", "sieve_low_confidence_total"):
        assert name in text


def test_openapi_describes_the_error_body_clients_get(ingest_settings: IngestSettings) -> None:
    with harness.client(ingest_settings, FakeReranker()) as (client, _):
        spec = client.get("/openapi.json").json()
        bad = client.post("/v1/rerank", json={}, headers=AUTH).json()
    error = spec["components"]["schemas"]["HTTPValidationError"]
    assert error["required"] == ["error"] and set(bad) == {"error"}
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/v1/embeddings", "/v1/similarity", "/info"} <= set(
        spec["paths"]
    )
