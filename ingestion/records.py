"""Job and document records kept in Redis (the job store and the document registry).

Redis is started with an append-only file by the embedded stack, so records survive restarts.
Keys (all under ``sieve:``):
- ``job:{id}``                hash: tenant, document_id, version, filename, path, state, chunks_done,
                              chunks_total, error, enqueued, kind (ingest/delete), times
- ``doc:{tenant}:{document_id}``  hash: filename, metadata (JSON), latest (last accepted version),
                              active (version served by search; empty while none), state, chunks, times
- ``docs:{tenant}``           set of document ids
- ``jobs:pending``            job ids accepted but not yet confirmed enqueued (re-sent at API start)
- ``index_version:{tenant}``  counter bumped whenever what search serves for the tenant changes (a version
                              activated, a document deleted); cached search results are keyed by it
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, Field

from ingestion.errors import DocumentNotFoundError, QueueUnavailableError

PREFIX = "sieve:"
# What redis-py's stubs accept as a hash mapping (keys and values of a Mapping are invariant).
Fields = dict[
    str | bytes | bytearray | memoryview | int | float, str | bytes | bytearray | memoryview | int | float
]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Job(BaseModel):
    id: str
    kind: str = "ingest"
    tenant: str
    document_id: str
    version: str = ""
    filename: str = ""
    path: str = ""
    state: JobState = JobState.QUEUED
    chunks_done: int = 0
    chunks_total: int = 0
    attempts: int = 0
    error: str = ""
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)


class Document(BaseModel):
    tenant: str
    document_id: str
    filename: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)
    latest: str = ""
    active: str = ""
    chunks: int = 0
    last_job: str = ""
    deleted: bool = False
    updated_at: float = Field(default_factory=time.time)


def _redis_call(fn: Any) -> Any:
    try:
        return fn()
    except redis.RedisError as exc:
        raise QueueUnavailableError(f"Redis is unreachable: {exc}") from exc


class Records:
    """Job store and document registry over one Redis connection pool."""

    def __init__(self, redis_url: str, *, client: redis.Redis | None = None) -> None:
        self.redis_url = redis_url
        self._r: redis.Redis = client or redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )

    @property
    def client(self) -> redis.Redis:
        """The Redis connection, shared by the API's cache, rate limiter and review queue."""
        return self._r

    def index_version_key(self, tenant: str) -> str:
        return f"{PREFIX}index_version:{tenant}"

    def bump_index_version(self, tenant: str) -> int:
        """Record that what search serves for ``tenant`` changed: older cached results go unread."""
        return int(_redis_call(lambda: self._r.incr(self.index_version_key(tenant))))

    # -- jobs -----------------------------------------------------------------------------------
    def mark_enqueued(self, job_id: str) -> None:
        _redis_call(lambda: self._r.srem(f"{PREFIX}jobs:pending", job_id))

    def pending_jobs(self) -> list[str]:
        return sorted(_redis_call(lambda: self._r.smembers(f"{PREFIX}jobs:pending")))

    def get_job(self, job_id: str, tenant: str | None = None) -> Job:
        data = _redis_call(lambda: self._r.hgetall(f"{PREFIX}job:{job_id}"))
        if not data or (tenant is not None and data.get("tenant") != tenant):
            raise DocumentNotFoundError(f"no job {job_id!r}")
        return Job.model_validate(data)

    def update_job(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        mapping: Fields = {k: (v.value if isinstance(v, JobState) else str(v)) for k, v in fields.items()}
        _redis_call(lambda: self._r.hset(f"{PREFIX}job:{job_id}", mapping=mapping))

    # -- documents ------------------------------------------------------------------------------
    def _doc_key(self, tenant: str, document_id: str) -> str:
        return f"{PREFIX}doc:{tenant}:{document_id}"

    def accept_upload(
        self,
        tenant: str,
        document_id: str,
        *,
        version: str,
        filename: str,
        path: str,
        metadata: dict[str, Any],
        unchanged_chunks: int | None = None,
    ) -> Job:
        """Record an accepted upload and its job in one transaction; the upload becomes the latest version.

        ``unchanged_chunks`` marks a re-upload of the version already served: its job is done at once.
        """
        job = Job(
            tenant=tenant,
            document_id=document_id,
            version=version,
            filename=filename,
            path=path,
            id=uuid.uuid4().hex,
        )
        if unchanged_chunks is not None:
            job.state = JobState.DONE
            job.chunks_done = job.chunks_total = unchanged_chunks
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}job:{job.id}", mapping=_job_mapping(job))
        if unchanged_chunks is None:
            pipe.sadd(f"{PREFIX}jobs:pending", job.id)
        pipe.hset(
            self._doc_key(tenant, document_id),
            mapping={
                "tenant": tenant,
                "document_id": document_id,
                "filename": filename,
                "metadata": json.dumps(metadata),
                "latest": version,
                "last_job": job.id,
                "deleted": "",
                "updated_at": str(time.time()),
            },
        )
        pipe.sadd(f"{PREFIX}docs:{tenant}", document_id)
        _redis_call(pipe.execute)
        return job

    def activate(self, tenant: str, document_id: str, version: str, chunks: int) -> bool:
        """Make ``version`` the one search serves, if it is still the latest accepted one.

        One atomic check-and-set (WATCH/MULTI), so an older job finishing late never overrides a newer upload
        and a deleted document is never resurrected. Returns whether the version was activated.
        """
        key = self._doc_key(tenant, document_id)

        def txn(pipe: redis.client.Pipeline) -> bool:
            latest, deleted = pipe.hmget(key, ["latest", "deleted"])
            pipe.multi()
            if latest != version or deleted:
                return False
            active: Fields = {"active": version, "chunks": str(chunks), "updated_at": str(time.time())}
            pipe.hset(key, mapping=active)
            return True

        # redis' stubs type the callable as returning None; value_from_callable returns what it returns
        return bool(_redis_call(lambda: self._r.transaction(txn, key, value_from_callable=True)))  # type: ignore[arg-type]

    def request_delete(self, tenant: str, document_id: str) -> Job:
        """Hide a document from search at once and record the job that removes its chunks."""
        key = self._doc_key(tenant, document_id)
        data = _redis_call(lambda: self._r.hgetall(key))
        if not data or data.get("deleted"):
            raise DocumentNotFoundError(f"no document {document_id!r}")
        job = Job(id=uuid.uuid4().hex, kind="delete", tenant=tenant, document_id=document_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(f"{PREFIX}job:{job.id}", mapping=_job_mapping(job))
        pipe.sadd(f"{PREFIX}jobs:pending", job.id)
        hidden: Fields = {"deleted": "1", "active": "", "latest": "", "last_job": job.id}
        pipe.hset(key, mapping=hidden)
        pipe.incr(self.index_version_key(tenant))  # gone from search, and from cached results, at once
        _redis_call(pipe.execute)
        return job

    def forget(self, tenant: str, document_id: str) -> None:
        """Drop a deleted document's record once its chunks are gone (unless it was re-uploaded)."""
        key = self._doc_key(tenant, document_id)

        def txn(pipe: redis.client.Pipeline) -> None:
            deleted = pipe.hget(key, "deleted")
            pipe.multi()
            if deleted:
                pipe.delete(key)
                pipe.srem(f"{PREFIX}docs:{tenant}", document_id)

        _redis_call(lambda: self._r.transaction(txn, key))

    def get_document(self, tenant: str, document_id: str) -> Document:
        data = _redis_call(lambda: self._r.hgetall(self._doc_key(tenant, document_id)))
        if not data or data.get("deleted"):
            raise DocumentNotFoundError(f"no document {document_id!r}")
        return _document(data)

    def list_documents(self, tenant: str) -> list[Document]:
        ids = sorted(_redis_call(lambda: self._r.smembers(f"{PREFIX}docs:{tenant}")))
        pipe = self._r.pipeline()
        for document_id in ids:
            pipe.hgetall(self._doc_key(tenant, document_id))
        rows = _redis_call(pipe.execute) if ids else []
        return [_document(row) for row in rows if row and not row.get("deleted")]

    def tenants(self) -> list[str]:
        """Every tenant that has (or had) documents in the registry."""
        keys = _redis_call(lambda: list(self._r.scan_iter(match=f"{PREFIX}docs:*", count=500)))
        return sorted({key.removeprefix(f"{PREFIX}docs:") for key in keys})

    def active_versions(self, tenant: str, document_ids: Iterable[str]) -> dict[str, str]:
        """The version search may serve for each document (missing or deleted: absent)."""
        ids: Sequence[str] = list(dict.fromkeys(document_ids))
        if not ids:
            return {}
        pipe = self._r.pipeline()
        for document_id in ids:
            pipe.hget(self._doc_key(tenant, document_id), "active")
        values = _redis_call(pipe.execute)
        return {d: v for d, v in zip(ids, values, strict=True) if v}

    def ping(self) -> None:
        _redis_call(self._r.ping)

    def close(self) -> None:
        self._r.close()


def _job_mapping(job: Job) -> Fields:
    return {k: (v.value if isinstance(v, JobState) else str(v)) for k, v in job.model_dump().items()}


def _document(data: dict[str, str]) -> Document:
    return Document(
        tenant=data.get("tenant", ""),
        document_id=data.get("document_id", ""),
        filename=data.get("filename", ""),
        metadata=json.loads(data.get("metadata") or "{}"),
        latest=data.get("latest", ""),
        active=data.get("active", ""),
        chunks=int(data.get("chunks") or 0),
        last_job=data.get("last_job", ""),
        deleted=bool(data.get("deleted")),
        updated_at=float(data.get("updated_at") or 0),
    )
