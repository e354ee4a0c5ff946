"""Stage 1 of the search service follows the per-query legs (issue 16): a hybrid query in a language the
embedder does not read runs as bm25, is not embedded, and the response's ``fusion`` says why."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from api.gate_decision import Stage1
from api.search import Laps, SearchRequest, SearchService
from api.settings import ApiSettings
from reranking import NoneReranker
from retrieval.errors import UnsupportedSearchError
from retrieval.memory_store import InMemoryStore
from retrieval.types import Chunk
from tests.support.fakes import HashEmbedder

TEXTS = [
    "蜜蜂跳舞是為了告訴同伴花在哪裡。",
    "潮汐跟隨月亮和太陽。",
    "Honey bees dance to show where flowers grow.",
    "Tides follow the moon and the sun.",
]
CHINESE = "蜜蜂為什麼跳舞？"


class EnglishOnly(HashEmbedder):
    """An English-only embedder (as the bundled MiniLM declares) that records the queries it embeds."""

    languages = frozenset({"en"})

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[str] = []

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        self.queries.extend(texts)
        return super().embed_queries(texts)


class Multilingual(EnglishOnly):
    languages = frozenset({"en", "zh", "other"})


class AllServed:
    def active_versions(self, tenant: str, document_ids: Any) -> dict[str, str]:
        return {document_id: "v1" for document_id in document_ids}


@pytest.fixture
def store() -> InMemoryStore:
    store = InMemoryStore()
    embedder = HashEmbedder()
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    chunks = [
        Chunk(tenant="t", document_id=f"d{i}", version="v1", position=0, text=text)
        for i, text in enumerate(TEXTS)
    ]
    store.upsert(chunks, embedder.embed_documents(TEXTS))
    return store


def service() -> SearchService:
    return SearchService(
        records=AllServed(),  # type: ignore[arg-type]  # stage 1 only asks which versions are served
        cache=None,  # type: ignore[arg-type]  # not used by stage 1 and compose
        review=None,  # type: ignore[arg-type]
        settings=ApiSettings(),
        default_mode="hybrid",
    )


def stage1(embedder: EnglishOnly, store: InMemoryStore, query: str, **asked: Any) -> tuple[Any, ...]:
    svc = service()
    return svc.stage1(embedder, store, "t", svc.bounded(SearchRequest(query=query, **asked)), Laps())


def test_a_chinese_query_with_an_english_only_embedder_is_ranked_by_bm25_alone(store: InMemoryStore) -> None:
    embedder = EnglishOnly()
    candidates, mode, note = stage1(embedder, store, CHINESE)
    assert (mode, embedder.queries) == ("bm25", [])  # the dense leg is not run, the query not embedded
    assert note is not None and "zh" in note
    bm25 = store.search("t", None, limit=len(candidates), mode="bm25", query_text=CHINESE)
    assert [c.id for c in candidates] == [c.id for c in bm25]
    explicit = stage1(EnglishOnly(), store, CHINESE, mode="hybrid")
    assert explicit[1:] == (mode, note)


def test_an_english_query_keeps_both_legs(store: InMemoryStore) -> None:
    embedder = EnglishOnly()
    _, mode, note = stage1(embedder, store, "why do bees dance")
    assert (mode, note, embedder.queries) == ("hybrid", None, ["why do bees dance"])


def test_a_multilingual_embedder_keeps_both_legs_on_chinese(store: InMemoryStore) -> None:
    embedder = Multilingual()
    _, mode, note = stage1(embedder, store, CHINESE)
    assert (mode, note, embedder.queries) == ("hybrid", None, [CHINESE])


def test_an_explicit_dense_search_runs_dense(store: InMemoryStore) -> None:
    _, mode, note = stage1(EnglishOnly(), store, CHINESE, mode="dense")
    assert (mode, note) == ("dense", None)


def test_the_response_carries_the_note(store: InMemoryStore) -> None:
    svc = service()
    request = svc.bounded(SearchRequest(query=CHINESE))
    candidates, mode, note = svc.stage1(EnglishOnly(), store, "t", request, Laps())
    result = svc.compose(
        request, candidates, None, None, None, NoneReranker(), mode=mode, timings={}, fusion_note=note
    )
    assert (result.mode, result.fusion) == ("bm25", note)
    plain = svc.compose(request, candidates, None, None, None, NoneReranker(), mode="hybrid", timings={})
    assert plain.fusion is None


class DenseOnly(InMemoryStore):
    """A store without a full-text index (a collection from before it, a Milvus server older than 2.5)."""

    def search(self, tenant: str, vector: Any, **kwargs: Any) -> list[Any]:
        if kwargs.get("mode", "dense") != "dense":
            raise UnsupportedSearchError("no full-text index")
        return super().search(tenant, vector, **kwargs)


def test_without_full_text_the_default_falls_back_to_dense_and_embeds_then(store: InMemoryStore) -> None:
    dense_only = DenseOnly()
    dense_only.ensure_collection(embedder_name=HashEmbedder.name, dimension=HashEmbedder.dimension)
    chunks = [Chunk(tenant="t", document_id="d0", version="v1", position=0, text=TEXTS[0])]
    dense_only.upsert(chunks, HashEmbedder().embed_documents(TEXTS[:1]))
    embedder = EnglishOnly()
    candidates, mode, note = stage1(embedder, dense_only, CHINESE)
    assert (mode, note, embedder.queries, len(candidates)) == ("dense", None, [CHINESE], 1)
    with pytest.raises(UnsupportedSearchError):
        stage1(EnglishOnly(), dense_only, CHINESE, mode="hybrid")


class Recording(InMemoryStore):
    """Records the fusion arguments of each search."""

    def __init__(self, inner: InMemoryStore) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def search(self, tenant: str, vector: Any, **kwargs: Any) -> list[Any]:
        self.calls.append({k: kwargs.get(k) for k in ("mode", "fusion", "rrf_k", "weights")})
        return self.inner.search(tenant, vector, **kwargs)


LEARNED = Stage1(mode="hybrid", fusion="weighted", dense_weight=0.25, bm25_weight=0.75)


def test_a_learned_stage1_runs_with_its_fusion_and_the_legs_still_apply(store: InMemoryStore) -> None:
    recording = Recording(store)
    svc = service()
    request = svc.bounded(SearchRequest(query="why do bees dance"))
    found, mode, note = svc.stage1(EnglishOnly(), recording, "t", request, Laps(), learned=(LEARNED, "why"))
    assert recording.calls == [{"mode": "hybrid", "fusion": "weighted", "rrf_k": 60, "weights": (0.25, 0.75)}]
    expected = store.search(
        "t",
        HashEmbedder().embed_queries(["why do bees dance"])[0],
        limit=len(found),
        mode="hybrid",
        query_text="why do bees dance",
        fusion="weighted",
        weights=(0.25, 0.75),
    )
    assert (mode, note) == ("hybrid", "why") and [c.score for c in found] == [c.score for c in expected]
    _, mode, note = svc.stage1(EnglishOnly(), store, "t", svc.bounded(SearchRequest(query=CHINESE)), Laps(),
                               learned=(LEARNED, "why"))  # fmt: skip
    assert mode == "bm25" and note is not None and note.startswith("why; dense leg weight 0")
