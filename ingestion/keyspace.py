"""Every Redis key Sieve uses, and the one wrapper that turns a Redis failure into ``RedisUnavailableError``.

Ingestion writes the records, the API reads them and keeps its own keys beside them in the same Redis, so
the key names live here, in the lowest package that uses them. All keys are under ``sieve:``.

Ingestion (``ingestion.records``, ``ingestion.indexes``):
- ``job:{id}``                    hash: one ingest or delete job
- ``jobs:pending``                set: jobs accepted but not yet confirmed enqueued (re-sent at API start)
- ``jobs:running``                sorted set: running jobs by their last heartbeat (stale ones are re-queued)
- ``jobs:sweep``                  the lock of the worker sweeping stale jobs (expires by itself)
- ``doc:{tenant}:{document_id}``  hash: a document's registry record (latest and active version, ...)
- ``docs:{tenant}``               set: the tenant's document ids
- ``index_version:{tenant}``      counter: bumped whenever what search serves for the tenant changes (a
                                  version activated, a document deleted, a rerank gate decision stored);
                                  cached search results are keyed by it
- ``index:serving`` / ``index:previous`` / ``index:build`` / ``index:generation``: the serving index, the one
                                  before the last switch, the rebuild record, the switch counter

API (``api.cache``, ``api.gate_store``, ``api.ratelimit``, ``api.review``):
- ``cache:{tenant}:{digest}``     a cached search response
- ``gate:{tenant}``               the tenant's rerank gate decision (JSON)
- ``ratelimit:{tenant}``          the tenant's token bucket
- ``review`` / ``review:labels``  the review stream and its labels
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from ingestion.errors import RedisUnavailableError

PREFIX = "sieve:"

PENDING_JOBS = f"{PREFIX}jobs:pending"
RUNNING_JOBS = f"{PREFIX}jobs:running"
SWEEP_LOCK = f"{PREFIX}jobs:sweep"
INDEX_SERVING = f"{PREFIX}index:serving"
INDEX_PREVIOUS = f"{PREFIX}index:previous"
INDEX_BUILD = f"{PREFIX}index:build"
INDEX_GENERATION = f"{PREFIX}index:generation"
REVIEW_STREAM = f"{PREFIX}review"
REVIEW_LABELS = f"{PREFIX}review:labels"


def job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def document(tenant: str, document_id: str) -> str:
    return f"{PREFIX}doc:{tenant}:{document_id}"


def documents(tenant: str) -> str:
    return f"{PREFIX}docs:{tenant}"


DOCUMENTS_PATTERN = documents("*")  # SCAN match of every tenant's document set


def tenant_of_documents(key: str) -> str:
    """The tenant of a ``documents(tenant)`` key."""
    return key.removeprefix(documents(""))


def index_version(tenant: str) -> str:
    return f"{PREFIX}index_version:{tenant}"


def cache_entry(tenant: str, digest: str) -> str:
    return f"{PREFIX}cache:{tenant}:{digest}"


def gate(tenant: str) -> str:
    return f"{PREFIX}gate:{tenant}"


def ratelimit(tenant: str) -> str:
    return f"{PREFIX}ratelimit:{tenant}"


def redis_call(fn: Callable[[], Any]) -> Any:
    """Run one Redis call (or a pipeline's ``execute``); a Redis failure becomes ``RedisUnavailableError``.

    redis-py types its replies loosely, so they come back as ``Any``."""
    try:
        return fn()
    except redis.RedisError as exc:
        raise RedisUnavailableError(f"Redis is unreachable: {exc}") from exc
