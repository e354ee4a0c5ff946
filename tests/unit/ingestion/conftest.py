from __future__ import annotations

import pytest

from retrieval.memory_store import InMemoryStore
from tests.support.fakes import HashEmbedder


@pytest.fixture
def store(embedder: HashEmbedder) -> InMemoryStore:
    """The serving index's store, its collection ensured (as the worker and the API do once, at first use)."""
    store = InMemoryStore()
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    return store
