"""Operations: ``GET /info`` (models, revisions, limits) and ``GET /metrics`` (Prometheus), in both apps."""

from __future__ import annotations

import re
from importlib import metadata
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

from api import metrics
from api.principal import KeyTenantDep
from api.rerank_gate import gate_summary
from api.serving import ModelsDep, ServingDep
from engine.hub import model_revision

router = APIRouter(tags=["operations"])

SNAPSHOT = re.compile(r"snapshots[/\\]([0-9a-f]{40})")


class ModelInfo(BaseModel):
    name: str
    backend: str | None = None
    model: str | None = None  # the configured folder or hub id
    revision: str | None = None  # sieve-model.json's revision (trained folder) or the hub snapshot's commit
    device: str | None = None
    max_tokens: int | None = None
    dimension: int | None = None
    reorders: bool | None = None
    # the inference engine's products (bf16 or fp8) and why: FP8's accuracy gate, or why it fell back
    precision: str | None = None
    precision_reason: str | None = None


class Info(BaseModel):
    service: str
    version: str
    models: dict[str, ModelInfo]
    limits: dict[str, float | int]
    index: dict[str, Any] | None = None  # the serving index (collection, embedder) and a rebuild, if any
    rerank_gate: dict[str, Any] | None = None  # API_RERANK_GATE; with a tenant's key, its decision


def _version() -> str:
    try:
        return metadata.version("sieve")
    except metadata.PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def _precision(backend: object) -> tuple[str | None, str | None]:
    """``precision`` and ``precision_reason`` of a backend that has them (the engine's), else None."""
    used, why = getattr(backend, "precision", None), getattr(backend, "precision_reason", None)
    if not isinstance(used, str):
        return None, None
    return used, why if isinstance(why, str) else None


def _revision(ref: str) -> str | None:
    found = SNAPSHOT.search(ref)
    return found.group(1) if found else model_revision(ref)


@router.get("/info", response_model=Info, response_model_exclude_none=True)
def info(serving: ServingDep, models: ModelsDep, tenant: KeyTenantDep) -> Info:
    reranker, rerank = models.reranker, models.rerank
    max_tokens = reranker.max_tokens  # None for ``none`` and ``remote``
    found = {
        "reranker": ModelInfo(
            name=reranker.name,
            backend=rerank.backend,
            model=(",".join(rerank.server_urls()) if rerank.backend == "remote" else rerank.model) or None,
            revision=_revision(rerank.model),
            device=rerank.device if reranker.reorders and rerank.backend != "remote" else None,
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            reorders=reranker.reorders,
            precision=_precision(reranker)[0],
            precision_reason=_precision(reranker)[1],
        )
    }
    index = serving.index_status(models) if serving.index_status is not None else None
    if models.embedder is not None:
        source = (index or {}).get("serving", {})
        found["embedder"] = ModelInfo(
            name=models.embedder.name,
            model=source.get("embedder_model") or None,
            revision=source.get("revision") or None,
            dimension=models.embedder.dimension,
            max_tokens=models.embedder.max_tokens,
            precision=_precision(models.embedder)[0],
            precision_reason=_precision(models.embedder)[1],
        )
    api = serving.api
    limits: dict[str, float | int] = {
        "max_request_bytes": api.max_request_bytes,
        "max_rerank_documents": api.max_rerank_documents,
        "max_tokens_per_doc": api.max_tokens_per_doc,
        "inference_concurrency": api.inference_concurrency,
        "inference_queue": api.inference_queue,
    }
    if models.embedder is not None:
        limits["max_embedding_inputs"] = api.max_embedding_inputs
        limits["rerank_deadline_s"] = api.rerank_deadline_s
    return Info(
        service=serving.service,
        version=_version(),
        models=found,
        limits=limits,
        index=index,
        rerank_gate=gate_summary(
            models.gate, tenant, models.embedder.name if models.embedder is not None else None
        )
        if models.gate is not None
        else None,
    )


@router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def prometheus(models: ModelsDep) -> Response:
    body, content_type = metrics.render(
        metrics.engine_stats({"reranker": models.reranker, "embedder": models.embedder})
    )
    return Response(body, media_type=content_type)
