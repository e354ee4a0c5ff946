"""The compatible endpoints on fakes: request and response shapes, caps and their status codes."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.resources import Resources
from ingestion.settings import IngestSettings
from tests.support import compat_harness as harness
from tests.support.compat_harness import AUTH
from tests.support.fakes import FakeReranker

QUERY = "where do honey bees dance"
DOCS = ["Tides follow the moon.", "Honey bees dance to show where flowers grow.", "Bees make honey."]


@pytest.fixture
def reranker() -> FakeReranker:
    return FakeReranker()


@pytest.fixture
def parts(ingest_settings: IngestSettings, reranker: FakeReranker) -> Iterator[tuple[TestClient, Resources]]:
    with harness.client(
        ingest_settings, reranker, max_rerank_documents=5, max_embedding_inputs=4, max_tokens_per_doc=8
    ) as parts:
        yield parts


@pytest.fixture
def client(parts: tuple[TestClient, Resources]) -> TestClient:
    return parts[0]


# -- rerank --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_cohere_rerank_shape(client: TestClient, path: str) -> None:
    body = {"model": "anything", "query": QUERY, "documents": [DOCS[0], {"text": DOCS[1]}, DOCS[2]]}
    r = client.post(path, json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) == {"id", "model", "results", "usage", "meta"}
    assert out["model"] == "test:overlap" and out["id"]
    assert [x["index"] for x in out["results"]] == [1, 2, 0]
    scores = [x["relevance_score"] for x in out["results"]]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(0.8)
    assert all(set(x) == {"index", "relevance_score"} for x in out["results"])  # no document unless asked
    assert (
        out["usage"]["total_tokens"] > 0
        and out["meta"]["tokens"]["input_tokens"] == out["usage"]["total_tokens"]
    )


def test_rerank_top_n_return_documents_and_instruction(client: TestClient, reranker: FakeReranker) -> None:
    body = {
        "query": QUERY,
        "documents": DOCS,
        "top_n": 2,
        "return_documents": True,
        "instruction": "Find bees",
    }
    out = client.post("/v1/rerank", json=body, headers=AUTH).json()
    assert [(x["index"], x["document"]) for x in out["results"]] == [
        (1, {"text": DOCS[1]}),
        (2, {"text": DOCS[2]}),
    ]
    assert reranker.calls[-1][2:] == (2, "Find bees", False)  # no windows unless asked


def test_tei_rerank_shape(client: TestClient) -> None:
    r = client.post("/rerank", json={"query": QUERY, "texts": DOCS, "return_text": True}, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert isinstance(out, list) and [x["index"] for x in out] == [1, 2, 0]
    assert out[0] == {"index": 1, "score": pytest.approx(0.8), "text": DOCS[1]}
    raw = client.post(
        "/rerank", json={"query": QUERY, "texts": DOCS, "raw_scores": True}, headers=AUTH
    ).json()
    assert all(set(x) == {"index", "score"} for x in raw)
    p = out[1]["score"]
    assert raw[1]["score"] == pytest.approx(np.log(p / (1 - p)))  # the logit behind the probability


def test_long_documents_are_cut_by_default_and_refused_without_truncate(
    client: TestClient, reranker: FakeReranker
) -> None:
    long_doc = "one two three four five six seven eight nine ten eleven"
    r = client.post("/v1/rerank", json={"query": "nine", "documents": [long_doc]}, headers=AUTH)
    assert r.status_code == 200
    assert reranker.calls[-1][1] == ["one two three four five six seven eight"]  # API_MAX_TOKENS_PER_DOC=8
    assert reranker.calls[-1].windows is False and "window" not in r.json()["results"][0]  # the default
    r = client.post(
        "/v1/rerank", json={"query": "x", "documents": [long_doc], "max_tokens_per_doc": 2}, headers=AUTH
    )
    assert reranker.calls[-1][1] == ["one two"]
    r = client.post(
        "/v1/rerank", json={"query": "x", "documents": [long_doc], "truncate": False}, headers=AUTH
    )
    assert r.status_code == 413
    assert (
        "11 tokens" in r.json()["error"]["message"]
        and "API_MAX_TOKENS_PER_DOC" in r.json()["error"]["message"]
    )
    r = client.post("/rerank", json={"query": "x", "texts": [long_doc], "truncate": False}, headers=AUTH)
    assert r.status_code == 413
    client.post(
        "/rerank", json={"query": "x", "texts": [long_doc], "truncation_direction": "Left"}, headers=AUTH
    )
    assert reranker.calls[-1][1] == ["four five six seven eight nine ten eleven"]


LONG_DOC = "one two three four five six seven eight nine ten eleven"


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_windows_cut_nothing_and_say_which_window_won(
    client: TestClient, reranker: FakeReranker, path: str
) -> None:
    body = {"query": "nine", "documents": [LONG_DOC, "ten"], "long_documents": "windows"}
    r = client.post(path, json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    assert reranker.calls[-1].documents == [LONG_DOC, "ten"]  # not cut at API_MAX_TOKENS_PER_DOC=8
    assert reranker.calls[-1].windows is True
    windows = {x["index"]: x["window"] for x in r.json()["results"]}
    assert windows == {  # the fake reads documents whole: one window each, in characters of the document
        0: {"index": 0, "count": 1, "start": 0, "end": len(LONG_DOC)},
        1: {"index": 0, "count": 1, "start": 0, "end": 3},
    }
    assert r.json()["usage"]["total_tokens"] == 2 * 1 + 11 + 1  # the query per document, each one whole


def test_api_max_input_chars_still_bounds_a_windowed_document(ingest_settings: IngestSettings) -> None:
    with harness.client(ingest_settings, FakeReranker(), max_input_chars=20) as (client, _):
        body = {"query": "nine", "documents": [LONG_DOC], "long_documents": "windows"}
        r = client.post("/v1/rerank", json=body, headers=AUTH)
    assert r.status_code == 422 and "API_MAX_INPUT_CHARS" in r.json()["error"]["message"]


def test_rerank_long_documents_sets_the_default(
    ingest_settings: IngestSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RERANK_LONG_DOCUMENTS", "windows")
    reranker = FakeReranker()
    with harness.client(ingest_settings, reranker, max_tokens_per_doc=8) as (client, _):
        default = client.post("/v1/rerank", json={"query": "x", "documents": [LONG_DOC]}, headers=AUTH)
        assert reranker.calls[-1].documents == [LONG_DOC] and "window" in default.json()["results"][0]
        for asked in ({"long_documents": "truncate"}, {"max_tokens_per_doc": 8}):  # each asks for a cut
            r = client.post("/v1/rerank", json={"query": "x", "documents": [LONG_DOC], **asked}, headers=AUTH)
            assert reranker.calls[-1].documents == ["one two three four five six seven eight"]
            assert reranker.calls[-1].windows is False and "window" not in r.json()["results"][0]
        client.post("/rerank", json={"query": "x", "texts": [LONG_DOC]}, headers=AUTH)
        assert reranker.calls[-1].documents == ["one two three four five six seven eight"]  # TEI: truncate


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1/rerank", {"query": "x", "documents": ["d"] * 6}, 413, "API_MAX_RERANK_DOCUMENTS"),
        ("/rerank", {"query": "x", "texts": ["d"] * 6}, 413, "the limit is 5"),
        ("/v1/rerank", {"query": "", "documents": ["d"]}, 422, "query"),
        ("/v1/rerank", {"query": "  ", "documents": ["d"]}, 422, "query"),
        ("/v1/rerank", {"query": "x", "documents": []}, 422, "documents"),
        ("/v1/rerank", {"query": "x"}, 422, "documents"),
        ("/v1/rerank", {"query": "x", "documents": ["d"], "top_n": 0}, 422, "top_n"),
        ("/v1/rerank", {"query": "x", "documents": ["d"], "long_documents": "chunks"}, 422, "long_documents"),
        (
            "/v1/rerank",
            {"query": "x", "documents": ["d"], "long_documents": "windows", "max_tokens_per_doc": 4},
            422,
            "leave out max_tokens_per_doc",
        ),
        ("/rerank", {"query": "x", "texts": []}, 422, "texts"),
        ("/v1/embeddings", {"input": ["a"] * 5}, 413, "API_MAX_EMBEDDING_INPUTS"),
        ("/v1/embeddings", {"input": ""}, 422, "input"),
        ("/v1/embeddings", {"input": []}, 422, "input"),
        ("/v1/embeddings", {"input": "a", "encoding_format": "int8"}, 422, "encoding_format"),
        ("/v1/embeddings", {"input": "a", "dimensions": 65}, 422, "dimensions"),
        ("/v1/embeddings", {"input": "a " * 65, "truncate": False}, 413, "RETRIEVAL_EMBEDDER_MAX_TOKENS"),
        ("/v1/similarity", {"inputs": {"source_sentence": "a", "sentences": []}}, 422, "sentences"),
        ("/v1/similarity", {"inputs": {"source_sentence": "a", "sentences": ["b"] * 4}}, 413, "limit is 4"),
    ],
)
def test_caps_and_bad_input(client: TestClient, path: str, body: dict, status: int, fragment: str) -> None:
    r = client.post(path, json=body, headers=AUTH)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"]


def test_compat_routes_need_a_key(client: TestClient) -> None:
    assert client.post("/v1/rerank", json={"query": "x", "documents": ["d"]}).status_code == 401
    assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 401


def test_body_over_the_limit_is_413(ingest_settings: IngestSettings) -> None:
    with harness.client(ingest_settings, FakeReranker(), max_request_bytes=1000) as (client, _):
        r = client.post("/v1/rerank", json={"query": "x", "documents": ["d" * 2000]}, headers=AUTH)
    assert r.status_code == 413 and "1000" in r.json()["error"]["message"]


def test_full_queue_is_429_with_retry_after(ingest_settings: IngestSettings) -> None:
    with harness.client(
        ingest_settings, FakeReranker(), inference_concurrency=1, inference_queue=0, retry_after_s=3
    ) as (client, _):
        serving = client.app_state["serving"]
        with serving.queue.slot():  # the one slot is busy and nothing may wait
            r = client.post("/v1/rerank", json={"query": "x", "documents": ["d"]}, headers=AUTH)
            e = client.post("/v1/embeddings", json={"input": "x"}, headers=AUTH)
        assert (
            client.post("/v1/rerank", json={"query": "x", "documents": ["d"]}, headers=AUTH).status_code
            == 200
        )
    assert (
        r.status_code == 429
        and r.headers["Retry-After"] == "3"
        and "queue is full" in r.json()["error"]["message"]
    )
    assert e.status_code == 429


def test_not_started_is_503(ingest_settings: IngestSettings) -> None:
    from api.app import create_app

    app = create_app(harness.settings(ingest_settings))  # and no lifespan: nothing built yet
    r = TestClient(app).post("/v1/rerank", json={"query": "x", "documents": ["d"]}, headers=AUTH)
    assert r.status_code == 503 and r.headers["Retry-After"] == "1"


def test_rerank_without_a_rerank_model_is_503(ingest_settings: IngestSettings) -> None:
    with harness.client(ingest_settings, None) as (client, _):  # RERANK_BACKEND=none
        r = client.post("/v1/rerank", json={"query": "x", "documents": ["d"]}, headers=AUTH)
    assert r.status_code == 503 and "RERANK_BACKEND" in r.json()["error"]["message"]
    assert "Retry-After" not in r.headers  # permanent until configured


# -- embeddings and similarity -----------------------------------------------------------------------------
def test_embeddings_float_and_base64(parts: tuple[TestClient, Resources]) -> None:
    client, res = parts
    r = client.post("/v1/embeddings", json={"input": ["honey bees", "tides"], "model": "m"}, headers=AUTH)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["object"] == "list" and out["model"] == "test:hash-bow:64"
    assert [(d["object"], d["index"]) for d in out["data"]] == [("embedding", 0), ("embedding", 1)]
    expected = res.models.current().embedder.embed_documents(["honey bees", "tides"])
    assert np.allclose(out["data"][0]["embedding"], expected[0])
    assert out["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    b64 = client.post(
        "/v1/embeddings", json={"input": "honey bees", "encoding_format": "base64"}, headers=AUTH
    )
    vector = np.frombuffer(base64.b64decode(b64.json()["data"][0]["embedding"]), dtype="<f4")
    assert vector.shape == (64,) and np.allclose(vector, expected[0])


def test_embeddings_dimensions_and_long_input(client: TestClient) -> None:
    out = client.post(
        "/v1/embeddings", json={"input": "honey bees dance", "dimensions": 8}, headers=AUTH
    ).json()
    vector = np.array(out["data"][0]["embedding"])
    assert vector.shape == (8,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    long = client.post("/v1/embeddings", json={"input": "a " * 100}, headers=AUTH).json()
    assert long["usage"]["prompt_tokens"] == 64  # counted up to the model's limit, then cut


def test_similarity_is_the_cosine_of_the_embedder(parts: tuple[TestClient, Resources]) -> None:
    client, res = parts
    sentences = ["honey bees dance", "tides and the moon", "honey bees"]
    body = {"inputs": {"source_sentence": "honey bees dance", "sentences": sentences}}
    scores = client.post("/v1/similarity", json=body, headers=AUTH).json()
    vectors = res.models.current().embedder.embed_documents(["honey bees dance", *sentences])
    assert scores == pytest.approx(list(vectors[1:] @ vectors[0]), abs=1e-6)
    assert scores[0] == pytest.approx(1.0) and scores[1] < scores[2]
