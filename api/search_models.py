"""The bodies of ``POST /v1/search``: the request, the hits, the response (``cached`` included)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from api.rerank_gate import GateInfo


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, description="The question or keywords (at most API_MAX_QUERY_CHARS).")
    top_k: int | None = Field(None, ge=1, le=100, description="Hits returned (default: API_DEFAULT_TOP_K).")
    candidates: int | None = Field(
        None,
        ge=1,
        description="Stage-1 candidates handed to the reranker (default: API_DEFAULT_CANDIDATES, at most "
        "API_MAX_CANDIDATES).",
    )
    filters: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Exact matches on document metadata; the key document_id matches the document id.",
    )
    instruction: str | None = Field(None, max_length=2000, description="Task instruction (Qwen3 models).")
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(
        None,
        description="Stage 1: dense vectors, BM25 full text, or both fused (default: the tenant's stage-1 "
        "configuration learned by `sieve eval --gate`, else RETRIEVAL_SEARCH_MODE).",
    )
    fusion: Literal["zscore", "rrf", "weighted"] | None = Field(
        None,
        description="How hybrid fuses its two lists (default: as learned for the tenant, else "
        "RETRIEVAL_FUSION); naming it, like naming mode, sets the learned configuration aside.",
    )

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
    dense_score: float | None = Field(
        None, description="Cosine similarity to the query, where stage 1 found the chunk by its vector."
    )
    rerank_score: float | None
    score: float
    stage1_rank: int | None = Field(
        None, description="1-based rank of the hit among the stage-1 candidates (before the rerank stage)."
    )


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
    mode: str = Field("dense", description="The stage-1 mode that ran.")
    fusion: str | None = Field(
        None,
        description="How and why stage 1 ran otherwise than RETRIEVAL_SEARCH_MODE or the request asked: "
        "the tenant's stage-1 configuration learned by `sieve eval --gate` (for a request naming neither "
        "mode nor fusion), or the dense leg of hybrid given weight 0 because the query's language is not "
        "one the embedder reads (absent otherwise).",
    )
    stage1_fusion: str | None = Field(
        None,
        description="How hybrid fused its dense and bm25 legs into `stage1_score`: zscore (standardised "
        "scores added), rrf (reciprocal ranks) or weighted (min-max scaled scores); absent when stage 1 ran "
        "one leg.",
    )
    degraded: bool = Field(False, description="True: the rerank stage failed or missed its deadline.")
    degraded_reason: str | None = None
    gate: GateInfo | None = Field(
        None, description="The rerank gate's verdict for this tenant (absent when no reranker is configured)."
    )


class SearchResult(SearchResponse):
    cached: bool = Field(
        False,
        description="Served from the cache: computed earlier for the same tenant, index version, normalised "
        "query, parameters and models. ``timings_ms`` then holds the cache lookup only.",
    )
