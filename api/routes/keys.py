"""Tenant API keys stored in Redis (``api.tenant_keys``), for the admin key only:

- ``POST /v1/admin/keys`` ``{tenant, rate?, burst?}``: a new key, shown once in the answer (201);
- ``GET /v1/admin/keys``: the stored keys (id, tenant, created_at; never the key) and the tenants' limits;
- ``DELETE /v1/admin/keys/{id}``: revoke by id (or the key itself): 401 for it from the next request;
- ``PUT /v1/admin/limits/{tenant}`` ``{rate, burst?}``: the tenant's rate limit (0: none).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.deps import AdminDep, ResourcesDep
from api.errors import ApiError
from api.tenant_keys import KeyRequestError, TenantKeys

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class KeyCreate(BaseModel):
    tenant: str = Field(description="The tenant the key acts for.")
    rate: float | None = Field(None, ge=0, description="The tenant's requests per second (0: no limit).")
    burst: int | None = Field(None, ge=0, description="The tenant's burst (default: twice the rate).")


class LimitSet(BaseModel):
    rate: float = Field(ge=0)
    burst: int | None = Field(None, ge=0)


def _store(resources: Any) -> TenantKeys:
    if resources.keys is None:
        raise ApiError(503, "stored keys are not available in this API")
    return resources.keys  # type: ignore[no-any-return]


@router.post("/keys", status_code=201)
def create_key(body: KeyCreate, _: AdminDep, resources: ResourcesDep) -> dict[str, Any]:
    """A new key of the tenant; the key is in this answer only (it is stored hashed)."""
    try:
        key, stored = _store(resources).create(body.tenant, rate=body.rate, burst=body.burst)
    except KeyRequestError as exc:
        raise ApiError(422, str(exc)) from exc
    return {"key": key, "id": stored.id, "tenant": stored.tenant, "created_at": stored.created_at}


@router.get("/keys")
def list_keys(_: AdminDep, resources: ResourcesDep) -> dict[str, Any]:
    store = _store(resources)
    return {
        "keys": [vars(k) for k in store.list()],
        "limits": {t: {"rate": lim.rate, "burst": lim.burst} for t, lim in store.limits().items()},
    }


@router.delete("/keys/{key_id}")
def revoke_key(key_id: str, _: AdminDep, resources: ResourcesDep) -> dict[str, Any]:
    try:
        stored = _store(resources).revoke(key_id)
    except KeyRequestError as exc:
        raise ApiError(404, str(exc)) from exc
    return {"revoked": stored.id, "tenant": stored.tenant}


@router.put("/limits/{tenant}")
def set_limit(tenant: str, body: LimitSet, _: AdminDep, resources: ResourcesDep) -> dict[str, Any]:
    try:
        limit = _store(resources).set_limit(tenant, body.rate, body.burst)
    except KeyRequestError as exc:
        raise ApiError(422, str(exc)) from exc
    return {"tenant": tenant, "rate": limit.rate, "burst": limit.burst}
