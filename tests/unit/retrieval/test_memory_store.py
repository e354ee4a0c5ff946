"""The ``VectorStore`` contract on ``InMemoryStore`` (fast tier)."""

from __future__ import annotations

import pytest

from retrieval.backends import make_store
from retrieval.memory_store import InMemoryStore
from retrieval.settings import RetrievalSettings
from retrieval.store import VectorStore
from tests.contract.vector_store import VectorStoreContract


class TestInMemoryStore(VectorStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryStore:
        return InMemoryStore()


def test_memory_uri_makes_an_in_memory_store() -> None:
    store = make_store(RetrievalSettings(milvus_uri="memory://"))
    assert isinstance(store, InMemoryStore)
    assert isinstance(store, VectorStore)
