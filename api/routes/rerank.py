"""Rerank endpoints of the Cohere / Jina / TEI kind, mounted by the API and by ``sieve rerank-server``.

``POST /v1/rerank`` and ``/v2/rerank`` take Cohere's request; ``POST /rerank`` takes Cohere's, or TEI's when
the body has ``texts``. The routes check the caps (``API_MAX_RERANK_DOCUMENTS``, ``API_MAX_QUERY_CHARS``,
``API_MAX_INPUT_CHARS``) and take a slot of the bounded inference queue on the event loop, then run the model
and build the JSON in the thread pool, never on the event loop: a refusal never waits for a thread.

Long documents (Cohere shape): ``long_documents`` (default ``RERANK_LONG_DOCUMENTS``, "truncate") cuts each
document at ``max_tokens_per_doc`` word pieces; "windows" cuts nothing (``API_MAX_INPUT_CHARS`` still bounds
a document) and asks the reranker for each document's best window, returned as each result's ``window``. The
TEI shape always truncates.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import TypeAdapter

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
    RerankWindow,
    TeiRank,
    TeiRerankRequest,
    fit_documents,
    logit,
)
from api.limits import Field, check_cap, length_problems, reject, run_admitted
from api.serving import ModelsDep, Serving, ServingDep
from api.snapshot import ModelSnapshot
from reranking import RankedHit, RerankNotConfiguredError
from reranking.backends import stage2_howto

router = APIRouter(tags=["rerank"])

RANKS = TypeAdapter(list[TeiRank])


def check(
    serving: Serving, models: ModelSnapshot, query: str, documents: Sequence[tuple[Field, str]]
) -> None:
    """On the event loop, before the queue: a model is served, the count and the lengths within the caps."""
    if not models.reranker.reorders:
        raise RerankNotConfiguredError(
            f"stage 2 is off: no reranker is configured (RERANK_BACKEND={models.rerank.backend}; no reranker "
            f"weights ship with Sieve, so the default stack serves stage 1 only); {stage2_howto()}"
        )
    api = serving.api
    check_cap(len(documents), api.max_rerank_documents, "documents", "API_MAX_RERANK_DOCUMENTS")
    reject(
        length_problems([(("query",), query)], api.max_query_chars, "API_MAX_QUERY_CHARS")
        + length_problems(documents, api.max_input_chars, "API_MAX_INPUT_CHARS")
    )


def cohere_fields(request: RerankRequest) -> list[tuple[Field, str]]:
    return [
        (("documents", i), d) if isinstance(d, str) else (("documents", i, "text"), d.text)
        for i, d in enumerate(request.documents)
    ]


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
    windows: bool = False,
) -> tuple[list[RankedHit], int]:
    """Hits sorted best first and the tokens used (in a thread, holding an inference slot). ``windows``: no
    cut at ``API_MAX_TOKENS_PER_DOC``; the reranker scores long documents by their best window."""
    cap = serving.api.max_tokens_per_doc
    limits = [n for n in (max_tokens, cap) if n and not windows]
    fitted, tokens = fit_documents(
        query, list(texts), min(limits) if limits else None, truncate=truncate, from_left=from_left
    )
    started = time.perf_counter()
    hits = models.reranker.rank(query, fitted, top_k=top_n, instruction=instruction, windows=windows)
    metrics.observe_stage("rerank_call", time.perf_counter() - started)
    metrics.BATCH_SIZE.labels(kind="rerank").observe(len(texts))
    return hits, tokens


def cohere_response(serving: Serving, models: ModelSnapshot, request: RerankRequest) -> Response:
    texts = request.texts()
    windows = request.long_documents_or(models.rerank.long_documents) == "windows"
    hits, tokens = rank(
        serving,
        models,
        request.query,
        texts,
        top_n=request.top_n,
        instruction=request.instruction,
        max_tokens=request.max_tokens_per_doc,
        truncate=request.truncate,
        windows=windows,
    )
    results = [
        RerankResult(
            index=h.index,
            relevance_score=h.score,
            document=RerankDocument(text=texts[h.index]) if request.return_documents else None,
            window=None if h.window is None else RerankWindow(**asdict(h.window)),
        )
        for h in hits
    ]
    response = RerankResponse(
        id=str(uuid.uuid4()),
        model=models.reranker.name,
        results=results,
        usage=RerankUsage(total_tokens=tokens),
        meta=RerankMeta(tokens=MetaTokens(input_tokens=tokens)),
    )
    return Response(response.model_dump_json(exclude_none=True), media_type="application/json")


def tei_response(serving: Serving, models: ModelSnapshot, request: TeiRerankRequest) -> Response:
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
    ranks = [
        TeiRank(
            index=h.index,
            score=logit(h.score) if request.raw_scores else h.score,
            text=request.texts[h.index] if request.return_text else None,
        )
        for h in hits
    ]
    return Response(RANKS.dump_json(ranks, exclude_none=True), media_type="application/json")


async def cohere(serving: Serving, models: ModelSnapshot, request: RerankRequest) -> Response:
    check(serving, models, request.query, cohere_fields(request))
    return await run_admitted(serving.queue, cohere_response, serving, models, request)


@router.post("/v1/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def rerank_v1(request: RerankRequest, serving: ServingDep, models: ModelsDep) -> Response:
    """Cohere / Jina rerank: results sorted by ``relevance_score`` (the backend's scale, in [0, 1])."""
    return await cohere(serving, models, request)


@router.post("/v2/rerank", response_model=RerankResponse, response_model_exclude_none=True)
async def rerank_v2(request: RerankRequest, serving: ServingDep, models: ModelsDep) -> Response:
    """Cohere v2 rerank (the path ``cohere.ClientV2`` calls); the same as ``/v1/rerank``."""
    return await cohere(serving, models, request)


@router.post("/rerank", response_model=RerankResponse | list[TeiRank], response_model_exclude_none=True)
async def rerank_any(request: AnyRerankRequest, serving: ServingDep, models: ModelsDep) -> Response:
    """TEI rerank when the body has ``texts`` (``[{index, score, text?}]``), else Cohere / Jina rerank."""
    if isinstance(request, TeiRerankRequest):
        check(serving, models, request.query, [(("texts", i), t) for i, t in enumerate(request.texts)])
        return await run_admitted(serving.queue, tei_response, serving, models, request)
    return await cohere(serving, models, request)
