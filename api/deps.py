"""Dependencies of the routes: the lifespan's resources and the principal (the caller's tenant or the admin).

``get_principal`` is the one place a key is checked and the rate limit applied; ``TenantDep`` (a tenant's
key) and ``AdminDep`` (the admin key) narrow it, as full-stack-fastapi-template's ``CurrentUser`` and
``CurrentSuperuser``. The models are not here: routes read the serving snapshot through ``api.serving``.

All of them are ``async def``: they run on the event loop (a plain ``def`` would wait for a thread of the pool
that the model and search calls fill), and the rate limit asks Redis without blocking it, so 401, 403 and 429
are answered at once however busy the pool is.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from api.errors import ApiError
from api.hotswap import HotSwap
from api.principal import UNAUTHORIZED, KeyDep, Principal, identify
from api.resources import Resources
from api.review import ReviewSink
from api.search import SearchService
from ingestion.records import Records
from ingestion.uploads import Uploads


async def get_resources(request: Request) -> Resources:
    resources: Resources | None = getattr(request.state, "resources", None)
    if resources is None:
        raise ApiError(503, "the service is starting; try again shortly")
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_principal(resources: ResourcesDep, key: KeyDep) -> Principal:
    """The caller: 401 without a key or with an unknown one; a tenant within its rate limit (429 with
    ``Retry-After`` when its token bucket is empty)."""
    if key is None:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", headers=UNAUTHORIZED)
    principal = identify(resources.settings.api, key)
    if principal is None and resources.keys is not None:
        stored_tenant = await resources.keys.atenant(key)  # a key made by `sieve keys create`
        principal = Principal(stored_tenant) if stored_tenant is not None else None
    if principal is None:
        raise ApiError(401, "unknown API key", headers=UNAUTHORIZED)
    if principal.tenant is not None:
        stored_limit = await resources.keys.alimit(principal.tenant) if resources.keys is not None else None
        decision = await resources.ratelimit.acheck(principal.tenant, stored_limit)
        if not decision.allowed:
            raise ApiError(
                429,
                f"rate limit of tenant {principal.tenant!r} exceeded: {decision.limit.describe()} "
                f"(API_RATE_LIMIT_PER_S, API_RATE_LIMIT_BURST, API_RATE_LIMITS, `sieve keys limit`); "
                f"retry in {decision.retry_after_s} s",
                headers={"Retry-After": str(decision.retry_after_s)},
            )
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def get_tenant(principal: PrincipalDep) -> str:
    """The tenant of the caller's key; 403 for the admin key."""
    if principal.tenant is None:
        raise ApiError(403, "the admin key opens the review routes only; use a tenant's API key here")
    return principal.tenant


async def get_admin(principal: PrincipalDep) -> Principal:
    """The admin; 403 for a tenant's key."""
    if principal.tenant is not None:
        raise ApiError(403, "this route needs the admin key (API_ADMIN_KEY)")
    return principal


async def get_swap(resources: ResourcesDep, _: Annotated[Principal, Depends(get_admin)]) -> HotSwap:
    """The hot swap of the API, for the admin key only."""
    return resources.swap


async def get_search(resources: ResourcesDep) -> SearchService:
    return resources.search


async def get_uploads(resources: ResourcesDep) -> Uploads:
    return resources.uploads


async def get_records(resources: ResourcesDep) -> Records:
    return resources.records


async def get_review(resources: ResourcesDep) -> ReviewSink:
    return resources.review


TenantDep = Annotated[str, Depends(get_tenant)]
AdminDep = Annotated[Principal, Depends(get_admin)]
SwapDep = Annotated[HotSwap, Depends(get_swap)]
SearchDep = Annotated[SearchService, Depends(get_search)]
UploadsDep = Annotated[Uploads, Depends(get_uploads)]
RecordsDep = Annotated[Records, Depends(get_records)]
ReviewDep = Annotated[ReviewSink, Depends(get_review)]
