"""OpenAI-shaped embeddings and TEI-shaped similarity with the configured embedder (the one that builds the
index), behind the bounded inference queue: caps checked and a slot taken on the event loop, the model and
the JSON in the thread pool. Mounted by the API only: the rerank server holds no embedder."""

from __future__ import annotations

import time

import numpy as np
from fastapi import APIRouter
from fastapi.responses import Response

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
from api.limits import Field, LimitExceededError, check_cap, length_problems, reject, run_admitted
from api.serving import ModelsDep, Serving, ServingDep
from api.snapshot import ModelSnapshot
from retrieval import Embedder

router = APIRouter(tags=["embeddings"])


def _embedder(serving: Serving, models: ModelSnapshot) -> Embedder:
    if models.embedder is None:
        raise ApiError(404, f"{serving.service} serves no embedding model")
    return models.embedder


def vectors(
    serving: Serving,
    models: ModelSnapshot,
    texts: list[str],
    *,
    truncate: bool,
    query: bool = False,
    instruction: str | None = None,
) -> tuple[np.ndarray, int]:
    """Unit vectors for ``texts`` and the tokens they used (each input counts up to the model's limit); in a
    thread that holds an inference slot."""
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
    started = time.perf_counter()
    out = embedder.embed_queries(texts, instruction=instruction) if query else embedder.embed_documents(texts)
    metrics.observe_stage("embed_call", time.perf_counter() - started)
    metrics.BATCH_SIZE.labels(kind="embed").observe(len(texts))
    return np.asarray(out, dtype=np.float32), sum(min(n, limit) for n in counts)


def embed(
    serving: Serving,
    models: ModelSnapshot,
    texts: list[str],
    *,
    truncate: bool,
    query: bool = False,
    instruction: str | None = None,
) -> tuple[np.ndarray, int]:
    """``vectors`` for a caller already in a thread (the review clusters): it waits there for a slot."""
    with serving.queue.slot():
        return vectors(serving, models, texts, truncate=truncate, query=query, instruction=instruction)


def check(serving: Serving, models: ModelSnapshot, fields: list[tuple[Field, str]]) -> None:
    """On the event loop, before the queue: an embedder is served, the count and the lengths within caps."""
    _embedder(serving, models)
    api = serving.api
    check_cap(len(fields), api.max_embedding_inputs, "inputs", "API_MAX_EMBEDDING_INPUTS")
    reject(length_problems(fields, api.max_input_chars, "API_MAX_INPUT_CHARS"))


def embeddings_response(serving: Serving, models: ModelSnapshot, request: EmbeddingsRequest) -> Response:
    found, tokens = vectors(
        serving,
        models,
        request.texts(),
        truncate=request.truncate,
        query=request.input_type == "query",
        instruction=request.instruction,
    )
    found = shorten(found, request.dimensions)
    data = [Embedding(index=i, embedding=encode(v, request.encoding_format)) for i, v in enumerate(found)]
    name = _embedder(serving, models).name
    response = EmbeddingsResponse(
        data=data, model=name, usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
    )
    return Response(response.model_dump_json(), media_type="application/json")


@router.post("/v1/embeddings", response_model=EmbeddingsResponse)
async def embeddings(request: EmbeddingsRequest, serving: ServingDep, models: ModelsDep) -> Response:
    """OpenAI embeddings: ``input`` a string or a list of strings; ``encoding_format`` float or base64."""
    embedder = _embedder(serving, models)
    if request.dimensions is not None and request.dimensions > embedder.dimension:
        raise ApiError(
            422, f"dimensions: {request.dimensions} is more than the model's {embedder.dimension} dimensions"
        )
    if isinstance(request.input, str):
        check(serving, models, [(("input",), request.input)])
    else:
        check(serving, models, [(("input", i), text) for i, text in enumerate(request.input)])
    return await run_admitted(serving.queue, embeddings_response, serving, models, request)


def similarity_response(serving: Serving, models: ModelSnapshot, request: SimilarityRequest) -> list[float]:
    texts = [request.inputs.source_sentence, *request.inputs.sentences]
    found, _ = vectors(serving, models, texts, truncate=request.truncate)
    return [float(s) for s in found[1:] @ found[0]]


@router.post("/v1/similarity", response_model=list[float])
@router.post("/similarity", response_model=list[float], include_in_schema=False)
async def similarity(request: SimilarityRequest, serving: ServingDep, models: ModelsDep) -> list[float]:
    """Cosine of ``source_sentence`` with each of ``sentences`` (TEI / Hugging Face sentence similarity)."""
    inputs = request.inputs
    check(
        serving,
        models,
        [(("inputs", "source_sentence"), inputs.source_sentence)]
        + [(("inputs", "sentences", i), text) for i, text in enumerate(inputs.sentences)],
    )
    return await run_admitted(serving.queue, similarity_response, serving, models, request)
