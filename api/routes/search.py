"""The search API: bounds checked on the event loop, a slot of the search queue (``API_SEARCH_*``) taken on
the event loop, then the pipeline (``api.search``) in a thread on the serving model snapshot. A request that
gets no slot is answered 429 with ``Retry-After`` without ever waiting for a thread."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from api.deps import SearchDep, TenantDep
from api.search import BoundedSearch, SearchService
from api.search_models import SearchRequest, SearchResult
from api.serving import ModelsDep
from api.snapshot import ModelSnapshot

router = APIRouter(prefix="/v1", tags=["search"])


def _answer(service: SearchService, models: ModelSnapshot, tenant: str, request: BoundedSearch) -> Response:
    """The search and its JSON, both in the worker thread (an ``async`` route's return value would be
    validated and serialised on the event loop)."""
    result = service.run(models, tenant, request)
    return Response(result.model_dump_json(), media_type="application/json")


@router.post("/search", response_model=SearchResult)
async def search(
    request: SearchRequest, tenant: TenantDep, service: SearchDep, models: ModelsDep
) -> Response:
    """Top ``candidates`` from the vector store, reordered by the rerank stage, cut to ``top_k``."""
    bounded = service.bounded(request)  # 422 before the store or a model is touched
    async with service.admission.admit():
        return await run_in_threadpool(_answer, service, models, tenant, bounded)
