"""Search: embed the query, stage 1 from the vector store, keep only served versions, stage 2, top k."""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, Field, field_validator

from ingestion.records import Records
from reranking import Reranker
from retrieval import Candidate, Embedder, VectorStore
from retrieval.store import validate_filters


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, description="The question or keywords.")
    top_k: int = Field(5, ge=1, le=100)
    candidates: int = Field(50, ge=1, le=500, description="Stage-1 candidates handed to the reranker.")
    filters: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Exact matches on document metadata; the key document_id matches the document id.",
    )
    instruction: str | None = Field(None, max_length=2000, description="Task instruction (Qwen3 models).")

    @field_validator("query")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("query must contain non-whitespace text")
        return value


class Hit(BaseModel):
    chunk_id: str
    document_id: str
    version: str
    text: str
    page: int | None
    position: int
    metadata: dict[str, Any]
    stage1_score: float
    rerank_score: float | None
    score: float


class RerankInfo(BaseModel):
    backend: str
    applied: bool
    note: str = ""


class SearchResponse(BaseModel):
    query: str
    hits: list[Hit]
    candidates: int
    rerank: RerankInfo
    timings_ms: dict[str, float]


class SearchService:
    def __init__(
        self,
        *,
        embedder: Embedder,
        store: VectorStore,
        records: Records,
        reranker: Reranker,
        stale_slack: int = 20,
    ) -> None:
        self.embedder = embedder
        self.store = store
        self.records = records
        self.reranker = reranker
        self.stale_slack = stale_slack

    def served(self, tenant: str, candidates: list[Candidate]) -> list[Candidate]:
        """Drop chunks of versions that are not (or no longer) served: in flight, superseded, deleted."""
        active = self.records.active_versions(tenant, (c.document_id for c in candidates))
        return [c for c in candidates if active.get(c.document_id) == c.version]

    def search(self, tenant: str, request: SearchRequest) -> SearchResponse:
        timings: dict[str, float] = {}
        start = clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = round((now - clock) * 1000, 3)
            clock = now

        filters = validate_filters(request.filters)
        vector = self.embedder.embed_queries([request.query], instruction=request.instruction)[0]
        lap("embed")
        found = self.store.search(tenant, vector, limit=request.candidates + self.stale_slack, filters=filters)
        lap("stage1")
        candidates = self.served(tenant, found)[: request.candidates]
        lap("filter")
        ranked = self.reranker.rank(
            request.query, [c.text for c in candidates], top_k=request.top_k, instruction=request.instruction
        )
        lap("rerank")
        applied = self.reranker.reorders
        hits = [
            Hit(
                chunk_id=c.id,
                document_id=c.document_id,
                version=c.version,
                text=c.text,
                page=c.page,
                position=c.position,
                metadata=c.metadata,
                stage1_score=c.score,
                rerank_score=r.score if applied else None,
                score=r.score if applied else c.score,
            )
            for r in ranked
            for c in (candidates[r.index],)
        ]
        timings["total"] = round((time.perf_counter() - start) * 1000, 3)
        note = "" if applied else "no rerank stage configured: results are in stage-1 (vector) order"
        return SearchResponse(
            query=request.query,
            hits=hits,
            candidates=len(candidates),
            rerank=RerankInfo(backend=self.reranker.name, applied=applied, note=note),
            timings_ms=timings,
        )
