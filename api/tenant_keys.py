"""Tenant API keys kept in the stack's Redis, beside ``API_KEYS``: created, listed and revoked at run time
(``sieve keys``, ``/v1/admin/keys``), usable at once without restarting the API.

A key is stored only as its SHA-256 (``sieve:apikeys``: digest -> ``{tenant, id, created_at}``); the key
itself is shown once, on creation. ``id`` (the digest's first 12 hex digits) names a key in lists and
revocations. A tenant's rate limit set here (``sieve:tenant_limits``: tenant -> ``[rate, burst]``) wins over
``API_RATE_LIMITS`` and the default, for every key of that tenant. The API reads both through the asyncio
client the rate limiter uses, so a key check never blocks the event loop."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Any

import redis
import redis.asyncio

from api.ratelimit import Limit
from ingestion import keyspace

logger = logging.getLogger(__name__)

KEYS_HASH = f"{keyspace.PREFIX}apikeys"
LIMITS_HASH = f"{keyspace.PREFIX}tenant_limits"
KEY_PREFIX = "sk-"
_TENANT = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class KeyRequestError(ValueError):
    """A key request the store refuses (bad tenant name, bad rate, unknown key id)."""


@dataclass(frozen=True)
class StoredKey:
    id: str
    tenant: str
    created_at: float


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def check_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise KeyRequestError("tenant must be 1-64 characters of letters, digits, '_', '.', '@' or '-'")
    return tenant


def check_limit(rate: float, burst: int | None) -> Limit:
    if rate < 0 or (burst is not None and burst < 0):
        raise KeyRequestError("rate and burst must be >= 0 (0: no limit)")
    return Limit(rate, burst if burst is not None else max(1, round(2 * rate)))


class TenantKeys:
    def __init__(self, client: redis.Redis, *, aclient: redis.asyncio.Redis | None = None) -> None:
        self._r = client
        self._a = aclient

    def create(
        self, tenant: str, *, rate: float | None = None, burst: int | None = None
    ) -> tuple[str, StoredKey]:
        """A new key of ``tenant`` (returned once, stored hashed) and its record; sets the tenant's rate
        limit when ``rate`` is given."""
        check_tenant(tenant)
        limit = check_limit(rate, burst) if rate is not None else None
        key = KEY_PREFIX + secrets.token_urlsafe(24)
        h = digest(key)
        stored = StoredKey(id=h[:12], tenant=tenant, created_at=time.time())
        self._r.hset(KEYS_HASH, h, json.dumps(asdict(stored)))
        if limit is not None:
            self.set_limit(tenant, limit.rate, limit.burst)
        return key, stored

    def list(self) -> list[StoredKey]:
        raw: dict[Any, Any] = self._r.hgetall(KEYS_HASH)  # type: ignore[assignment]
        keys = [StoredKey(**json.loads(v)) for v in raw.values()]
        return sorted(keys, key=lambda k: (k.tenant, k.created_at))

    def limits(self) -> dict[str, Limit]:
        raw: dict[Any, Any] = self._r.hgetall(LIMITS_HASH)  # type: ignore[assignment]
        return {_text(t): Limit(*json.loads(v)) for t, v in raw.items()}

    def revoke(self, key_or_id: str) -> StoredKey:
        """Revoke by the key itself or its id; ``KeyRequestError`` when no stored key matches."""
        raw: dict[Any, Any] = self._r.hgetall(KEYS_HASH)  # type: ignore[assignment]
        full = digest(key_or_id)
        for h, value in raw.items():
            h = _text(h)
            if h == full or (len(key_or_id) >= 6 and h.startswith(key_or_id)):
                self._r.hdel(KEYS_HASH, h)
                return StoredKey(**json.loads(value))
        raise KeyRequestError(f"no stored key {key_or_id!r} (`sieve keys list` shows the ids)")

    def set_limit(self, tenant: str, rate: float, burst: int | None = None) -> Limit:
        check_tenant(tenant)
        limit = check_limit(rate, burst)
        self._r.hset(LIMITS_HASH, tenant, json.dumps([limit.rate, limit.burst]))
        return limit

    async def atenant(self, key: str) -> str | None:
        """The tenant of a stored key, else None (also when Redis cannot answer: the key is then unknown)."""
        value = await self._ahget(KEYS_HASH, digest(key))
        return str(json.loads(value)["tenant"]) if value else None

    async def alimit(self, tenant: str) -> Limit | None:
        """The tenant's rate limit set here, else None."""
        value = await self._ahget(LIMITS_HASH, tenant)
        return Limit(*json.loads(value)) if value else None

    async def _ahget(self, name: str, field: str) -> Any:
        try:
            if self._a is None:  # an in-memory client (tests): inline
                return self._r.hget(name, field)
            return await self._a.hget(name, field)
        except redis.RedisError as exc:
            logger.warning("stored API keys unavailable: %s", exc)
            return None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
