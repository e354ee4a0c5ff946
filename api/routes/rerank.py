"""Rerank endpoints of the Cohere / Jina / TEI kind, mounted by the API and by ``sieve rerank-server``.

``POST /v1/rerank`` and ``/v2/rerank`` take Cohere's request; ``POST /rerank`` takes Cohere's, or TEI's when
the body has ``texts``. The routes are plain ``def``s: the model runs in the thread pool, behind the bounded
inference queue (``InferenceQueue``), never on the event loop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from fastapi import APIRouter

from api import metrics
from api.compat import (
    AnyRerankRequest,
    MetaTokens,
    RerankDocument,
    RerankMeta,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
    TeiRank,
    TeiRerankRequest,
    fit_documents,
    logit,
)
from api.limits import check_cap
from api.serving import ModelsDep, Serving, ServingDep
from api.snapshot import ModelSnapshot
from reranking import RankedHit, RerankUnavailableError

router = APIRouter(tags=["rerank"])


def rank(
    serving: Serving,
    models: ModelSnapshot,
    query: str,
    texts: Sequence[str],
    *,
    top_n: int | None,
    instruction: str | None,
    max_tokens: int | None,
    truncate: bool,
    from_left: bool = False,
) -> tuple[list[RankedHit], int]:
    """Hits sorted best first and the tokens used; caps checked before the model is touched."""
    if not models.reranker.reorders:
        raise RerankUnavailableError(
            f"no rerank model is served (RERANK_BACKEND={models.rerank.backend}): set RERANK_BACKEND to "
            "qwen3, cross-encoder, engine or remote"
        )
    cap = serving.api.max_tokens_per_doc
    check_cap(len(texts), serving.api.max_rerank_documents, "documents", "API_MAX_RERANK_DOCUMENTS")
    limits = [n for n in (max_tokens, cap) if n]
    fitted, tokens = fit_documents(
        query, list(texts), min(limits) if limits else None, truncate=truncate, from_left=from_left
    )
    with serving.queue.slot():
        started = time.perf_counter()
        hits = models.reranker.rank(query, fitted, top_k=top_n, instruction=instruction)
        metrics.observe_stage("rerank_call", time.perf_counter() - started)
    metrics.BATCH_SIZE.labels(kind="rerank").observe(len(texts))
    return hits, tokens


def cohere_response(serving: Serving, models: ModelSnapshot, request: RerankRequest) -> RerankResponse:
    texts = request.texts()
    hits, tokens = rank(
        serving,
        models,
        request.query,
        texts,
        top_n=request.top_n,
        instruction=request.instruction,
        max_tokens=request.max_tokens_per_doc,
        truncate=request.truncate,
    )
    results = [
        RerankResult(
            index=h.index,
            relevance_score=h.score,
            document=RerankDocument(text=texts[h.index]) if request.return_documents else None,
        )
        for h in hits
    ]
    return RerankResponse(
        id=str(uuid.uuid4()),
        model=models.reranker.name,
        results=results,
        usage=RerankUsage(total_tokens=tokens),
        meta=RerankMeta(tokens=MetaTokens(input_tokens=tokens)),
    )


def tei_response(serving: Serving, models: ModelSnapshot, request: TeiRerankRequest) -> list[TeiRank]:
    hits, _ = rank(
        serving,
        models,
        request.query,
        request.texts,
        top_n=None,
        instruction=None,
        max_tokens=None,
        truncate=request.truncate,
        from_left=request.truncation_direction.lower() == "left",
    )
    return [
        TeiRank(
            index=h.index,
            score=logit(h.score) if request.raw_scores else h.score,
            text=request.texts[h.index] if request.return_text else None,
        )
        for h in hits
    ]


@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
def rerank_v1(request: RerankRequest, serving: ServingDep, models: ModelsDep) -> RerankResponse:
    """Cohere / Jina rerank: results sorted by ``relevance_score`` (the backend's scale, in [0, 1])."""
    return cohere_response(serving, models, request)


@router.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True)
def rerank_v2(request: RerankRequest, serving: ServingDep, models: ModelsDep) -> RerankResponse:
    """Cohere v2 rerank (the path ``cohere.ClientV2`` calls); the same as ``/v1/rerank``."""
    return cohere_response(serving, models, request)


@router.post("/rerank", response_model=RerankResponse | list[TeiRank], response_model_exclude_none=True)
def rerank_any(
    request: AnyRerankRequest, serving: ServingDep, models: ModelsDep
) -> RerankResponse | list[TeiRank]:
    """TEI rerank when the body has ``texts`` (``[{index, score, text?}]``), else Cohere / Jina rerank."""
    if isinstance(request, TeiRerankRequest):
        return tei_response(serving, models, request)
    return cohere_response(serving, models, request)
