"""What requests read: one frozen snapshot of the serving models behind one registry.

A ``ModelSnapshot`` holds the models and what is bound to them (the rerank settings they were built from, the
runtime rerank gate with the reranker's identity, the serving index). Nothing in it changes: a reload or an
index switch (``api.hotswap``) builds a new snapshot and ``publish``es it in one assignment. A request reads
``current()`` once (``ModelsDep``), so a request in flight finishes on the models it started with.

The rerank server publishes a snapshot without embedder, store, gate or index: it serves no search.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from api.errors import ApiError
from api.rerank_gate import RerankGate
from ingestion.indexes import IndexSpec
from reranking import Reranker, RerankSettings
from retrieval import Embedder, VectorStore


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    reranker: Reranker
    rerank: RerankSettings  # what the reranker was built from (RERANK_*, with a reload's overrides)
    embedder: Embedder | None = None  # the serving index's query embedder (None: the rerank server)
    store: VectorStore | None = None  # the serving index's collection
    gate: RerankGate | None = None  # bound to this reranker's identity
    index: IndexSpec | None = None  # the serving index

    def replace(self, **changes: Any) -> ModelSnapshot:
        return dataclasses.replace(self, **changes)

    def search_models(self) -> tuple[Embedder, VectorStore, RerankGate]:
        """The embedder, the store and the gate a search needs; 404 in a process that serves no search."""
        if self.embedder is None or self.store is None or self.gate is None:
            raise ApiError(404, "this service serves no search")
        return self.embedder, self.store, self.gate


class ModelRegistry:
    """The one reference to the serving snapshot: ``current()`` to read, ``publish()`` to replace."""

    def __init__(self, snapshot: ModelSnapshot) -> None:
        self._current = snapshot

    def current(self) -> ModelSnapshot:
        return self._current

    def publish(self, snapshot: ModelSnapshot) -> None:
        self._current = snapshot  # one assignment: a reader sees all old or all new
