"""The review queue over HTTP: list flagged searches, label them, export the labels as training pairs.

A tenant's key sees and labels its own tenant's items only (another tenant's item is a 404, asking for
another tenant's list a 403). The admin key (``API_ADMIN_KEY``) sees every tenant's items, narrows with
``?tenant=``, and is the only one that may ``claim`` items for a reviewer. ``/clusters`` groups the flagged
queries the caller may see (``api.review_clusters``), embedding them behind the bounded inference queue.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field, model_validator

from api.deps import PrincipalDep, ReviewDep
from api.errors import ApiError
from api.principal import Principal
from api.relevance.review_clusters import (
    DEFAULT_THRESHOLD,
    ClusteringUnavailableError,
    ReviewClusters,
    StateFilter,
    cluster_items,
    recent_items,
)
from api.review import (
    ReviewItem,
    ReviewLabelError,
    ReviewNotFoundError,
    ReviewPage,
    ReviewSink,
    State,
    training_pairs,
)
from api.routes.embeddings import embed
from api.serving import ModelsDep, ServingDep

router = APIRouter(prefix="/v1/review", tags=["review"])


TenantQuery = Annotated[
    str | None, Query(description="Only this tenant's items (the admin key: any tenant).")
]
SinceQuery = Annotated[
    float | None,
    Query(ge=0, le=1e11, description="Only items flagged at or after this time (epoch seconds)."),
]


def scope(caller: Principal, tenant: str | None) -> str | None:
    """The tenant whose items the caller may see: its own, or for the admin the one asked (None: all)."""
    if caller.tenant is None:
        return tenant
    if tenant is not None and tenant != caller.tenant:
        raise ApiError(403, "a tenant's key sees its own review items only; other tenants need the admin key")
    return caller.tenant


def item_for(review: ReviewSink, caller: Principal, item_id: str) -> ReviewItem:
    try:
        item = review.get(item_id)
    except ReviewNotFoundError as exc:
        raise ApiError(404, str(exc)) from exc
    if caller.tenant is not None and item.tenant != caller.tenant:
        raise ApiError(404, f"no review item {item_id!r}")
    return item


class LabelRequest(BaseModel):
    """Which of the item's candidates answer its query: by chunk id, by index in ``candidates``, or none."""

    chunk_ids: list[str] | None = Field(None, description="Chunk ids of the passages that answer the query.")
    indices: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="Positions in the item's candidates of the passages that answer the query."
    )
    none: bool = Field(False, description="True: no candidate answers the query.")

    @model_validator(mode="after")
    def _one_answer(self) -> LabelRequest:
        given = [bool(self.chunk_ids), bool(self.indices), self.none]
        if sum(given) != 1:
            raise ValueError("give exactly one of: a non-empty chunk_ids, a non-empty indices, or none=true")
        return self


