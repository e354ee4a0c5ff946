"""Search: embed the query, stage 1 from the vector store, keep only served versions, stage 2, top k."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as DeadlineError
from functools import partial
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from api import metrics
from api.gate_decision import Fusion
from api.gate_store import GateInfo, RerankerIdentity, RerankGate
from ingestion.records import Records
from reranking import RankedHit, Reranker, RerankError, RerankOverloadedError, RerankUnavailableError
from retrieval import Candidate, Embedder, VectorStore
from retrieval.errors import UnsupportedSearchError
from retrieval.store import validate_filters

logger = logging.getLogger(__name__)


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, description="The question or keywords.")
    top_k: int = Field(5, ge=1, le=100)
    candidates: int = Field(50, ge=1, le=500, description="Stage-1 candidates handed to the reranker.")
    filters: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Exact matches on document metadata; the key document_id matches the document id.",
    )
    instruction: str | None = Field(None, max_length=2000, description="Task instruction (Qwen3 models).")
    mode: Literal["dense", "bm25", "hybrid"] | None = Field(
        None,
        description="Stage 1: dense vectors, BM25 full text, or both fused (default: RETRIEVAL_SEARCH_MODE).",
    )
    fusion: Literal["rrf", "weighted"] | None = Field(
        None, description="How hybrid fuses its two lists (default: RETRIEVAL_FUSION)."
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
    degraded: bool = Field(False, description="True: the rerank stage failed or missed its deadline.")
    degraded_reason: str | None = None
    gate: GateInfo | None = Field(
        None, description="The rerank gate's verdict for this tenant (absent when no reranker is configured)."
    )


class SearchService:
    def __init__(
        self,
        *,
        embedder: Embedder,
        store: VectorStore,
        records: Records,
        reranker: Reranker,
        stale_slack: int = 20,
        rerank_deadline_s: float = 0.0,
        default_mode: str = "dense",
        default_fusion: str = "rrf",
        gate: RerankGate | None = None,
    ) -> None:
        self.default_mode = default_mode
        self.default_fusion = default_fusion
        self.embedder = embedder
        self.store = store
        self.records = records
        self.reranker = reranker
        self.stale_slack = stale_slack
        self.rerank_deadline_s = rerank_deadline_s
        self.gate = gate or RerankGate("always", None, RerankerIdentity(reranker.name))
        # Stage 2 runs here so that a deadline can be kept; threads start on first use.
        self._rerank_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rerank")

    def close(self) -> None:
        """Stop the stage-2 threads (a call still running is not waited for)."""
        self._rerank_pool.shutdown(wait=False, cancel_futures=True)

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
            metrics.observe_stage(name, now - clock)
            clock = now

        filters = validate_filters(request.filters)
        vector = self.embedder.embed_queries([request.query], instruction=request.instruction)[0]
        lap("embed")
        found, mode = self.stage1(tenant, request, vector, filters)
        lap("stage1")
        candidates = self.served(tenant, found)[: request.candidates]
        lap("filter")
        verdict = self.gate.verdict(tenant) if self.reranker.reorders else None
        if verdict is not None and not verdict.run:  # held back by the gate: no rerank call at all
            ranked: list[RankedHit] = [
                RankedHit(i, c.score) for i, c in enumerate(candidates[: request.top_k])
            ]
            degraded = None
        else:
            ranked, degraded = self.rerank(request, candidates, fusion=verdict.fusion if verdict else None)
        lap("rerank")
        applied = self.reranker.reorders and degraded is None and (verdict is None or verdict.run)
        rerank_scores = {r.index: r.score for r in ranked}
        if applied and verdict is not None and verdict.fusion is not None:
            order = verdict.fusion.order([c.score for c in candidates], rerank_scores)[: request.top_k]
        else:
            order = [(r.index, r.score) for r in ranked]
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
                dense_score=c.dense_score,
                rerank_score=rerank_scores.get(index) if applied else None,
                score=score if applied else c.score,
            )
            for index, score in order
            for c in (candidates[index],)
        ]
        timings["total"] = round((time.perf_counter() - start) * 1000, 3)
        if applied:
            note = f"final score: {verdict.fusion.label}" if verdict and verdict.fusion else ""
        elif degraded:
            note = degraded
        elif verdict is not None:
            note = f"rerank stage off for this tenant: {verdict.info.reason}"
        else:
            note = "no rerank stage configured: results are in stage-1 order"
        return SearchResponse(
            query=request.query,
            hits=hits,
            candidates=len(candidates),
            rerank=RerankInfo(backend=self.reranker.name, applied=applied, note=note),
            timings_ms=timings,
            mode=mode,
            degraded=degraded is not None,
            degraded_reason=degraded,
            gate=verdict.info if verdict is not None else None,
        )

    def stage1(
        self, tenant: str, request: SearchRequest, vector: Any, filters: dict[str, Any]
    ) -> tuple[list[Candidate], str]:
        """Candidates in the requested mode. A mode the request asked for and the store cannot run is the
        caller's error (400); the configured default quietly falls back to dense where there is no
        full-text index (a collection from before it, or a Milvus server older than 2.5)."""
        mode = request.mode or self.default_mode
        search = partial(
            self.store.search,
            tenant,
            vector,
            limit=request.candidates + self.stale_slack,
            filters=filters,
            query_text=request.query,
            fusion=request.fusion or self.default_fusion,
        )
        try:
            return search(mode=mode), mode
        except UnsupportedSearchError:
            if request.mode is not None or mode == "dense":
                raise
            return search(mode="dense"), "dense"

    def rerank(
        self, request: SearchRequest, candidates: list[Candidate], *, fusion: Fusion | None = None
    ) -> tuple[list[RankedHit], str | None]:
        """Stage 2 within ``rerank_deadline_s``. When it fails or misses the deadline: stage-1 order and the
        reason (the search is answered, marked degraded, and ``sieve_degraded_total`` counts it). With a
        ``fusion`` every candidate's score is returned (the fused order needs them all), else the top k."""
        call = partial(
            self.reranker.rank,
            request.query,
            [c.text for c in candidates],
            top_k=None if fusion is not None else request.top_k,
            instruction=request.instruction,
        )
        if not self.reranker.reorders or not candidates:
            return call(), None
        future = self._rerank_pool.submit(call)
        try:
            return future.result(timeout=self.rerank_deadline_s or None), None
        except DeadlineError:
            future.cancel()  # not started yet: never runs
            kind, reason = "timeout", f"the rerank stage missed its {self.rerank_deadline_s:g} s deadline"
        except RerankOverloadedError as exc:
            kind, reason = "overloaded", f"the rerank stage is overloaded: {exc}"
        except RerankUnavailableError as exc:
            kind, reason = "unavailable", f"the rerank stage is unavailable: {exc}"
        except RerankError as exc:
            kind, reason = "error", f"the rerank stage refused the request: {exc}"
        except Exception:  # a bug or a device failure in stage 2 must not cost the whole search
            logger.exception("the rerank stage failed; answering in stage-1 order")
            kind, reason = "error", "the rerank stage failed"
        metrics.DEGRADED.labels(reason=kind).inc()
        logger.warning("search degraded (%s): %s", kind, reason)
        return [RankedHit(i, c.score) for i, c in enumerate(candidates[: request.top_k])], reason
