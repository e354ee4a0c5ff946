"""How a delivery of an ingest job ends (``Task.apply``, in-process, on fakes): permanent errors fail at once
with their reason, temporary ones are retried, a Redis outage in the bookkeeping puts the message back on the
queue instead of acknowledging it, time limits fail the job, and a failed job's chunks do not linger.

Real Redis restarts under a real worker are in tests/integration/test_redis_outage.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import Celery
from celery.exceptions import Reject

from ingestion.blobs import version_key
from ingestion.errors import RedisUnavailableError
from ingestion.records import Job, JobState, Records
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from ingestion.worker import WorkerContext, is_permanent, make_celery
from retrieval import Chunk, RetrievalSettings, StoreUnavailableError
from retrieval.errors import EmbedderInputError
from retrieval.memory_store import InMemoryStore
from retrieval.milvus_store import _row
from tests.support import bombs
from tests.support.fakes import HashEmbedder

TEXT = b"Honey bees dance to tell their hive mates where the flowers are. " * 10
EMOJI = "\N{GRINNING FACE}"


class MilvusRowsStore(InMemoryStore):
    """Checks rows as the Milvus store does before sending them (column byte limits, strict JSON)."""

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        for chunk, vector in zip(chunks, vectors, strict=True):
            _row(chunk, vector, lexical=True)
        super().upsert(chunks, vectors)


class FlakyStore(InMemoryStore):
    """Unavailable for the first ``failures`` upserts."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        if self.failures:
            self.failures -= 1
            raise StoreUnavailableError("Milvus at http://nowhere is unreachable")
        super().upsert(chunks, vectors)


class FailingEmbedder(HashEmbedder):
    """Embeds ``ok_batches`` batches, then raises ``error``."""

    def __init__(self, error: BaseException, ok_batches: int = 0) -> None:
        super().__init__()
        self.error = error
        self.ok_batches = ok_batches

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if self.ok_batches <= 0:
            raise self.error
        self.ok_batches -= 1
        return super().embed_documents(texts)


def build_app(
    settings: IngestSettings, records: Records, embedder: HashEmbedder, store: InMemoryStore, **update: Any
) -> Celery:
    context = WorkerContext(
        settings.model_copy(update={"max_retries": 2, "retry_backoff_s": 0, **update}),
        RetrievalSettings(milvus_uri="memory://"),
        embedder_factory=lambda _: embedder,
        store_factory=lambda _: store,
        records=records,
    )
    return make_celery(context=context)


def versions(store: InMemoryStore, tenant: str, document_id: str) -> dict[str, int]:
    """How many chunks the store holds of each version of the document."""
    counts: dict[str, int] = {}
    for row in store._rows.values():
        chunk = row.chunk
        if (chunk.tenant, chunk.document_id) == (tenant, document_id):
            counts[chunk.version] = counts.get(chunk.version, 0) + 1
    return counts


def record_job(records: Records, uploads: Uploads, *, document_id: str, metadata: dict[str, Any]) -> Job:
    """A job recorded as an older API did, before uploads checked the id and metadata."""
    key = version_key("t", document_id, "v1", "bees.txt")
    uploads.blobs.put(key, TEXT)
    return records.accept_upload(
        "t", document_id, version="v1", filename="bees.txt", path=key, metadata=metadata
    )


@pytest.mark.parametrize(
    ("document_id", "metadata", "reason"),
    [
        (EMOJI * 256, {}, "longer than 512 UTF-8 bytes"),
        ("bees.txt", {"score": float("nan")}, "metadata must be JSON"),
        ("bees.txt", {"score": float("inf")}, "metadata must be JSON"),
    ],
)
def test_a_value_the_store_refuses_fails_the_job_at_once(
    ingest_settings: IngestSettings,
    records: Records,
    embedder: HashEmbedder,
    uploads: Uploads,
    document_id: str,
    metadata: dict[str, Any],
    reason: str,
) -> None:
    app = build_app(ingest_settings, records, embedder, MilvusRowsStore())
    job = record_job(records, uploads, document_id=document_id, metadata=metadata)
    result = app.tasks["sieve.ingest"].apply(args=[job.id])
    assert result.state == "SUCCESS"
    done = records.get_job(job.id)
    assert done.state is JobState.FAILED and done.attempts == 1, done  # not retried
    assert reason in done.error


