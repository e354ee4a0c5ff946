"""The inference engine behind ``retrieval.backends.make_embedder`` (``RETRIEVAL_EMBEDDER=qwen3-engine``;
plain ``qwen3`` on a "cuda" device): the factory's choice, the ``Embedder`` contract, equality with the
transformers backend, load errors, long inputs sliced by the engine's queue, and the engine's errors as the
stage's own. The engine runs here on CPU (fp32, eager). The reranker side:
``tests/unit/reranking/backends/test_qwen3_engine.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineInputError, EngineOverloadedError, EngineUnavailableError
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
from tests.contract.embedder import TEXTS, EmbedderContract


@pytest.fixture(scope="module")
def engine_embedder(tiny_qwen3_embedding_dir: Path) -> Iterator[EngineEmbedder]:
    embedder = make_embedder(
        RetrievalSettings(embedder="qwen3-engine", embedder_model=str(tiny_qwen3_embedding_dir))
    )
    assert isinstance(embedder, EngineEmbedder)
    embedder.warm_up()
    yield embedder
    embedder.engine.close()


class TestEngineEmbedderContract(EmbedderContract):
    @pytest.fixture
    def embedder(self, engine_embedder: EngineEmbedder) -> EngineEmbedder:
        return engine_embedder


def test_make_embedder_picks_the_engine_for_qwen3_on_a_gpu(tiny_qwen3_embedding_dir: Path) -> None:
    model = str(tiny_qwen3_embedding_dir)

    def built(kind: str, device: str) -> object:
        return make_embedder(RetrievalSettings(embedder=kind, embedder_model=model, embedder_device=device))

    assert isinstance(built("qwen3", "cuda"), EngineEmbedder)
    assert isinstance(built("qwen3", "cuda:1"), EngineEmbedder)
    assert isinstance(built("qwen3-engine", "cpu"), EngineEmbedder)
    assert isinstance(built("qwen3", "cpu"), Qwen3Embedder)
    assert not isinstance(built("minilm", "cuda"), EngineEmbedder)


def test_engine_embeddings_equal_qwen3_embedder(engine_embedder: EngineEmbedder, qwen3_embedder) -> None:
    assert engine_embedder.name == qwen3_embedder.name  # a collection built by one serves the other
    np.testing.assert_allclose(
        engine_embedder.embed_documents(TEXTS), qwen3_embedder.embed_documents(TEXTS), atol=1e-4
    )


def test_the_backend_encoding_is_the_wrappers_cut_at_max_tokens(engine_embedder: EngineEmbedder) -> None:
    """``_encode`` calls the Rust tokenizer directly: the ids of the transformers wrapper with its
    truncation, over-long, non-ASCII and empty texts included."""
    texts = [*TEXTS, "naïve café — 東京の研究 🙂 x" * 2000, "", " leading and  double  spaces "]
    limit, backend = engine_embedder.max_tokens, engine_embedder._tokenizer.backend_tokenizer
    assert backend.truncation is None  # the fast path is taken (the wrapper below leaves its truncation set)
    got = engine_embedder._encode(texts)
    try:
        wrapper = engine_embedder._tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=limit
        )
        assert got == [list(ids) for ids in wrapper["input_ids"]]
        assert max(map(len, got)) == limit  # the long text was cut
        assert engine_embedder._encode(texts) == got  # the wrapper's path, now that truncation is set
    finally:
        backend.no_truncation()  # the shared fixture's tokenizer as it was


def test_engine_embedder_load_errors_are_model_load_errors(tmp_path: Path) -> None:
    embedder = make_embedder(
        RetrievalSettings(embedder="qwen3-engine", embedder_model=str(tmp_path / "none"))
    )
    with pytest.raises(ModelLoadError, match="RETRIEVAL_EMBEDDER_MODEL"):
        embedder.warm_up()
    with pytest.raises(ModelLoadError):
        embedder.embed_queries(["anything"])


def test_many_documents_in_one_call(engine_embedder: EngineEmbedder, qwen3_embedder) -> None:
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
    ("raised", "expected", "status"),
    [
        (EngineOverloadedError, EmbedderOverloadedError, 429),
        (EngineUnavailableError, EmbedderUnavailableError, 503),
        (EngineInputError, EmbedderInputError, 400),
    ],
)
def test_engine_errors_become_the_stages_errors(
    engine_embedder: EngineEmbedder, monkeypatch: pytest.MonkeyPatch, raised, expected, status: int
) -> None:
    """The stage's own error, with the HTTP status the API gave the engine's errors before the split."""
    from api.errors import status_for

    def refuse(*args: object, **kwargs: object) -> None:
        raise raised("refused")

    monkeypatch.setattr(engine_embedder.engine, "run_many", refuse)
    with pytest.raises(expected, match="refused") as embedded:
        engine_embedder.embed_documents(["honey bees"])
    assert status_for(embedded.value) == status
