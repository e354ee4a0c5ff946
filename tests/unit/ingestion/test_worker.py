"""The Celery tasks' retry and failure semantics, run with ``Task.apply`` (in-process) on fakes.

Delivery itself (acks_late, a killed worker's task redelivered) is tested on a real broker and real worker
processes in tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import pytest

from ingestion.records import JobState, Records
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from ingestion.worker import make_celery
from retrieval import RetrievalSettings, StoreUnavailableError
from retrieval.memory_store import InMemoryStore
from tests.unit.fakes import HashEmbedder

TEXT = b"Honey bees dance to tell their hive mates where the flowers are. " * 10


class DownStore(InMemoryStore):
    def upsert(self, *args: object, **kwargs: object) -> None:
        raise StoreUnavailableError("Milvus at http://nowhere is unreachable")


@pytest.fixture
def app(ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder):  # type: ignore[no-untyped-def]
    settings = ingest_settings.model_copy(update={"max_retries": 2})
    celery = make_celery(settings, RetrievalSettings(milvus_uri="memory://"))
    resources = celery.conf.sieve_resources
    resources._records, resources._embedder, resources._store = records, embedder, InMemoryStore()
    return celery


def test_transient_errors_retry_then_fail_for_good(app, uploads: Uploads) -> None:  # type: ignore[no-untyped-def]
    store = DownStore()
    calls: list[str] = []
    original = store.upsert

    def counting(*args: object, **kwargs: object) -> None:
        calls.append("upsert")
        original(*args, **kwargs)

    store.upsert = counting  # type: ignore[method-assign]
    app.conf.sieve_resources._store = store
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    # Task.apply runs each retry at once, in-process: the first attempt plus max_retries (2) retries.
    app.tasks["sieve.ingest"].apply(args=[job.id])
    state = uploads.records.get_job(job.id)
    assert len(calls) == 3 and state.attempts == 3
    assert state.state is JobState.FAILED
    assert "gave up after 3 attempts" in state.error and "unreachable" in state.error


def test_unreadable_file_fails_at_once_without_retry(app, uploads: Uploads) -> None:  # type: ignore[no-untyped-def]
    job = uploads.accept(
        "t", "broken.pdf", b"%PDF-1.7\n" + b"\x00garbage" * 50, document_id=None, metadata={}
    )
    result = app.tasks["sieve.ingest"].apply(args=[job.id], retries=0)
    assert result.state == "SUCCESS"
    state = uploads.records.get_job(job.id)
    assert state.state is JobState.FAILED and "broken.pdf" in state.error


def test_a_redelivered_finished_job_is_not_run_twice(app, uploads: Uploads) -> None:  # type: ignore[no-untyped-def]
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    app.tasks["sieve.ingest"].apply(args=[job.id])
    done = uploads.records.get_job(job.id)
    assert done.state is JobState.DONE and done.attempts == 1
    app.tasks["sieve.ingest"].apply(args=[job.id])
    assert uploads.records.get_job(job.id).attempts == 1
