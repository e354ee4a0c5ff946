"""Who calls: the API key of a request (``Authorization: Bearer KEY`` or ``X-API-Key: KEY``) resolved to a
tenant or the admin (``API_KEYS``, ``API_ADMIN_KEY``). The dependencies built on it are in ``api.deps``.

Every dependency here is ``async def`` and does no I/O: FastAPI runs a plain ``def`` dependency in the thread
pool, and a key check must never wait behind model calls that fill it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header

from api.serving import ServingDep
from api.settings import ApiSettings

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str | None  # None: the admin

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    @property
    def name(self) -> str:
        return "admin" if self.tenant is None else self.tenant


async def presented_key(
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> str | None:
    """The key in ``Authorization: Bearer KEY`` (first) or ``X-API-Key: KEY``; None without one."""
    key = x_api_key
    if authorization and authorization.lower().startswith("bearer "):
        key = authorization[7:].strip()
    return key or None


KeyDep = Annotated[str | None, Depends(presented_key)]


def _same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode(), b.encode())


def identify(settings: ApiSettings, key: str) -> Principal | None:
    """The tenant whose key it is, else the admin if it is the admin key, else None."""
    for known, tenant in settings.keys.items():
        if _same(known, key):
            return Principal(tenant)
    if settings.admin_key and _same(settings.admin_key, key):
        return Principal(None)
    return None


async def get_key_tenant(serving: ServingDep, key: KeyDep) -> str | None:
    """The tenant of the caller's key, if it is one; never an error and no rate limit (``/info``)."""
    principal = identify(serving.api, key) if key else None
    return principal.tenant if principal is not None else None


KeyTenantDep = Annotated[str | None, Depends(get_key_tenant)]
