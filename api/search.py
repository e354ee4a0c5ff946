"""The search pipeline: bounds, the cache, stage 1, stage 2, compose, the low-confidence rule.

``SearchService.search(models, tenant, request)`` runs it on one model snapshot (``api.snapshot``):

1. bounds from the settings (``API_MAX_QUERY_CHARS``, ``API_DEFAULT_TOP_K``, ``API_DEFAULT_CANDIDATES``,
   ``API_MAX_CANDIDATES``; 422 naming the field), before anything touches the store or a model;
   the route then waits for a slot of the search queue (``admission``, ``API_SEARCH_*``) on the event loop
   and runs the rest (``run``) in a thread;
2. the cache (``api.cache``): a hit is answered at once, marked ``cached``;
3. stage 1: embed the query, candidates from the vector store (which checks the filters), only the versions
   that are served. A request that names neither ``mode`` nor ``fusion`` runs in the tenant's learned stage-1
   configuration where ``sieve eval --gate`` adopted one (``RerankGate.stage1``; the tenant's decision is read
   once and serves both gates), else in the settings' mode; a hybrid query in a language the embedder does
   not read runs as bm25, unembedded (``retrieval.fusion.plan_legs``); the response's ``fusion`` says which;
4. stage 2: the reranker, when the runtime rerank gate lets it run, within ``API_RERANK_DEADLINE_S``;
5. compose: the final order (the reranker's, the learned fusion's, or stage 1's), cut to ``top_k`` once;
6. a healthy answer is cached, and a low-confidence one goes to the review queue (``api.low_confidence``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as DeadlineError
from functools import partial
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api import metrics
from api.cache import SearchCache
from api.gate_decision import Stage1
from api.limits import Admission
from api.low_confidence import flag_if_low_confidence
from api.rerank_gate import Verdict
from api.review import ReviewSink
from api.search_models import Hit, RerankInfo, SearchRequest, SearchResponse, SearchResult
from api.settings import ApiSettings
from api.snapshot import ModelSnapshot
from ingestion.records import Records
from reranking import RankedHit, Reranker, RerankError, RerankOverloadedError, RerankUnavailableError
from retrieval import Candidate, Embedder, VectorStore
from retrieval.embedder import reads
from retrieval.errors import UnsupportedSearchError
from retrieval.fusion import DEFAULT_FUSION, DEFAULT_RRF_K, plan_legs

__all__ = ["Hit", "RerankInfo", "SearchRequest", "SearchResponse", "SearchResult", "SearchService"]

logger = logging.getLogger(__name__)


class Laps:
    """Stage timings in milliseconds, observed in ``sieve_stage_seconds`` as they are taken."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}
        self.start = self._clock = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round((now - self._clock) * 1000, 3)
        metrics.observe_stage(name, now - self._clock)
        self._clock = now

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": round((time.perf_counter() - self.start) * 1000, 3)}


class BoundedSearch(SearchRequest):
    """A search request with the settings' defaults filled in: what the pipeline runs."""

    top_k: int
    candidates: int


