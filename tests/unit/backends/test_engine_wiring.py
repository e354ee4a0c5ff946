"""The inference engine in the product: the factories that choose it, and the two contracts it must keep.

The engine runs here on CPU (fp32, eager) behind ``reranking.backends.make_reranker``
(``RERANK_BACKEND=qwen3-engine``; plain ``qwen3`` picks it on a "cuda" device) and
``retrieval.backends.make_embedder`` (``RETRIEVAL_EMBEDDER=qwen3-engine``; plain ``qwen3`` on a "cuda"
device). Building is cheap and loads nothing, so the GPU choice is checked on a machine without one. The
adapters turn the engine's errors into their stage's (overloaded 429, unavailable 503 in ``api.errors``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import tests.unit.backends.test_embedder_contract as embedder_contract
import tests.unit.backends.test_reranker_contract as reranker_contract
from engine.errors import EngineInputError, EngineOverloadedError, EngineUnavailableError
from reranking import RerankOverloadedError, RerankUnavailableError
from reranking.backends import make_reranker
from reranking.backends.qwen3 import Qwen3Reranker
from reranking.backends.qwen3_engine import EngineReranker
from reranking.errors import RerankInputError
from reranking.settings import RerankSettings
from retrieval import (
    EmbedderInputError,
    EmbedderOverloadedError,
    EmbedderUnavailableError,
    ModelLoadError,
    RetrievalSettings,
)
from retrieval.backends import make_embedder
from retrieval.backends.qwen3 import Qwen3Embedder
from retrieval.backends.qwen3_engine import EngineEmbedder


@pytest.fixture(scope="module")
def engine_reranker(tiny_qwen3_reranker_dir: Path) -> Iterator[EngineReranker]:
    reranker = make_reranker(RerankSettings(backend="qwen3-engine", model=str(tiny_qwen3_reranker_dir)))
    assert isinstance(reranker, EngineReranker)
    reranker.warm_up()
    yield reranker
    reranker.engine.close()


@pytest.fixture(scope="module")
def engine_embedder(tiny_qwen3_embedding_dir: Path) -> Iterator[EngineEmbedder]:
    embedder = make_embedder(
        RetrievalSettings(embedder="qwen3-engine", embedder_model=str(tiny_qwen3_embedding_dir))
    )
    assert isinstance(embedder, EngineEmbedder)
    embedder.warm_up()
    yield embedder
    embedder.engine.close()


class TestEngineRerankerContract(reranker_contract.TestRerankerContract):
    @pytest.fixture
    def reranker(self, engine_reranker: EngineReranker) -> EngineReranker:
        return engine_reranker


class TestEngineEmbedderContract(embedder_contract.TestEmbedderContract):
    @pytest.fixture
    def embedder(self, engine_embedder: EngineEmbedder) -> EngineEmbedder:
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

    def test_make_embedder_picks_the_engine_for_qwen3_on_a_gpu(self, tiny_qwen3_embedding_dir: Path) -> None:
        model = str(tiny_qwen3_embedding_dir)

        def built(kind: str, device: str) -> object:
            return make_embedder(
                RetrievalSettings(embedder=kind, embedder_model=model, embedder_device=device)
            )

        assert isinstance(built("qwen3", "cuda"), EngineEmbedder)
        assert isinstance(built("qwen3", "cuda:1"), EngineEmbedder)
        assert isinstance(built("qwen3-engine", "cpu"), EngineEmbedder)
        assert isinstance(built("qwen3", "cpu"), Qwen3Embedder)
        assert not isinstance(built("minilm", "cuda"), EngineEmbedder)

    def test_engine_embeddings_equal_qwen3_embedder(self, engine_embedder, qwen3_embedder) -> None:
        texts = embedder_contract.TEXTS
        assert engine_embedder.name == qwen3_embedder.name  # a collection built by one serves the other
        np.testing.assert_allclose(
            engine_embedder.embed_documents(texts), qwen3_embedder.embed_documents(texts), atol=1e-4
        )

    def test_engine_embedder_load_errors_are_model_load_errors(self, tmp_path: Path) -> None:
        embedder = make_embedder(
            RetrievalSettings(embedder="qwen3-engine", embedder_model=str(tmp_path / "none"))
        )
        with pytest.raises(ModelLoadError, match="RETRIEVAL_EMBEDDER_MODEL"):
            embedder.warm_up()
        with pytest.raises(ModelLoadError):
            embedder.embed_queries(["anything"])

    def test_many_documents_in_one_call(self, engine_embedder, qwen3_embedder) -> None:
        """A GPU worker embeds a whole document's chunks in one call: the engine slices it by its queue."""
        engine = engine_embedder.engine
        texts = [f"passage {i}: " + "honey bees dance " * (i % 7 + 1) for i in range(40)]
        limit = engine.max_queued_tokens
        engine.max_queued_tokens = 64  # slices of 16 tokens: many slices, two in flight
        try:
            got = engine_embedder.embed_documents(texts)
        finally:
            engine.max_queued_tokens = limit
        np.testing.assert_allclose(got, qwen3_embedder.embed_documents(texts), atol=1e-4)

    @pytest.mark.parametrize(
        ("raised", "as_rerank", "as_retrieval", "status"),
        [
            (EngineOverloadedError, RerankOverloadedError, EmbedderOverloadedError, 429),
            (EngineUnavailableError, RerankUnavailableError, EmbedderUnavailableError, 503),
            (EngineInputError, RerankInputError, EmbedderInputError, 400),
        ],
    )
    def test_engine_errors_become_the_stages_errors(
        self,
        engine_reranker,
        engine_embedder,
        monkeypatch: pytest.MonkeyPatch,
        raised,
        as_rerank,
        as_retrieval,
        status: int,
    ) -> None:
        """Each stage's own error, with the HTTP status the API gave the engine's errors before the split."""
        from api.errors import status_for

        def refuse(*args: object, **kwargs: object) -> None:
            raise raised("refused")

        monkeypatch.setattr(engine_reranker.engine, "run", refuse)
        monkeypatch.setattr(engine_embedder.engine, "run_many", refuse)
        with pytest.raises(as_rerank, match="refused") as reranked:
            engine_reranker.rank(reranker_contract.QUERY, reranker_contract.DOCS)
        with pytest.raises(as_retrieval, match="refused") as embedded:
            engine_embedder.embed_documents(["honey bees"])
        assert status_for(reranked.value) == status_for(embedded.value) == status
