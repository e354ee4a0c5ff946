"""The low-confidence rule after a search: a search whose best score and spread are low goes to the review
queue (``API_REVIEW_RULES``, ``api.review.assess``) and is logged as a structured ``review.flagged`` event."""

from __future__ import annotations

import logging

from api import metrics
from api.review import ReviewCandidate, ReviewItem, ReviewSink, assess, rule_key
from api.search_models import SearchRequest, SearchResponse
from api.settings import ApiSettings
from ingestion.errors import RedisUnavailableError

logger = logging.getLogger(__name__)


def flag_if_low_confidence(
    review: ReviewSink,
    settings: ApiSettings,
    tenant: str,
    request: SearchRequest,
    response: SearchResponse,
    embedder: str,
    degraded: bool,
) -> str | None:
    """Send a low-confidence search to the review queue (and log it); returns the review item's id."""
    applied = response.rerank.applied and not degraded
    # the reranker's own scale where it ran; else the cosine of the dense leg (a fused RRF score and a BM25
    # score have no fixed scale: a search found by BM25 alone is judged only under a "bm25" rule)
    if applied:
        scores = [h.rerank_score if h.rerank_score is not None else h.score for h in response.hits]
        backend = rule_key(response.rerank.backend, applied)
    elif any(h.dense_score is not None for h in response.hits):
        scores = [h.dense_score for h in response.hits if h.dense_score is not None]
        backend = "none"
    else:
        scores, backend = [h.score for h in response.hits], "bm25"
    if backend == "bm25" and "bm25" not in settings.review_rules:
        return None
    verdict = assess(scores, backend=backend, rules=settings.review_rules)
    if verdict is None:
        return None
    item = ReviewItem(
        tenant=tenant,
        query=request.query,
        instruction=request.instruction,
        filters=request.filters,
        candidates=[
            ReviewCandidate(
                chunk_id=h.chunk_id,
                document_id=h.document_id,
                text=h.text[: settings.review_text_chars],
                score=h.score,
                stage1_score=h.stage1_score,
                rerank_score=h.rerank_score,
            )
            for h in response.hits
        ],
        backend=verdict.backend,
        best=verdict.best,
        spread=verdict.spread,
        rule=verdict.rule,
        embedder=embedder,
        reranker=response.rerank.backend,
    )
    try:
        item_id = review.add(item)
    except RedisUnavailableError as exc:
        logger.warning("could not queue a low-confidence search for review: %s", exc)
        return None
    metrics.LOW_CONFIDENCE.inc()
    logger.info(
        "low-confidence search flagged for review",
        extra={
            "event": "review.flagged",
            "review_id": item_id,
            "tenant": tenant,
            "query": request.query,
            "best_score": verdict.best,
            "score_spread": verdict.spread,
            "rule_backend": verdict.backend,
            "rule": list(verdict.rule),
            "embedder": item.embedder,
            "reranker": item.reranker,
            "candidates": len(item.candidates),
        },
    )
    return item_id