def test_a_parse_past_its_limit_fails_the_job_at_once_naming_the_limit(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder, uploads: Uploads
) -> None:
    app = build_app(ingest_settings, records, embedder, InMemoryStore())
    job = uploads.accept("t", "deep.html", bombs.nested_divs(100_000), document_id=None, metadata={})
    app.tasks["sieve.ingest"].apply(args=[job.id])
    failed = records.get_job(job.id)
    assert failed.state is JobState.FAILED and failed.attempts == 1
    assert "more than 256 levels deep (INGEST_MARKUP_MAX_DEPTH)" in failed.error


def test_a_temporary_error_is_retried_and_the_job_ends_done(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder, uploads: Uploads
) -> None:
    store = FlakyStore(failures=1)
    app = build_app(ingest_settings, records, embedder, store)
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    app.tasks["sieve.ingest"].apply(args=[job.id])
    done = records.get_job(job.id)
    assert done.state is JobState.DONE and done.attempts == 2 and store.count("t") == done.chunks_total


def test_errors_are_classified_permanent_or_temporary() -> None:
    assert is_permanent(ValueError("chunk doc_id is longer than 512 UTF-8 bytes"))
    assert is_permanent(EmbedderInputError("too long")) and is_permanent(FileNotFoundError("gone"))
    for temporary in (
        RedisUnavailableError("down"),
        StoreUnavailableError("down"),
        ConnectionError("reset"),
        RuntimeError("unknown: retried, a bounded number of times"),
    ):
        assert not is_permanent(temporary)


class RetryNoteFails(Records):
    """Redis goes away between the work failing and the retry being recorded."""

    def update_job(self, job_id: str, **fields: Any) -> None:
        if fields.get("state") is JobState.QUEUED:
            raise RedisUnavailableError("Redis is unreachable: Connection refused")
        super().update_job(job_id, **fields)


def test_a_redis_outage_in_the_retry_bookkeeping_puts_the_message_back(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder, uploads: Uploads
) -> None:
    flaky = RetryNoteFails("redis://fake", client=records.client)
    app = build_app(ingest_settings, flaky, embedder, FlakyStore(failures=1))
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    result = app.tasks["sieve.ingest"].apply(args=[job.id])
    assert result.state == "REJECTED" and isinstance(result.result, Reject) and result.result.requeue
    assert records.get_job(job.id).state is JobState.RUNNING  # not failed, not acknowledged as done
    # the redelivery finds Redis and the store back, and finishes the job
    app = build_app(ingest_settings, records, embedder, InMemoryStore())
    app.tasks["sieve.ingest"].apply(args=[job.id])
    assert records.get_job(job.id).state is JobState.DONE


def test_a_redis_outage_before_the_job_is_read_puts_the_message_back(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder, uploads: Uploads
) -> None:
    class Unreachable(Records):
        def get_job(self, job_id: str, tenant: str | None = None) -> Job:
            raise RedisUnavailableError("Redis is unreachable: Connection refused")

    app = build_app(
        ingest_settings, Unreachable("redis://fake", client=records.client), embedder, InMemoryStore()
    )
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    result = app.tasks["sieve.ingest"].apply(args=[job.id])
    assert result.state == "REJECTED" and result.result.requeue


