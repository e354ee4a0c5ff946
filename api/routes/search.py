"""The search API: one call into the search pipeline (``api.search``) on the serving model snapshot."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import SearchDep, TenantDep
from api.search_models import SearchRequest, SearchResult
from api.serving import ModelsDep

router = APIRouter(prefix="/v1", tags=["search"])


@router.post("/search", response_model=SearchResult)
def search(request: SearchRequest, tenant: TenantDep, service: SearchDep, models: ModelsDep) -> SearchResult:
    """Top ``candidates`` from the vector store, reordered by the rerank stage, cut to ``top_k``."""
    return service.search(models, tenant, request)
