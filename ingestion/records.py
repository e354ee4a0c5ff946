"""Job and document records kept in Redis (the job store and the document registry).

Redis is started with an append-only file by the embedded stack, so records survive restarts.
Keys (named in ``ingestion.keyspace``):
- ``job:{id}``                hash: tenant, document_id, version, filename, path, state, chunks_done,
                              chunks_total, error, enqueued, kind (ingest/delete), times
- ``doc:{tenant}:{document_id}``  hash: filename, metadata (JSON), latest (last accepted version),
                              active (version served by search; empty while none), state, chunks, times
- ``docs:{tenant}``           set of document ids
- ``jobs:pending``            job ids accepted but not yet confirmed enqueued (re-sent at API start)
- ``index_version:{tenant}``  counter bumped whenever what search serves for the tenant changes (a version
                              activated, a document deleted); cached search results are keyed by it

A ``DocumentVersion`` is what the pipeline indexes: one stored file of one version of a document. A job
names one (``Job.document_version``); a rebuild names the active version of each document.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, Field

from ingestion import keyspace
from ingestion.errors import DocumentNotFoundError
from ingestion.keyspace import redis_call

# What redis-py's stubs accept as a hash mapping (keys and values of a Mapping are invariant).
Fields = dict[
    str | bytes | bytearray | memoryview | int | float, str | bytes | bytearray | memoryview | int | float
]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DocumentVersion:
    """One version of a document and its stored file: what ``ingestion.pipeline`` indexes."""

    tenant: str
    document_id: str
    version: str
    filename: str
    path: str


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

    @property
    def document_version(self) -> DocumentVersion:
        """The document version an ingest job indexes."""
        return DocumentVersion(self.tenant, self.document_id, self.version, self.filename, self.path)


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

    def bump_index_version(self, tenant: str) -> int:
        """Record that what search serves for ``tenant`` changed: older cached results go unread."""
        return int(redis_call(lambda: self._r.incr(keyspace.index_version(tenant))))

    # -- jobs -----------------------------------------------------------------------------------
    def mark_enqueued(self, job_id: str) -> None:
        redis_call(lambda: self._r.srem(keyspace.PENDING_JOBS, job_id))

    def pending_jobs(self) -> list[str]:
        return sorted(redis_call(lambda: self._r.smembers(keyspace.PENDING_JOBS)))

    def get_job(self, job_id: str, tenant: str | None = None) -> Job:
        data = redis_call(lambda: self._r.hgetall(keyspace.job(job_id)))
        if not data or (tenant is not None and data.get("tenant") != tenant):
            raise DocumentNotFoundError(f"no job {job_id!r}")
        return Job.model_validate(data)

    def update_job(self, job_id: str, **fields: Any) -> None:
        fields["updated_at"] = time.time()
        mapping: Fields = {k: (v.value if isinstance(v, JobState) else str(v)) for k, v in fields.items()}
        redis_call(lambda: self._r.hset(keyspace.job(job_id), mapping=mapping))

    # -- documents ------------------------------------------------------------------------------
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
        pipe.hset(keyspace.job(job.id), mapping=_job_mapping(job))
        if unchanged_chunks is None:
            pipe.sadd(keyspace.PENDING_JOBS, job.id)
        pipe.hset(
            keyspace.document(tenant, document_id),
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
        pipe.sadd(keyspace.documents(tenant), document_id)
        redis_call(pipe.execute)
        return job

    def activate(self, tenant: str, document_id: str, version: str, chunks: int) -> bool:
        """Make ``version`` the one search serves, if it is still the latest accepted one.

        One atomic check-and-set (WATCH/MULTI), so an older job finishing late never overrides a newer upload
        and a deleted document is never resurrected. Returns whether the version was activated.
        """
        key = keyspace.document(tenant, document_id)

        def txn(pipe: redis.client.Pipeline) -> bool:
            latest, deleted = pipe.hmget(key, ["latest", "deleted"])
            pipe.multi()
            if latest != version or deleted:
                return False
            active: Fields = {"active": version, "chunks": str(chunks), "updated_at": str(time.time())}
            pipe.hset(key, mapping=active)
            return True

        # redis' stubs type the callable as returning None; value_from_callable returns what it returns
        return bool(redis_call(lambda: self._r.transaction(txn, key, value_from_callable=True)))  # type: ignore[arg-type]

    def request_delete(self, tenant: str, document_id: str) -> Job:
        """Hide a document from search at once and record the job that removes its chunks."""
        key = keyspace.document(tenant, document_id)
        data = redis_call(lambda: self._r.hgetall(key))
        if not data or data.get("deleted"):
            raise DocumentNotFoundError(f"no document {document_id!r}")
        job = Job(id=uuid.uuid4().hex, kind="delete", tenant=tenant, document_id=document_id)
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(keyspace.job(job.id), mapping=_job_mapping(job))
        pipe.sadd(keyspace.PENDING_JOBS, job.id)
        hidden: Fields = {"deleted": "1", "active": "", "latest": "", "last_job": job.id}
        pipe.hset(key, mapping=hidden)
        pipe.incr(keyspace.index_version(tenant))  # gone from search, and from cached results, at once
        redis_call(pipe.execute)
        return job

    def forget(self, tenant: str, document_id: str) -> None:
        """Drop a deleted document's record once its chunks are gone (unless it was re-uploaded)."""
        key = keyspace.document(tenant, document_id)

        def txn(pipe: redis.client.Pipeline) -> None:
            deleted = pipe.hget(key, "deleted")
            pipe.multi()
            if deleted:
                pipe.delete(key)
                pipe.srem(keyspace.documents(tenant), document_id)

        redis_call(lambda: self._r.transaction(txn, key))

    def get_document(self, tenant: str, document_id: str) -> Document:
        data = redis_call(lambda: self._r.hgetall(keyspace.document(tenant, document_id)))
        if not data or data.get("deleted"):
            raise DocumentNotFoundError(f"no document {document_id!r}")
        return _document(data)

    def list_documents(self, tenant: str) -> list[Document]:
        ids = sorted(redis_call(lambda: self._r.smembers(keyspace.documents(tenant))))
        pipe = self._r.pipeline()
        for document_id in ids:
            pipe.hgetall(keyspace.document(tenant, document_id))
        rows = redis_call(pipe.execute) if ids else []
        return [_document(row) for row in rows if row and not row.get("deleted")]

    def tenants(self) -> list[str]:
        """Every tenant that has (or had) documents in the registry."""
        keys = redis_call(lambda: list(self._r.scan_iter(match=keyspace.DOCUMENTS_PATTERN, count=500)))
        return sorted({keyspace.tenant_of_documents(key) for key in keys})

    def active_versions(self, tenant: str, document_ids: Iterable[str]) -> dict[str, str]:
        """The version search may serve for each document (missing or deleted: absent)."""
        ids: Sequence[str] = list(dict.fromkeys(document_ids))
        if not ids:
            return {}
        pipe = self._r.pipeline()
        for document_id in ids:
            pipe.hget(keyspace.document(tenant, document_id), "active")
        values = redis_call(pipe.execute)
        return {d: v for d, v in zip(ids, values, strict=True) if v}

    def ping(self) -> None:
        redis_call(self._r.ping)

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
