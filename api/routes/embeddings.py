"""OpenAI-shaped embeddings and TEI-shaped similarity with the configured embedder (the one that builds the
index), behind the bounded inference queue. Mounted by the API only: the rerank server holds no embedder."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter

from api import metrics
from api.compat import (
    Embedding,
    EmbeddingsRequest,
    EmbeddingsResponse,
    EmbeddingUsage,
    SimilarityRequest,
    encode,
    shorten,
)
from api.errors import ApiError
from api.limits import LimitExceededError, check_cap
from api.serving import ModelsDep, Serving, ServingDep
from api.snapshot import ModelSnapshot
from retrieval import Embedder

router = APIRouter(tags=["embeddings"])


def _embedder(serving: Serving, models: ModelSnapshot) -> Embedder:
    if models.embedder is None:
        raise ApiError(404, f"{serving.service} serves no embedding model")
    return models.embedder


def embed(
    serving: Serving,
    models: ModelSnapshot,
    texts: list[str],
    *,
    truncate: bool,
    query: bool = False,
    instruction: str | None = None,
) -> tuple[np.ndarray, int]:
    """Unit vectors for ``texts`` and the tokens they used (each input counts up to the model's limit)."""
    embedder = _embedder(serving, models)
    check_cap(len(texts), serving.api.max_embedding_inputs, "inputs", "API_MAX_EMBEDDING_INPUTS")
    limit = embedder.max_tokens
    counts = [embedder.count_tokens(t) for t in texts]
    if not truncate:
        for i, n in enumerate(counts):
            if n > limit:
                raise LimitExceededError(
                    f"input {i} has {n} tokens; the limit is {limit} tokens per input "
                    "(RETRIEVAL_EMBEDDER_MAX_TOKENS); send truncate=true to cut it"
                )
    with serving.queue.slot():
        started = time.perf_counter()
        if query:
            vectors = embedder.embed_queries(texts, instruction=instruction)
        else:
            vectors = embedder.embed_documents(texts)
        metrics.observe_stage("embed_call", time.perf_counter() - started)
    metrics.BATCH_SIZE.labels(kind="embed").observe(len(texts))
    return np.asarray(vectors, dtype=np.float32), sum(min(n, limit) for n in counts)


@router.post("/v1/embeddings", response_model=EmbeddingsResponse)
def embeddings(request: EmbeddingsRequest, serving: ServingDep, models: ModelsDep) -> EmbeddingsResponse:
    """OpenAI embeddings: ``input`` a string or a list of strings; ``encoding_format`` float or base64."""
    embedder = _embedder(serving, models)
    if request.dimensions is not None and request.dimensions > embedder.dimension:
        raise ApiError(
            422, f"dimensions: {request.dimensions} is more than the model's {embedder.dimension} dimensions"
        )
    vectors, tokens = embed(
        serving,
        models,
        request.texts(),
        truncate=request.truncate,
        query=request.input_type == "query",
        instruction=request.instruction,
    )
    vectors = shorten(vectors, request.dimensions)
    data = [Embedding(index=i, embedding=encode(v, request.encoding_format)) for i, v in enumerate(vectors)]
    return EmbeddingsResponse(
        data=data, model=embedder.name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )


@router.post("/v1/similarity", response_model=list[float])
@router.post("/similarity", response_model=list[float], include_in_schema=False)
def similarity(request: SimilarityRequest, serving: ServingDep, models: ModelsDep) -> list[float]:
    """Cosine of ``source_sentence`` with each of ``sentences`` (TEI / Hugging Face sentence similarity)."""
    texts = [request.inputs.source_sentence, *request.inputs.sentences]
    vectors, _ = embed(serving, models, texts, truncate=request.truncate)
    return [float(s) for s in vectors[1:] @ vectors[0]]
