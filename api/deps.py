"""Dependencies of the routes: the lifespan's resources and the caller's tenant."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from api.cache import SearchCache
from api.errors import ApiError
from api.resources import Resources
from api.review import ReviewSink
from api.search import SearchService
from ingestion.records import Records
from ingestion.uploads import Uploads


def get_resources(request: Request) -> Resources:
    resources: Resources | None = getattr(request.state, "resources", None)
    if resources is None:
        raise ApiError(503, "the service is starting; try again shortly")
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_search(resources: ResourcesDep) -> SearchService:
    if resources.swap is not None:
        resources.swap.refresh()  # a rebuilt index switched in? (throttled; followed in the background)
    return resources.search


def get_uploads(resources: ResourcesDep) -> Uploads:
    return resources.uploads


def get_records(resources: ResourcesDep) -> Records:
    return resources.records


UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


def api_key(authorization: str | None, x_api_key: str | None) -> str:
    """The key in ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``; 401 without one."""
    key = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", headers=UNAUTHORIZED)
    return key


def tenant_of_key(resources: Resources, key: str) -> str | None:
    for known, tenant in resources.settings.api.keys.items():
        if secrets.compare_digest(known.encode(), key.encode()):
            return tenant
    return None


def is_admin_key(resources: Resources, key: str) -> bool:
    admin = resources.settings.api.admin_key
    return bool(admin) and secrets.compare_digest(admin.encode(), key.encode())


def enforce_rate_limit(resources: Resources, tenant: str) -> None:
    """429 with ``Retry-After`` when the tenant's token bucket is empty."""
    decision = resources.ratelimit.check(tenant)
    if not decision.allowed:
        raise ApiError(
            429,
            f"rate limit of tenant {tenant!r} exceeded: {decision.limit.describe()} (API_RATE_LIMIT_PER_S, "
            f"API_RATE_LIMIT_BURST, API_RATE_LIMITS); retry in {decision.retry_after_s} s",
            headers={"Retry-After": str(decision.retry_after_s)},
        )


def get_tenant(
    resources: ResourcesDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    """The tenant of the caller's API key, within the tenant's rate limit."""
    key = api_key(authorization, x_api_key)
    tenant = tenant_of_key(resources, key)
    if tenant is None:
        if is_admin_key(resources, key):
            raise ApiError(403, "the admin key opens the review routes only; use a tenant's API key here")
        raise ApiError(401, "unknown API key", headers=UNAUTHORIZED)
    enforce_rate_limit(resources, tenant)
    return tenant


async def get_cache(resources: ResourcesDep) -> SearchCache:  # async: no trip to the thread pool
    return resources.cache


async def get_review(resources: ResourcesDep) -> ReviewSink:
    return resources.review


SearchDep = Annotated[SearchService, Depends(get_search)]
UploadsDep = Annotated[Uploads, Depends(get_uploads)]
RecordsDep = Annotated[Records, Depends(get_records)]
TenantDep = Annotated[str, Depends(get_tenant)]
CacheDep = Annotated[SearchCache, Depends(get_cache)]
ReviewDep = Annotated[ReviewSink, Depends(get_review)]
