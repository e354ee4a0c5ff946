"""The Celery tasks' retry and failure semantics, run with ``Task.apply`` (in-process) on fakes.

Delivery itself (acks_late, a killed worker's task is redelivered) is tested on a real broker and real worker
processes in tests/integration/test_pipeline.py.
"""

from __future__ import annotations

import pytest
from celery import Celery
from celery.signals import worker_process_init

from ingestion.indexes import BuildState, BuildStatus, Indexes
from ingestion.records import JobState, Records
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from ingestion.worker import WorkerContext, make_celery, worker_context
from retrieval import RetrievalSettings
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import CountingStore, DownStore, HashEmbedder

TEXT = b"Honey bees dance to tell their hive mates where the flowers are. " * 10


def build_app(
    settings: IngestSettings, records: Records, embedder: HashEmbedder, store: InMemoryStore
) -> Celery:
    context = WorkerContext(
        settings.model_copy(update={"max_retries": 2}),
        RetrievalSettings(milvus_uri="memory://"),
        embedder_factory=lambda _: embedder,
        store_factory=lambda _: store,
        records=records,
    )
    return make_celery(context=context)


@pytest.fixture
def app(ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder):  # type: ignore[no-untyped-def]
    return build_app(ingest_settings, records, embedder, InMemoryStore())


def test_transient_errors_retry_then_fail_for_good(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder, uploads: Uploads
) -> None:
    store = DownStore()
    calls: list[str] = []
    original = store.upsert

    def counting(*args: object, **kwargs: object) -> None:
        calls.append("upsert")
        original(*args, **kwargs)

    store.upsert = counting  # type: ignore[method-assign]
    app = build_app(ingest_settings, records, embedder, store)
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


def test_the_collection_is_ensured_once_per_process_and_index(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder, uploads: Uploads
) -> None:
    store = CountingStore()
    app = build_app(ingest_settings, records, embedder, store)
    for i in range(3):
        job = uploads.accept("t", f"doc{i}.txt", TEXT + bytes([65 + i]), document_id=None, metadata={})
        app.tasks["sieve.ingest"].apply(args=[job.id])
        assert uploads.records.get_job(job.id).state is JobState.DONE
    deleted = uploads.delete("t", "doc0.txt")
    app.tasks["sieve.delete"].apply(args=[deleted.id])
    assert uploads.records.get_job(deleted.id).state is JobState.DONE
    assert store.ensured == 1 and store.count("t") > 0


def test_tasks_share_one_context_per_app(app) -> None:  # type: ignore[no-untyped-def]
    context = worker_context(app)
    assert {task.context for name, task in app.tasks.items() if name.startswith("sieve.")} == {context}
    assert sorted(name for name in app.tasks if name.startswith("sieve.")) == [
        "sieve.delete",
        "sieve.ingest",
        "sieve.reindex",
    ]
    with pytest.raises(ValueError, match="not both"):
        make_celery(context.ingest, context=context)


def test_a_rebuild_that_keeps_failing_is_retried_then_marked_failed(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder
) -> None:
    app = build_app(ingest_settings, records, embedder, DownStore("drop"))
    indexes = Indexes(records.client)
    build = indexes.start_build(
        BuildStatus(collection="sieve_chunks_v2", embedder="test", embedder_model="v2")
    )
    app.tasks["sieve.reindex"].apply(args=[build.id])
    failed = indexes.build()
    assert failed is not None and failed.state is BuildState.FAILED
    assert "gave up after 3 attempts" in failed.error and "unreachable" in failed.error


def test_a_worker_process_loads_its_embedder_before_its_first_task(
    ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder
) -> None:
    built: list[RetrievalSettings] = []

    def factory(settings: RetrievalSettings) -> HashEmbedder:
        built.append(settings)
        return embedder

    retrieval = RetrievalSettings(milvus_uri="memory://")
    context = WorkerContext(ingest_settings, retrieval, embedder_factory=factory, records=records)
    app = make_celery(context=context)
    assert built == []  # nothing loads until a worker process starts
    app.set_current()  # as the prefork pool's process initialiser does, before it sends the signal
    worker_process_init.send(sender=None)
    assert built == [retrieval] and context.embedder is embedder
    worker_process_init.send(sender=None)
    assert len(built) == 1
