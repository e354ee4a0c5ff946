"""Model and index operations, for the admin key (``API_ADMIN_KEY``) only.

- ``POST /v1/admin/reload``: swap a reranker (or a query embedder the serving index accepts) in without
  downtime (``api.hotswap``).
- ``POST /v1/admin/reindex``: build a new index with a new embedder beside the serving one, switched in when
  complete (``ingestion.reindex``, run by a worker); ``GET`` reports its progress.
- ``POST /v1/admin/reindex/drop-old``: drop the index that served before the last switch.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import ResourcesDep, SwapDep
from api.errors import ApiError
from api.hotswap import ReloadRequest, ReloadResponse
from engine.hub import model_revision
from ingestion.indexes import RUNNING, BuildState, BuildStatus, collection_name
from ingestion.reindex import drop_previous

router = APIRouter(prefix="/v1/admin", tags=["admin"])
REINDEX_TASK = "sieve.reindex"


class ReindexRequest(BaseModel):
    embedder_model: str = Field(min_length=1, description="Model folder (`sieve train` output) or hub id.")
    embedder: str | None = Field(default=None, description="Embedder kind (default: the serving index's).")


@router.post("/reload", response_model=ReloadResponse)
def reload(swap: SwapDep, body: ReloadRequest | None = None) -> ReloadResponse:
    """Load the new model(s) while the old ones serve, then swap; a failed load changes nothing."""
    return swap.reload(body or ReloadRequest())


@router.post("/reindex", status_code=202)
def start_reindex(body: ReindexRequest, swap: SwapDep, resources: ResourcesDep) -> dict[str, Any]:
    """Start building the index of a new embedder beside the serving one; a worker does the work."""
    serving = swap.indexes.serving(swap.default_spec)
    kind = body.embedder or serving.embedder
    revision = model_revision(body.embedder_model) or ""
    base = resources.settings.retrieval.collection
    collection = collection_name(base, kind, body.embedder_model, revision)
    if collection == serving.collection:
        raise ApiError(409, f"index {collection!r} of that embedder already serves search")
    build = BuildStatus(collection=collection, embedder=kind, embedder_model=body.embedder_model)
    build = swap.indexes.start_build(build.model_copy(update={"revision": revision}))
    queue = resources.settings.ingest.queue
    try:
        resources.uploads.sender.send_task(REINDEX_TASK, args=[build.id], queue=queue)
    except Exception as exc:
        swap.indexes.update_build(build.id, state=BuildState.FAILED, error=f"could not enqueue: {exc}")
        raise ApiError(503, f"the task queue is unreachable; nothing started: {exc}") from exc
    return swap.status()


@router.get("/reindex")
def reindex_status(swap: SwapDep) -> dict[str, Any]:
    """The serving index, the previous one (until dropped) and the last rebuild with its progress."""
    return swap.status()


@router.post("/reindex/drop-old")
def drop_old(swap: SwapDep, resources: ResourcesDep) -> dict[str, Any]:
    """Drop the collection that served before the last switch (the switch can then no longer be undone)."""
    previous = swap.indexes.previous()
    if previous is None:
        raise ApiError(404, "there is no previous index to drop")
    serving = swap.indexes.serving(swap.default_spec)
    build = swap.indexes.build()
    if previous.collection == serving.collection:
        swap.indexes.forget_previous()
        return {"dropped": None, **swap.status()}
    if build is not None and build.state in RUNNING and build.collection == previous.collection:
        raise ApiError(409, f"a rebuild is writing to {previous.collection!r}; wait for it to end")
    store = swap.store_factory(previous.settings(resources.settings.retrieval))
    dropped = drop_previous(swap.indexes, store)
    return {"dropped": dropped.collection if dropped else None, **swap.status()}
