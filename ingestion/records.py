"""Job and document records kept in Redis (the job store and the document registry).

Redis is started with an append-only file by the embedded stack, so records survive restarts.
Keys (named in ``ingestion.keyspace``):
- ``job:{id}``                hash: tenant, document_id, version, filename, path, metadata (JSON, its
                              upload's), state, chunks_done, chunks_total, attempts, error, kind
                              (ingest/delete), times
- ``doc:{tenant}:{document_id}``  hash: filename, metadata (JSON, of the latest upload), latest (last accepted
                              version), active (version served by search; empty while none),
                              active_metadata (JSON, the served version's), chunks, times
- ``docs:{tenant}``           set of document ids
- ``jobs:pending``            job ids accepted but not yet confirmed enqueued (re-sent at API start)
- ``jobs:running``            sorted set: running job ids by their last heartbeat (``ingestion.liveness``)
- ``index_version:{tenant}``  counter bumped whenever what search serves for the tenant changes (a version
                              activated, a document deleted); cached search results are keyed by it

A ``DocumentVersion`` is what the pipeline indexes: one stored file of one version of a document. A job
names one (``Job.document_version``); a rebuild names the active version of each document.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from pydantic import BaseModel, Field, field_validator

from ingestion import keyspace
from ingestion.blobs import version_key
from ingestion.errors import DocumentNotFoundError, RedisUnavailableError
from ingestion.keyspace import redis_call

logger = logging.getLogger(__name__)

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
    """One version of a document and its stored file: what ``ingestion.pipeline`` indexes.

    ``path``: the blob key the upload was stored under, as recorded (a local path on jobs recorded before the
    blob store); the file is read by ``blob_key``, which the other fields determine."""

    tenant: str
    document_id: str
    version: str
    filename: str
    path: str

    @property
    def blob_key(self) -> str:
        """The key of this version's stored file in the blob store (``ingestion.blobs.version_key``)."""
        return version_key(self.tenant, self.document_id, self.version, self.filename)


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
    # The upload's own metadata, which goes with every chunk of its version; None on jobs recorded before
    # jobs carried it (their document record's metadata is used).
    metadata: dict[str, Any] | None = None
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    @field_validator("metadata", mode="before")
    @classmethod
    def _from_json(cls, value: Any) -> Any:
        return (json.loads(value) if value else None) if isinstance(value, str) else value

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
    active_metadata: dict[str, Any] | None = None  # of the served version (None: recorded before it was kept)
    chunks: int = 0
    last_job: str = ""
    deleted: bool = False
    updated_at: float = Field(default_factory=time.time)


# Each document's served version, in one command (a search's ~50 candidates' documents): a pipeline of as many
# HGETs took 0.90 ms of Python packing and parsing a search, this 0.43 ms (60 documents, local Redis). A
# missing field or key gives false, which becomes None.
ACTIVE_VERSIONS = """
local out = {}
for i, key in ipairs(KEYS) do
    out[i] = redis.call('HGET', key, 'active') or false
end
return out
"""