def test_a_retry_celery_cannot_send_keeps_the_message_instead_of_dropping_it(
    ingest_settings: IngestSettings,
    records: Records,
    embedder: HashEmbedder,
    uploads: Uploads,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = build_app(ingest_settings, records, embedder, FlakyStore(failures=1))
    task = app.tasks["sieve.ingest"]

    def broker_down(**_: Any) -> None:  # what Task.retry raises when it cannot publish the retry
        raise Reject(ConnectionError("Error 111 connecting to redis"), requeue=False)

    monkeypatch.setattr(task, "retry", broker_down)
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    result = task.apply(args=[job.id])
    assert result.state == "REJECTED" and result.result.requeue


def test_a_failed_job_removes_the_chunks_of_its_version_and_keeps_the_served_one(
    ingest_settings: IngestSettings, records: Records, uploads: Uploads
) -> None:
    store = InMemoryStore()
    app = build_app(ingest_settings, records, HashEmbedder(), store)
    first = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    app.tasks["sieve.ingest"].apply(args=[first.id])
    served = records.get_document("t", "bees.txt").active
    # the second version writes one batch, then fails for good
    embedder = FailingEmbedder(EmbedderInputError("a chunk the model cannot take"), ok_batches=1)
    app = build_app(ingest_settings, records, embedder, store)
    second = uploads.accept("t", "bees.txt", TEXT + b" A new closing line.", document_id=None, metadata={})
    app.tasks["sieve.ingest"].apply(args=[second.id])
    assert records.get_job(second.id).state is JobState.FAILED
    assert versions(store, "t", "bees.txt") == {served: records.get_document("t", "bees.txt").chunks}


def test_the_soft_time_limit_fails_the_job_naming_the_setting(
    ingest_settings: IngestSettings, records: Records, uploads: Uploads
) -> None:
    store = InMemoryStore()
    embedder = FailingEmbedder(SoftTimeLimitExceeded(), ok_batches=1)
    app = build_app(ingest_settings, records, embedder, store, task_soft_time_limit_s=30)
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    app.tasks["sieve.ingest"].apply(args=[job.id])
    failed = records.get_job(job.id)
    assert failed.state is JobState.FAILED and failed.attempts == 1
    assert "time limit of 30 s (INGEST_TASK_SOFT_TIME_LIMIT_S)" in failed.error
    assert versions(store, "t", "bees.txt") == {}  # what it wrote before the limit is gone


def test_the_hard_time_limit_fails_the_job_instead_of_leaving_it_running(
    ingest_settings: IngestSettings, records: Records, uploads: Uploads
) -> None:
    def no_store(_: RetrievalSettings) -> InMemoryStore:
        raise AssertionError("the worker's main process opened a store (and would load the model)")

    context = WorkerContext(
        ingest_settings.model_copy(update={"task_time_limit_s": 40}),
        RetrievalSettings(milvus_uri="memory://"),
        embedder_factory=lambda _: HashEmbedder(),
        store_factory=no_store,
        records=records,
    )
    app = make_celery(context=context)
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    records.update_job(job.id, state=JobState.RUNNING)
    # what the worker's main process calls when it replaces a pool process past the hard limit
    app.tasks["sieve.ingest"].on_failure(TimeLimitExceeded(40), "task-id", (job.id,), {}, None)
    failed = records.get_job(job.id)
    assert failed.state is JobState.FAILED
    assert "hard time limit of 40 s (INGEST_TASK_TIME_LIMIT_S)" in failed.error


def test_a_job_started_too_often_without_finishing_fails(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder, uploads: Uploads
) -> None:
    app = build_app(ingest_settings, records, embedder, InMemoryStore(), max_attempts=3)
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    records.update_job(job.id, state=JobState.RUNNING, attempts=3, error="worker lost")
    app.tasks["sieve.ingest"].apply(args=[job.id])
    failed = records.get_job(job.id)
    assert failed.state is JobState.FAILED
    assert failed.error == "started 3 times without finishing (INGEST_MAX_ATTEMPTS) (last: worker lost)"


def test_every_task_has_time_limits_and_workers_get_time_to_load_their_model(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder
) -> None:
    app = build_app(
        ingest_settings,
        records,
        embedder,
        InMemoryStore(),
        task_soft_time_limit_s=100,
        task_time_limit_s=130,
        reindex_time_limit_s=5000,
        worker_start_timeout_s=90,
    )
    limits = {
        name: (t.soft_time_limit, t.time_limit) for name, t in app.tasks.items() if name.startswith("sieve.")
    }
    assert limits == {"sieve.ingest": (100, 130), "sieve.delete": (100, 130), "sieve.reindex": (5000, 5060)}
    assert app.conf.worker_proc_alive_timeout == 90
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.broker_connection_max_retries is None
