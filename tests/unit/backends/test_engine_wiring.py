"""The inference engine in the product: the factories that choose it, and the two contracts it must keep.

The engine runs here on CPU (fp32, eager) behind ``make_reranker`` (``RERANK_BACKEND=qwen3-engine``; plain
``qwen3`` picks it on a "cuda" device) and ``api.models.build_embedder`` (``RETRIEVAL_EMBEDDER=qwen3-engine``;
plain ``qwen3`` on a "cuda" device). Building is cheap and loads nothing, so the GPU choice is checked on a
machine without one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import tests.unit.backends.test_embedder_contract as embedder_contract
import tests.unit.backends.test_reranker_contract as reranker_contract
from api.models import LoadErrorsAsModelLoad, build_embedder, uses_engine
from reranking.backends.engine_adapters import EngineEmbedder, EngineReranker
from reranking.backends.qwen3 import Qwen3Reranker
from reranking.reranker import make_reranker
from reranking.settings import RerankSettings
from retrieval import ModelLoadError, RetrievalSettings


@pytest.fixture(scope="module")
def engine_reranker(tiny_qwen3_reranker_dir: Path) -> Iterator[EngineReranker]:
    reranker = make_reranker(RerankSettings(backend="qwen3-engine", model=str(tiny_qwen3_reranker_dir)))
    assert isinstance(reranker, EngineReranker)
    reranker.warm_up()
    yield reranker
    reranker.engine.close()


@pytest.fixture(scope="module")
def engine_embedder(tiny_qwen3_embedding_dir: Path) -> Iterator[LoadErrorsAsModelLoad]:
    embedder = build_embedder(
        RetrievalSettings(embedder="qwen3-engine", embedder_model=str(tiny_qwen3_embedding_dir))
    )
    assert isinstance(embedder, LoadErrorsAsModelLoad)
    embedder.warm_up()
    yield embedder
    embedder.inner.engine.close()


class TestEngineRerankerContract(reranker_contract.TestRerankerContract):
    @pytest.fixture
    def reranker(self, engine_reranker: EngineReranker) -> EngineReranker:
        return engine_reranker


class TestEngineEmbedderContract(embedder_contract.TestEmbedderContract):
    @pytest.fixture
    def embedder(self, engine_embedder: LoadErrorsAsModelLoad) -> LoadErrorsAsModelLoad:
        return engine_embedder


class TestFactories:
    def test_qwen3_reranker_on_a_gpu_is_the_engine_under_the_same_name(
        self, tiny_qwen3_reranker_dir: Path
    ) -> None:
        model = str(tiny_qwen3_reranker_dir)
        on_gpu = make_reranker(RerankSettings(backend="qwen3", model=model, device="cuda:0"))
        on_cpu = make_reranker(RerankSettings(backend="qwen3", model=model, device="cpu"))
        forced = make_reranker(RerankSettings(backend="qwen3-transformers", model=model, device="cuda"))
        assert isinstance(on_gpu, EngineReranker)
        assert isinstance(on_cpu, Qwen3Reranker) and isinstance(forced, Qwen3Reranker)
        assert on_gpu.name == on_cpu.name  # scores and caches are comparable across the two

    def test_engine_reranker_ranks_as_qwen3_reranker(
        self, engine_reranker: EngineReranker, qwen3_reranker
    ) -> None:
        query, docs = reranker_contract.QUERY, reranker_contract.DOCS
        got, want = engine_reranker.rank(query, docs), qwen3_reranker.rank(query, docs)
        assert [h.index for h in got] == [h.index for h in want]
        np.testing.assert_allclose([h.score for h in got], [h.score for h in want], atol=1e-4)

    def test_build_embedder_picks_the_engine_for_qwen3_on_a_gpu(self) -> None:
        assert uses_engine(RetrievalSettings(embedder="qwen3", embedder_device="cuda"))
        assert uses_engine(RetrievalSettings(embedder="qwen3-engine"))
        assert not uses_engine(RetrievalSettings(embedder="qwen3", embedder_device="cpu"))
        assert not uses_engine(RetrievalSettings(embedder="minilm", embedder_device="cuda"))
        built = build_embedder(
            RetrievalSettings(embedder="qwen3", embedder_device="cuda", embedder_dimension=32)
        )
        assert isinstance(built, LoadErrorsAsModelLoad) and isinstance(built.inner, EngineEmbedder)

    def test_engine_embeddings_equal_qwen3_embedder(self, engine_embedder, qwen3_embedder) -> None:
        texts = embedder_contract.TEXTS
        assert engine_embedder.name == qwen3_embedder.name  # a collection built by one serves the other
        np.testing.assert_allclose(
            engine_embedder.embed_documents(texts), qwen3_embedder.embed_documents(texts), atol=1e-4
        )

    def test_engine_embedder_load_errors_are_model_load_errors(self, tmp_path: Path) -> None:
        embedder = build_embedder(
            RetrievalSettings(embedder="qwen3-engine", embedder_model=str(tmp_path / "none"))
        )
        with pytest.raises(ModelLoadError, match="RETRIEVAL_EMBEDDER_MODEL"):
            embedder.warm_up()
        with pytest.raises(ModelLoadError):
            embedder.embed_queries(["anything"])

    def test_many_documents_in_one_call(self, engine_embedder, qwen3_embedder) -> None:
        """A GPU worker embeds a whole document's chunks in one call: the engine slices it by its queue."""
        engine = engine_embedder.inner.engine
        texts = [f"passage {i}: " + "honey bees dance " * (i % 7 + 1) for i in range(40)]
        limit = engine.max_queued_tokens
        engine.max_queued_tokens = 64  # slices of 16 tokens: many slices, two in flight
        try:
            got = engine_embedder.embed_documents(texts)
        finally:
            engine.max_queued_tokens = limit
        np.testing.assert_allclose(got, qwen3_embedder.embed_documents(texts), atol=1e-4)

    def test_worker_builds_its_embedder_with_the_given_factory(self) -> None:
        from ingestion.worker import make_celery
        from tests.unit.fakes import HashEmbedder

        built: list[RetrievalSettings] = []

        def factory(settings: RetrievalSettings) -> HashEmbedder:
            built.append(settings)
            return HashEmbedder()

        retrieval = RetrievalSettings(milvus_uri="memory://", embedder="qwen3", embedder_device="cuda")
        celery = make_celery(retrieval=retrieval, embedder_factory=factory)
        assert built == []  # nothing loads until a worker process asks
        assert isinstance(celery.conf.sieve_resources.embedder, HashEmbedder)
        assert built == [retrieval]
