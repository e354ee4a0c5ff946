"""The behaviour every ``Embedder`` shows, run against each implementation.

Subclass ``EmbedderContract`` in a ``test_*.py`` module and supply an ``embedder`` fixture (warmed or not):
the fast tier runs it on the tiny and bundled models and on the test fake (``tests.support.fakes``), so the
fake cannot drift from the real ones.
"""

from __future__ import annotations

import numpy as np

from retrieval.embedder import Embedder

TEXTS = ["The capital of France is Paris.", "", "北京是中国的首都。", "def f(x):\n    return x", "word " * 50]


class EmbedderContract:
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