@router.get("", response_model=ReviewPage)
def list_items(
    caller: PrincipalDep,
    review: ReviewDep,
    tenant: TenantQuery = None,
    state: Annotated[State | None, Query(description="pending or labelled")] = None,
    since: SinceQuery = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ReviewPage:
    """Flagged searches in the order they were flagged, a page at a time."""
    try:
        return review.page(tenant=scope(caller, tenant), state=state, since=since, cursor=cursor, limit=limit)
    except ReviewLabelError as exc:
        raise ApiError(422, str(exc)) from exc


@router.get("/export", response_class=StreamingResponse)
def export(
    caller: PrincipalDep, review: ReviewDep, tenant: TenantQuery = None, since: SinceQuery = None
) -> StreamingResponse:
    """Labelled items as training pairs, one JSON object a line: ``{"query", "passage", "label"}``, label 1
    for a passage that answers the query and 0 for the other candidates shown with it."""
    owner = scope(caller, tenant)
    # The first page is read before the response starts, so that a failure still gets its status code.
    first = review.page(tenant=owner, state="labelled", since=since, limit=200)

    def lines() -> Iterator[str]:
        page = first
        while True:
            for item in page.items:
                for pair in training_pairs(item):
                    yield json.dumps(pair, ensure_ascii=False) + "\n"
            if page.next_cursor is None:
                return
            page = review.page(
                tenant=owner, state="labelled", since=since, cursor=page.next_cursor, limit=200
            )

    headers = {"Content-Disposition": 'attachment; filename="review-pairs.jsonl"'}
    return StreamingResponse(lines(), media_type="application/x-ndjson", headers=headers)


@router.post("/claim", response_model=list[ReviewItem])
def claim(
    caller: PrincipalDep,
    review: ReviewDep,
    reviewer: Annotated[str, Query(min_length=1, max_length=200, description="Who takes the items.")],
    count: Annotated[int, Query(ge=1, le=100)] = 10,
) -> list[ReviewItem]:
    """Admin only: hand up to ``count`` unlabelled items to ``reviewer``, none held by another reviewer
    (an item held for 10 minutes without a label is handed out again)."""
    if caller.tenant is not None:
        raise ApiError(403, "claiming review items needs the admin key (API_ADMIN_KEY)")
    return review.claim(reviewer, count=count)


EMBED_BATCH = 256  # queries per inference slot: a big queue does not hold the gate for seconds


@router.get("/clusters", response_model=ReviewClusters)
def clusters(
    caller: PrincipalDep,
    review: ReviewDep,
    serving: ServingDep,
    models: ModelsDep,
    tenant: TenantQuery = None,
    state: Annotated[StateFilter, Query(description="pending, labelled or all")] = "all",
    since: SinceQuery = None,
    limit: Annotated[int, Query(ge=1, le=5000, description="Cluster the N most recent items.")] = 2000,
    threshold: Annotated[
        float,
        Query(gt=0, le=2, description="Cosine distance below which queries join (average linkage)."),
    ] = DEFAULT_THRESHOLD,
    min_size: Annotated[
        int, Query(ge=1, le=5000, description="Smaller clusters go to the unclustered group.")
    ] = 2,
) -> ReviewClusters:
    """Flagged searches grouped by what they ask, largest group first: recurring gaps, with their size,
    typical queries, labelled share and mean best score."""
    owner = scope(caller, tenant)
    items, truncated = recent_items(review, tenant=owner, state=state, since=since, limit=limit)
    batch = min(EMBED_BATCH, serving.api.max_embedding_inputs or EMBED_BATCH)

    def vectors(texts: Sequence[str]) -> np.ndarray:
        parts = [
            embed(serving, models, list(texts[i : i + batch]), truncate=True, query=True)[0]
            for i in range(0, len(texts), batch)
        ]
        return np.concatenate(parts)

    name = models.embedder.name if models.embedder is not None else ""
    try:
        return cluster_items(
            items, vectors, threshold=threshold, min_size=min_size, truncated=truncated, embedder=name
        )
    except ClusteringUnavailableError as exc:
        raise ApiError(501, str(exc)) from exc


@router.get("/{item_id}", response_model=ReviewItem)
def get_item(item_id: str, caller: PrincipalDep, review: ReviewDep) -> ReviewItem:
    return item_for(review, caller, item_id)


@router.post("/{item_id}", response_model=ReviewItem)
def label_item(item_id: str, body: LabelRequest, caller: PrincipalDep, review: ReviewDep) -> ReviewItem:
    """Label the item (a new label replaces the old one)."""
    item = item_for(review, caller, item_id)
    positives = body.chunk_ids or []
    if body.indices:
        outside = [i for i in body.indices if i >= len(item.candidates)]
        if outside:
            raise ApiError(422, f"index {outside[0]} is outside the item's {len(item.candidates)} candidates")
        positives = [item.candidates[i].chunk_id for i in body.indices]
    try:
        return review.label(item_id, positives, by=caller.name)
    except ReviewNotFoundError as exc:
        raise ApiError(404, str(exc)) from exc
    except ReviewLabelError as exc:
        raise ApiError(422, str(exc)) from exc
