"""Dependencies of the routes: the lifespan's resources and the caller's tenant."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from api.errors import ApiError
from api.resources import Resources
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
    return resources.search


def get_uploads(resources: ResourcesDep) -> Uploads:
    return resources.uploads


def get_records(resources: ResourcesDep) -> Records:
    return resources.records


def get_tenant(
    resources: ResourcesDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str:
    """The tenant of the API key in ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    key = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    if not key:
        raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", headers={"WWW-Authenticate": "Bearer"})
    for known, tenant in resources.settings.api.keys.items():
        if secrets.compare_digest(known.encode(), key.encode()):
            return tenant
    raise ApiError(401, "unknown API key", headers={"WWW-Authenticate": "Bearer"})


SearchDep = Annotated[SearchService, Depends(get_search)]
UploadsDep = Annotated[Uploads, Depends(get_uploads)]
RecordsDep = Annotated[Records, Depends(get_records)]
TenantDep = Annotated[str, Depends(get_tenant)]
