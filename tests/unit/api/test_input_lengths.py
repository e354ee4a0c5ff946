"""Text lengths are bounded before anything runs: a query over API_MAX_QUERY_CHARS (search in every mode, the
rerank routes) and a document or input over API_MAX_INPUT_CHARS (rerank, embeddings, similarity) are 422
naming the field, and neither the store nor a model is called."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.resources import Resources
from ingestion.settings import IngestSettings
from tests.support import compat_harness as harness
from tests.support.compat_harness import AUTH
from tests.support.fakes import FakeReranker

QUERY_CAP = 50
INPUT_CAP = 80
LONG_QUERY = "bees " * 11  # 55 characters
LONG_TEXT = "honey " * 14  # 84 characters


class Calls:
    def __init__(self) -> None:
        self.made: list[str] = []

    def spy(self, name: str, real: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self.made.append(name)
            return real(*args, **kwargs)

        return call


@pytest.fixture
def api(
    ingest_settings: IngestSettings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[TestClient, Calls]]:
    reranker = FakeReranker()
    with harness.client(
        ingest_settings, reranker, max_query_chars=QUERY_CAP, max_input_chars=INPUT_CAP
    ) as parts:
        client, res = parts
        harness.index(res, "t1", {"bees.txt": "Honey bees dance to show where flowers grow."})
        calls = Calls()
        spy_on(res, reranker, calls, monkeypatch)
        yield client, calls


def spy_on(res: Resources, reranker: FakeReranker, calls: Calls, monkeypatch: pytest.MonkeyPatch) -> None:
    models = res.models.current()
    assert models.store is not None and models.embedder is not None
    for obj, name in (
        (models.store, "search"),
        (models.embedder, "embed_queries"),
        (models.embedder, "embed_documents"),
        (models.embedder, "count_tokens"),
        (reranker, "rank"),
    ):
        monkeypatch.setattr(obj, name, calls.spy(name, getattr(obj, name)))


def problem_fields(r: Any) -> list[str]:
    return [p["field"] for p in r.json()["error"]["problems"]]


@pytest.mark.parametrize("mode", [None, "dense", "bm25", "hybrid"])
def test_a_long_search_query_is_422_in_every_mode(api: tuple[TestClient, Calls], mode: str | None) -> None:
    client, calls = api
    body: dict[str, Any] = {"query": LONG_QUERY} | ({"mode": mode} if mode else {})
    r = client.post("/v1/search", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert problem_fields(r) == ["query"] and "API_MAX_QUERY_CHARS" in r.json()["error"]["message"]
    assert calls.made == []
    ok = client.post("/v1/search", json={**body, "query": "bees"}, headers=AUTH)
    assert ok.status_code == 200, ok.text
    assert "search" in calls.made  # the spies see the calls that do happen


@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_rerank_bounds_the_query_and_each_document(api: tuple[TestClient, Calls], path: str) -> None:
    client, calls = api
    r = client.post(path, json={"query": LONG_QUERY, "documents": ["bees"]}, headers=AUTH)
    assert r.status_code == 422 and problem_fields(r) == ["query"], r.text
    r = client.post(
        path, json={"query": "bees", "documents": ["bees", LONG_TEXT, {"text": LONG_TEXT}]}, headers=AUTH
    )
    assert r.status_code == 422, r.text
    assert problem_fields(r) == ["documents.1", "documents.2.text"]
    assert "API_MAX_INPUT_CHARS" in r.json()["error"]["message"]
    assert calls.made == []
    assert client.post(path, json={"query": "bees", "documents": ["bees"]}, headers=AUTH).status_code == 200


def test_tei_rerank_names_the_text(api: tuple[TestClient, Calls]) -> None:
    client, calls = api
    r = client.post("/rerank", json={"query": "bees", "texts": [LONG_TEXT, "bees"]}, headers=AUTH)
    assert r.status_code == 422 and problem_fields(r) == ["texts.0"], r.text
    assert calls.made == []


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"input": LONG_TEXT}, ["input"]),
        ({"input": ["bees", LONG_TEXT]}, ["input.1"]),
    ],
)
def test_embeddings_bound_each_input(api: tuple[TestClient, Calls], body: dict, fields: list[str]) -> None:
    client, calls = api
    r = client.post("/v1/embeddings", json=body, headers=AUTH)
    assert r.status_code == 422 and problem_fields(r) == fields, r.text
    assert calls.made == []


def test_similarity_bounds_every_sentence(api: tuple[TestClient, Calls]) -> None:
    client, calls = api
    body = {"inputs": {"source_sentence": LONG_TEXT, "sentences": ["bees", LONG_TEXT]}}
    r = client.post("/v1/similarity", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert problem_fields(r) == ["inputs.source_sentence", "inputs.sentences.1"]
    assert calls.made == []
