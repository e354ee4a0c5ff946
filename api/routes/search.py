"""The search API."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SearchDep, TenantDep
from api.search import SearchRequest, SearchResponse

router = APIRouter(prefix="/v1", tags=["search"])


@router.post("/search", response_model=SearchResponse)
def search(request: SearchRequest, tenant: TenantDep, service: SearchDep) -> SearchResponse:
    """Top ``candidates`` from the vector store, reordered by the rerank stage, cut to ``top_k``."""
    return service.search(tenant, request)