class SearchService:
    def __init__(
        self,
        *,
        records: Records,
        cache: SearchCache,
        review: ReviewSink,
        settings: ApiSettings,
        default_mode: str = "dense",
        default_fusion: str = DEFAULT_FUSION,
    ) -> None:
        self.records = records
        self.cache = cache
        self.review = review
        self.settings = settings
        self.default_mode = default_mode
        self.default_fusion = default_fusion
        # Stage 2 runs here so that a deadline can be kept; threads start on first use.
        self._rerank_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="rerank")
        self.admission = Admission(
            settings.search_concurrency,
            settings.search_queue,
            timeout_s=settings.search_queue_timeout_s,
            retry_after_s=settings.retry_after_s,
            name="search queue",
            settings="API_SEARCH_CONCURRENCY, API_SEARCH_QUEUE",
            depth=metrics.SEARCH_QUEUE_DEPTH,
            inflight=metrics.SEARCH_INFLIGHT,
            refused=metrics.SEARCH_OVERLOADED,
        )

    def close(self) -> None:
        """Stop the stage-2 threads (a call still running is not waited for)."""
        self._rerank_pool.shutdown(wait=False, cancel_futures=True)

    # -- the pipeline ---------------------------------------------------------------------------------
    def search(self, models: ModelSnapshot, tenant: str, asked: SearchRequest) -> SearchResult:
        """The whole pipeline in the calling thread, without admission (the route admits, then ``run``)."""
        return self.run(models, tenant, self.bounded(asked))

    def run(self, models: ModelSnapshot, tenant: str, request: BoundedSearch) -> SearchResult:
        """The cache, the stages and the review queue for a request already bounded."""
        embedder, _, gate = models.search_models()
        started = time.perf_counter()
        key, entry = self.cache.lookup(tenant, request, embedder=embedder.name, reranker=gate.label)
        if entry is not None:
            cached = from_cache(entry, request, started)
            if cached is not None:
                metrics.SEARCH_CACHE.labels(result="hit").inc()
                return cached
        if key is not None:
            metrics.SEARCH_CACHE.labels(result="miss").inc()
        result = self.answer(models, tenant, request)
        if (
            key is not None and not result.degraded
        ):  # a degraded answer is not the answer: try again next time
            self.cache.put(key, result.model_dump(mode="json", exclude={"cached"}))
        flag_if_low_confidence(
            self.review, self.settings, tenant, request, result, embedder.name, result.degraded
        )
        return result

    def bounded(self, request: SearchRequest) -> BoundedSearch:
        """The request with the settings' defaults filled in; 422 naming a field over its bound."""
        api = self.settings
        candidates = request.candidates or api.default_candidates
        problems: list[dict[str, Any]] = []
        if api.max_query_chars > 0 and len(request.query) > api.max_query_chars:
            message = f"String should have at most {api.max_query_chars} characters (API_MAX_QUERY_CHARS)"
            problems.append({"type": "string_too_long", "loc": ("body", "query"), "msg": message})
        if api.max_candidates > 0 and candidates > api.max_candidates:
            message = f"Input should be less than or equal to {api.max_candidates} (API_MAX_CANDIDATES)"
            problems.append({"type": "less_than_equal", "loc": ("body", "candidates"), "msg": message})
        if problems:
            raise RequestValidationError(problems)
        fields = {**dict(request), "top_k": request.top_k or api.default_top_k, "candidates": candidates}
        return BoundedSearch.model_construct(**fields)  # every field validated already

    def answer(self, models: ModelSnapshot, tenant: str, request: BoundedSearch) -> SearchResult:
        """Stage 1, stage 2 and compose, uncached."""
        embedder, store, gate = models.search_models()
        laps = Laps()
        stored = gate.read(tenant)
        learned = None
        if request.mode is None and request.fusion is None:
            choice = gate.stage1(stored, embedder.name)
            learned = (choice.config, choice.reason) if choice.config is not None else None
        candidates, mode, fusion_note = self.stage1(embedder, store, tenant, request, laps, learned=learned)
        fused_by = self.fusion_of(request, learned[0] if learned is not None else None)[0]
        verdict = gate.verdict(tenant, stored) if models.reranker.reorders else None
        ranked, degraded = self.stage2(models.reranker, verdict, request, candidates)
        laps.lap("rerank")
        return self.compose(
            request,
            candidates,
            ranked,
            verdict,
            degraded,
            models.reranker,
            mode=mode,
            timings=laps.total(),
            fusion_note=fusion_note,
            stage1_fusion=fused_by if mode == "hybrid" else None,
        )

    # -- stage 1 --------------------------------------------------------------------------------------
    def stage1(
        self,
        embedder: Embedder,
        store: VectorStore,
        tenant: str,
        request: BoundedSearch,
        laps: Laps,
        *,
        learned: tuple[Stage1, str] | None = None,
    ) -> tuple[list[Candidate], str, str | None]:
        """Embed the query (where a dense leg runs), fetch candidates (the store checks the filters), keep
        the served versions. ``learned``: the tenant's stage-1 configuration and why, run instead of the
        default mode and fusion. Returns the candidates, the mode that ran and the fusion note (the learned
        configuration; ``plan_legs``: a hybrid query in a language the embedder does not read runs as
        bm25)."""
        config = learned[0] if learned is not None else None
        plan = plan_legs(
            config.mode if config is not None else request.mode or self.default_mode,
            request.query,
            reads(embedder),
        )

        def embed() -> Any:
            return embedder.embed_queries([request.query], instruction=request.instruction)[0]

        vector = embed() if plan.needs_vector else None
        laps.lap("embed")
        limit = request.candidates + self.settings.stale_slack
        found, mode = self.retrieve(
            store, tenant, request, vector, limit=limit, mode=plan.mode, embed=embed, config=config
        )
        laps.lap("stage1")
        candidates = self.served(tenant, found)[: request.candidates]
        laps.lap("filter")
        notes = [learned[1]] if learned is not None else []
        if mode == plan.mode and plan.note:
            notes.append(plan.note)
        return candidates, mode, "; ".join(notes) or None

    def fusion_of(
        self, request: BoundedSearch, config: Stage1 | None
    ) -> tuple[str, int, tuple[float, float] | None]:
        """How a hybrid search fuses its legs: the learned ``config``'s fusion, else the request's, else the
        configured default (``RETRIEVAL_FUSION``); as ``(fusion, rrf_k, weights)``."""
        if config is not None:
            return config.fusion, config.rrf_k, config.weights
        return request.fusion or self.default_fusion, DEFAULT_RRF_K, None

    def retrieve(
        self,
        store: VectorStore,
        tenant: str,
        request: SearchRequest,
        vector: Any,
        *,
        limit: int,
        mode: str | None = None,
        embed: Callable[[], Any] | None = None,
        config: Stage1 | None = None,
    ) -> tuple[list[Candidate], str]:
        """Candidates in ``mode`` (default: the requested one). A mode the request asked for and the store
        cannot run is the caller's error (400); the configured default (or learned ``config``, whose fusion
        is used) quietly falls back to dense where there is no full-text index (a collection from before it,
        or a Milvus server older than 2.5); ``embed`` gives the query vector then, where ``vector`` is None
        (a plan without a dense leg)."""
        mode = mode or request.mode or self.default_mode
        fusion, rrf_k, weights = self.fusion_of(request, config)
        search = partial(
            store.search,
            tenant,
            limit=limit,
            filters=request.filters,
            query_text=request.query,
            fusion=fusion,
            rrf_k=rrf_k,
            weights=weights,
        )
        try:
            return search(vector, mode=mode), mode
        except UnsupportedSearchError:
            if request.mode is not None or mode == "dense":
                raise
            if vector is None and embed is not None:
                vector = embed()
            return search(vector, mode="dense"), "dense"

    def served(self, tenant: str, candidates: list[Candidate]) -> list[Candidate]:
        """Drop chunks of versions that are not (or no longer) served: in flight, superseded, deleted."""
        active = self.records.active_versions(tenant, (c.document_id for c in candidates))
        return [c for c in candidates if active.get(c.document_id) == c.version]

    # -- stage 2 --------------------------------------------------------------------------------------
    def stage2(
        self,
        reranker: Reranker,
        verdict: Verdict | None,
        request: SearchRequest,
        candidates: list[Candidate],
    ) -> tuple[list[RankedHit] | None, str | None]:
        """Every candidate's rerank score, best first, within ``API_RERANK_DEADLINE_S``; None when stage 2
        does not run (no reranker, held back by the gate) or fails, with the reason of a failure (the search
        is then answered in stage-1 order, marked degraded, and ``sieve_degraded_total`` counts it)."""
        if not reranker.reorders or (verdict is not None and not verdict.run):
            return None, None
        if not candidates:
            return [], None
        deadline = self.settings.rerank_deadline_s
        future = self._rerank_pool.submit(
            reranker.rank, request.query, [c.text for c in candidates], instruction=request.instruction
        )
        try:
            return future.result(timeout=deadline or None), None
        except DeadlineError:
            future.cancel()  # not started yet: never runs
            kind, reason = "timeout", f"the rerank stage missed its {deadline:g} s deadline"
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
        return None, reason

    # -- compose --------------------------------------------------------------------------------------
    def compose(
        self,
        request: BoundedSearch,
        candidates: list[Candidate],
        ranked: list[RankedHit] | None,
        verdict: Verdict | None,
        degraded: str | None,
        reranker: Reranker,
        *,
        mode: str,
        timings: dict[str, float],
        fusion_note: str | None = None,
        stage1_fusion: str | None = None,
    ) -> SearchResult:
        """The final order, cut to ``top_k`` (the one cut), and the response that explains it."""
        applied = ranked is not None
        fusion = verdict.fusion if verdict is not None else None
        rerank_scores = {r.index: r.score for r in ranked or ()}
        if ranked is None:
            order = [(i, c.score) for i, c in enumerate(candidates)]
        elif fusion is not None:
            order = fusion.order([c.score for c in candidates], rerank_scores)
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
                score=score,
                stage1_rank=index + 1,  # candidates are in stage-1 order
            )
            for index, score in order[: request.top_k]
            for c in (candidates[index],)
        ]
        if applied:
            note = f"final score: {fusion.label}" if fusion is not None else ""
        elif degraded:
            note = degraded
        elif verdict is not None:
            note = f"rerank stage off for this tenant: {verdict.info.reason}"
        else:
            note = "no rerank stage configured: results are in stage-1 order"
        return SearchResult(
            query=request.query,
            hits=hits,
            candidates=len(candidates),
            rerank=RerankInfo(backend=reranker.name, applied=applied, note=note),
            timings_ms=timings,
            mode=mode,
            fusion=fusion_note,
            stage1_fusion=stage1_fusion,
            degraded=degraded is not None,
            degraded_reason=degraded,
            gate=verdict.info if verdict is not None else None,
            cached=False,
        )


def from_cache(entry: dict[str, Any], request: SearchRequest, started: float) -> SearchResult | None:
    """The cached response, marked ``cached``; None for an entry another version of the API wrote."""
    elapsed = round((time.perf_counter() - started) * 1000, 3)
    try:
        return SearchResult.model_validate(
            {
                **entry,
                "query": request.query,
                "timings_ms": {"cache": elapsed, "total": elapsed},
                "cached": True,
            }
        )
    except ValidationError:
        return None
