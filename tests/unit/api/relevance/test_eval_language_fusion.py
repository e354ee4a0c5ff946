"""``sieve eval`` measures hybrid as the service runs it: per-query legs (``plan_legs``) unless
``EvalOptions.language_fusion`` is off."""

from __future__ import annotations

import pytest

from api.relevance.eval_options import EvalOptions
from api.relevance.eval_probe import TENANT, probe_query
from retrieval.memory_store import InMemoryStore
from retrieval.types import Chunk
from tests.support.fakes import HashEmbedder

TEXTS = ["蜜蜂跳舞是為了告訴同伴花在哪裡。", "潮汐跟隨月亮和太陽。", "Honey bees dance where flowers grow."]
CHINESE = "蜜蜂為什麼跳舞？"


class EnglishOnly(HashEmbedder):
    languages = frozenset({"en"})


@pytest.fixture
def store() -> InMemoryStore:
    store, embedder = InMemoryStore(), EnglishOnly()
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    chunks = [
        Chunk(tenant=TENANT, document_id=f"d{i}", version="v", position=0, text=text)
        for i, text in enumerate(TEXTS)
    ]
    store.upsert(chunks, embedder.embed_documents(TEXTS))
    return store


def probe(store: InMemoryStore, *, language_fusion: bool) -> dict[str, list[str]]:
    found = probe_query(
        CHINESE,
        modes=("bm25", "hybrid"),
        rerank_modes=(),
        store=store,
        embedder=EnglishOnly(),
        reranker=None,
        options=EvalOptions(language_fusion=language_fusion),
    ).found
    return {mode: [c.id for c in chunks] for mode, chunks in found.items()}


def test_hybrid_is_bm25_for_a_query_the_embedder_cannot_read(store: InMemoryStore) -> None:
    on = probe(store, language_fusion=True)
    assert on["hybrid"] == on["bm25"]
    off = probe(store, language_fusion=False)
    assert off["hybrid"] != off["bm25"]  # RRF with the dense leg brings in chunks BM25 does not match