class Records:
    """Job store and document registry over one Redis connection pool.

    ``retry_s``: for how long a call that cannot reach Redis (connection refused or lost, Redis still loading
    its data after a restart) is tried again before ``RedisUnavailableError`` is raised. The API answers at
    once (0); a worker rides out a Redis restart (``INGEST_REDIS_RETRY_S``).
    """

    def __init__(self, redis_url: str, *, client: redis.Redis | None = None, retry_s: float = 0.0) -> None:
        self.redis_url = redis_url
        self.retry_s = retry_s
        self._r: redis.Redis = client or redis.Redis.from_url(
            redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )
        self._active_versions = self._r.register_script(ACTIVE_VERSIONS)

    def _call(self, fn: Callable[[], Any]) -> Any:
        """``redis_call``, tried again for ``retry_s`` while Redis is unreachable (every write here is
        idempotent or a harmless counter bump: one that landed before the connection broke may repeat)."""
        deadline = time.monotonic() + self.retry_s
        pause = 0.2
        while True:
            try:
                return redis_call(fn)
            except RedisUnavailableError as exc:
                unreachable = isinstance(exc.__cause__, (redis.ConnectionError, redis.TimeoutError))
                if not unreachable or time.monotonic() + pause > deadline:
                    raise
                logger.info("Redis unreachable (%s); trying again in %.1f s", exc.__cause__, pause)
                time.sleep(pause)
                pause = min(2.0, pause * 2)

    def _pipeline(self, build: Callable[[Any], None], *, transaction: bool = True) -> Any:
        """Queue commands with ``build(pipe)`` on a fresh pipeline and run it (again, whole, on a retry)."""

        def run() -> Any:
            pipe = self._r.pipeline(transaction=transaction)
            build(pipe)
            return pipe.execute()

        return self._call(run)

    @property
    def client(self) -> redis.Redis:
        """The Redis connection, shared by the API's cache, rate limiter and review queue."""
        return self._r

    def bump_index_version(self, tenant: str) -> int:
        """Record that what search serves for ``tenant`` changed: older cached results go unread."""
        return int(self._call(lambda: self._r.incr(keyspace.index_version(tenant))))

    # -- jobs -----------------------------------------------------------------------------------
    def mark_enqueued(self, job_id: str) -> None:
        self._call(lambda: self._r.srem(keyspace.PENDING_JOBS, job_id))

    def pending_jobs(self) -> list[str]:
        return sorted(self._call(lambda: self._r.smembers(keyspace.PENDING_JOBS)))

    def get_job(self, job_id: str, tenant: str | None = None) -> Job:
        data = self._call(lambda: self._r.hgetall(keyspace.job(job_id)))
        if not data or (tenant is not None and data.get("tenant") != tenant):
            raise DocumentNotFoundError(f"no job {job_id!r}")
        return Job.model_validate(data)

    def update_job(self, job_id: str, **fields: Any) -> None:
        """Write fields of a job; a new ``state`` also moves it into or out of the running set."""
        now = time.time()
        fields["updated_at"] = now
        mapping: Fields = {k: (v.value if isinstance(v, JobState) else str(v)) for k, v in fields.items()}

        def build(pipe: Any) -> None:
            pipe.hset(keyspace.job(job_id), mapping=mapping)
            if fields.get("state") is JobState.RUNNING:
                pipe.zadd(keyspace.RUNNING_JOBS, {job_id: now})
            elif "state" in fields:
                pipe.zrem(keyspace.RUNNING_JOBS, job_id)

        self._pipeline(build)

    def heartbeat(self, job_id: str) -> None:
        """Say that a running job's worker is alive (only while the job is in the running set)."""
        self._call(lambda: self._r.zadd(keyspace.RUNNING_JOBS, {job_id: time.time()}, xx=True))

    def silent_jobs(self, older_than_s: float) -> list[str]:
        """Running jobs whose last heartbeat is older than ``older_than_s`` seconds (their worker is gone)."""
        ceiling = time.time() - older_than_s
        return list(self._call(lambda: self._r.zrangebyscore(keyspace.RUNNING_JOBS, "-inf", ceiling)))

    def requeue_silent(self, job_id: str, older_than_s: float, note: str) -> Job | None:
        """Mark a running job whose heartbeat is older than ``older_than_s`` queued again (and pending, until
        its task is confirmed sent: ``mark_enqueued``), in one transaction that checks both; returns it, or
        None when it finished or spoke up meanwhile (a job no longer running leaves the running set)."""
        key = keyspace.job(job_id)

        def txn(pipe: redis.client.Pipeline) -> Job | None:
            data = pipe.hgetall(key)
            beat = pipe.zscore(keyspace.RUNNING_JOBS, job_id)
            pipe.multi()
            if not data or data.get("state") != JobState.RUNNING.value:
                pipe.zrem(keyspace.RUNNING_JOBS, job_id)
                return None
            if beat is None or beat > time.time() - older_than_s:
                return None
            now = time.time()
            queued: Fields = {"state": JobState.QUEUED.value, "error": note[:2000], "updated_at": str(now)}
            pipe.hset(key, mapping=queued)
            pipe.zrem(keyspace.RUNNING_JOBS, job_id)
            pipe.sadd(keyspace.PENDING_JOBS, job_id)
            return Job.model_validate({**data, **queued})

        # redis' stubs type the callable as returning None; value_from_callable returns what it returns
        return self._call(  # type: ignore[no-any-return]
            lambda: self._r.transaction(txn, key, keyspace.RUNNING_JOBS, value_from_callable=True)  # type: ignore[arg-type]
        )

    def lock_sweep(self, hold_s: float) -> bool:
        """Take the sweep lock for ``hold_s`` seconds (it expires by itself); False while another holds it."""
        hold_ms = max(1, int(hold_s * 1000))
        return bool(self._call(lambda: self._r.set(keyspace.SWEEP_LOCK, "1", nx=True, px=hold_ms)))

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
            metadata=metadata,
            id=uuid.uuid4().hex,
        )
        if unchanged_chunks is not None:
            job.state = JobState.DONE
            job.chunks_done = job.chunks_total = unchanged_chunks

        def build(pipe: Any) -> None:
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

        self._pipeline(build)
        return job

    def activate(
        self,
        tenant: str,
        document_id: str,
        version: str,
        chunks: int,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> bool:
        """Make ``version`` the one search serves, if it is still the latest accepted one; ``metadata``: the
        metadata its chunks carry (an index rebuild writes them again with it).

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
            if metadata is not None:
                active["active_metadata"] = json.dumps(metadata)
            pipe.hset(key, mapping=active)
            return True

        # redis' stubs type the callable as returning None; value_from_callable returns what it returns
        return bool(self._call(lambda: self._r.transaction(txn, key, value_from_callable=True)))  # type: ignore[arg-type]

    def request_delete(self, tenant: str, document_id: str) -> Job:
        """Hide a document from search at once and record the job that removes its chunks."""
        key = keyspace.document(tenant, document_id)
        data = self._call(lambda: self._r.hgetall(key))
        if not data or data.get("deleted"):
            raise DocumentNotFoundError(f"no document {document_id!r}")
        job = Job(id=uuid.uuid4().hex, kind="delete", tenant=tenant, document_id=document_id)
        hidden: Fields = {"deleted": "1", "active": "", "latest": "", "last_job": job.id}

        def build(pipe: Any) -> None:
            pipe.hset(keyspace.job(job.id), mapping=_job_mapping(job))
            pipe.sadd(keyspace.PENDING_JOBS, job.id)
            pipe.hset(key, mapping=hidden)
            pipe.incr(keyspace.index_version(tenant))  # gone from search, and from cached results, at once

        self._pipeline(build)
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

        self._call(lambda: self._r.transaction(txn, key))

    def get_document(self, tenant: str, document_id: str) -> Document:
        data = self._call(lambda: self._r.hgetall(keyspace.document(tenant, document_id)))
        if not data or data.get("deleted"):
            raise DocumentNotFoundError(f"no document {document_id!r}")
        return _document(data)

    def list_documents(self, tenant: str) -> list[Document]:
        ids = sorted(self._call(lambda: self._r.smembers(keyspace.documents(tenant))))

        def build(pipe: Any) -> None:
            for document_id in ids:
                pipe.hgetall(keyspace.document(tenant, document_id))

        rows = self._pipeline(build, transaction=False) if ids else []
        return [_document(row) for row in rows if row and not row.get("deleted")]

    def tenants(self) -> list[str]:
        """Every tenant that has (or had) documents in the registry."""
        keys = self._call(lambda: list(self._r.scan_iter(match=keyspace.DOCUMENTS_PATTERN, count=500)))
        return sorted({keyspace.tenant_of_documents(key) for key in keys})

    def active_versions(self, tenant: str, document_ids: Iterable[str]) -> dict[str, str]:
        """The version search may serve for each document (missing or deleted: absent)."""
        ids: Sequence[str] = list(dict.fromkeys(document_ids))
        if not ids:
            return {}
        keys = [keyspace.document(tenant, document_id) for document_id in ids]
        values = self._call(lambda: self._active_versions(keys=keys))
        return {d: v for d, v in zip(ids, values, strict=True) if v}

    def ping(self) -> None:
        self._call(self._r.ping)

    def close(self) -> None:
        self._r.close()


def _job_mapping(job: Job) -> Fields:
    fields = job.model_dump()
    fields["metadata"] = "" if job.metadata is None else json.dumps(job.metadata)
    return {k: (v.value if isinstance(v, JobState) else str(v)) for k, v in fields.items()}


def _document(data: dict[str, str]) -> Document:
    return Document(
        tenant=data.get("tenant", ""),
        document_id=data.get("document_id", ""),
        filename=data.get("filename", ""),
        metadata=json.loads(data.get("metadata") or "{}"),
        latest=data.get("latest", ""),
        active=data.get("active", ""),
        active_metadata=json.loads(data["active_metadata"]) if data.get("active_metadata") else None,
        chunks=int(data.get("chunks") or 0),
        last_job=data.get("last_job", ""),
        deleted=bool(data.get("deleted")),
        updated_at=float(data.get("updated_at") or 0),
    )
