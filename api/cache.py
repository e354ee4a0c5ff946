"""A Redis cache of search results, per tenant and per index version.

Key: ``sieve:cache:{tenant}:{sha256}`` of (tenant, the tenant's index version, the normalised query (NFKC,
casefolded, whitespace collapsed), top_k, candidates, the filters sorted, the instruction, the embedder's and
the reranker's names). Ingestion bumps ``sieve:index_version:{tenant}`` when a version is activated and when a
document is deleted, so a result computed before the change is never read again (it expires with its TTL).
The tenant is in the key and in the stored value, and a read checks it: one tenant never gets another's entry.

The cache is an optimisation: when Redis fails the search runs uncached (a warning is logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

import redis

from api.search_models import SearchRequest
from ingestion import keyspace

logger = logging.getLogger(__name__)

SPACES = re.compile(r"\s+")


def normalise_query(query: str) -> str:
    """The form two queries share when they are the same question: NFKC, casefolded, single spaces."""
    return SPACES.sub(" ", unicodedata.normalize("NFKC", query).casefold()).strip()


@dataclass(frozen=True, slots=True)
class CacheKey:
    tenant: str
    key: str


class SearchCache:
    """``lookup`` (key + cached JSON) before a search, ``put`` after it; ``ttl_s == 0`` disables both."""

    def __init__(self, client: redis.Redis, *, ttl_s: int) -> None:
        self._r = client
        self.ttl_s = ttl_s

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def index_version(self, tenant: str) -> int:
        return int(self._r.get(keyspace.index_version(tenant)) or 0)

    def key(
        self, tenant: str, request: SearchRequest, *, version: int, embedder: str, reranker: str
    ) -> CacheKey:
        parts: list[Any] = [
            tenant,
            version,
            normalise_query(request.query),
            request.top_k,
            request.candidates,
            sorted(request.filters.items()),
            request.instruction,
            request.mode,
            request.fusion,
            embedder,
            reranker,
        ]
        digest = hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()
        return CacheKey(tenant, keyspace.cache_entry(tenant, digest))

    def lookup(
        self, tenant: str, request: SearchRequest, *, embedder: str, reranker: str
    ) -> tuple[CacheKey | None, dict[str, Any] | None]:
        """The key for this search at the tenant's current index version, and the cached response if any.

        The version is read before the search runs, so a result stored under it can only be older than a
        bump that follows, never newer: a bump makes every later lookup use a new key.
        """
        if not self.enabled:
            return None, None
        try:
            key = self.key(
                tenant, request, version=self.index_version(tenant), embedder=embedder, reranker=reranker
            )
            raw = self._r.get(key.key)
        except redis.RedisError as exc:
            logger.warning("search cache unavailable, searching uncached: %s", exc)
            return None, None
        if raw is None:
            return key, None
        try:
            entry = json.loads(raw)
        except ValueError:
            return key, None
        if not isinstance(entry, dict) or entry.get("tenant") != tenant:
            logger.warning("search cache entry %s belongs to another tenant; ignored", key.key)
            return key, None
        response = entry.get("response")
        return key, response if isinstance(response, dict) else None

    def put(self, key: CacheKey, response: dict[str, Any]) -> None:
        if not self.enabled:
            return
        value = json.dumps({"tenant": key.tenant, "response": response}, ensure_ascii=False)
        try:
            self._r.set(key.key, value, ex=self.ttl_s)
        except redis.RedisError as exc:
            logger.warning("could not store a search result in the cache: %s", exc)
