"""Upload bookkeeping and the ingest/delete pipeline on fakes (the real stack is in tests/integration)."""

from __future__ import annotations

import pytest

from ingestion import pipeline
from ingestion.errors import DocumentNotFoundError, DocumentTooLargeError, UnsupportedFormatError
from ingestion.parsers import Section
from ingestion.records import JobState, Records
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from retrieval import Chunk
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import HashEmbedder, RecordingSender

TEXT = b"Honey bees dance to tell their hive mates where the flowers are. " * 20


def run(uploads: Uploads, store: InMemoryStore, embedder: HashEmbedder, settings: IngestSettings) -> None:
    """Play the worker: run every sent task once, in order."""
    sent, uploads.sender.sent = list(uploads.sender.sent), []  # type: ignore[attr-defined]
    for name, (job_id,) in sent:
        job = uploads.records.get_job(job_id)
        if name == "sieve.ingest":
            work = lambda job=job: pipeline.ingest(  # noqa: E731
                job.document_version,
                records=uploads.records,
                store=store,
                embedder=embedder,
                settings=settings,
            )
        else:
            work = lambda job=job: pipeline.delete(  # noqa: E731
                job.tenant, job.document_id, records=uploads.records, store=store, blobs=uploads.blobs
            )
        pipeline.run_job(job, uploads.records, work)


def test_accept_stores_the_file_before_enqueueing(uploads: Uploads, sender: RecordingSender) -> None:
    job = uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={"k": 1})
    assert job.document_id == "bees.txt" and job.state is JobState.QUEUED
    with uploads.blobs.fetch(job.path) as stored:
        assert stored.read_bytes() == TEXT
    assert sender.sent == [("sieve.ingest", [job.id])]
    assert uploads.records.pending_jobs() == []


def test_a_crash_before_enqueue_is_recovered(ingest_settings: IngestSettings, records: Records) -> None:
    broken = Uploads(ingest_settings, records, RecordingSender(fail=True))
    with pytest.raises(ConnectionError):
        broken.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    assert len(records.pending_jobs()) == 1
    healthy = Uploads(ingest_settings, records, RecordingSender())
    assert healthy.recover() == 1
    assert [name for name, _ in healthy.sender.sent] == ["sieve.ingest"]  # type: ignore[attr-defined]
    assert records.pending_jobs() == []


def test_door_checks(uploads: Uploads, ingest_settings: IngestSettings) -> None:
    with pytest.raises(UnsupportedFormatError):
        uploads.accept("t", "x.exe", b"MZ", document_id=None, metadata={})
    uploads.settings = ingest_settings.model_copy(update={"max_file_bytes": 10})
    with pytest.raises(DocumentTooLargeError, match="INGEST_MAX_FILE_BYTES"):
        uploads.accept("t", "bees.txt", TEXT, document_id=None, metadata={})
    with pytest.raises(ValueError):
        uploads.accept("t", "bees.txt", b"ok", document_id="bad\x00id", metadata={})


def test_ingest_then_reingest_is_idempotent(
    uploads: Uploads, store: InMemoryStore, embedder: HashEmbedder, ingest_settings: IngestSettings
) -> None:
    first = uploads.accept("t", "bees.txt", TEXT, document_id="bees", metadata={})
    run(uploads, store, embedder, ingest_settings)
    done = uploads.records.get_job(first.id)
    assert done.state is JobState.DONE and done.chunks_total > 1
    assert store.count("t", "bees") == done.chunks_total
    for _ in range(4):
        again = uploads.accept("t", "bees.txt", TEXT, document_id="bees", metadata={})
        assert again.state is JobState.DONE  # unchanged content: nothing to redo
        run(uploads, store, embedder, ingest_settings)
    assert store.count("t", "bees") == done.chunks_total
    # Running the same job twice (a redelivery) changes nothing either.
    pipeline.ingest(
        first.document_version,
        records=uploads.records,
        store=store,
        embedder=embedder,
        settings=ingest_settings,
    )
    assert store.count("t", "bees") == done.chunks_total


def test_new_version_replaces_and_late_old_job_does_not_win(
    uploads: Uploads, store: InMemoryStore, embedder: HashEmbedder, ingest_settings: IngestSettings
) -> None:
    v1 = uploads.accept("t", "doc.txt", TEXT, document_id="doc", metadata={})
    run(uploads, store, embedder, ingest_settings)
    v2 = uploads.accept("t", "doc.txt", b"Tides follow the moon. " * 30, document_id="doc", metadata={})
    run(uploads, store, embedder, ingest_settings)
    doc = uploads.records.get_document("t", "doc")
    assert doc.active == v2.version
    assert store.count("t", "doc") == doc.chunks
    # v1's job redelivered late: it must neither reactivate v1 nor leave its chunks behind.
    pipeline.ingest(
        v1.document_version, records=uploads.records, store=store, embedder=embedder, settings=ingest_settings
    )
    assert uploads.records.get_document("t", "doc").active == v2.version
    assert store.count("t", "doc") == doc.chunks


def test_delete_hides_at_once_and_removes_chunks(
    uploads: Uploads, store: InMemoryStore, embedder: HashEmbedder, ingest_settings: IngestSettings
) -> None:
    uploads.accept("t", "doc.txt", TEXT, document_id="doc", metadata={})
    run(uploads, store, embedder, ingest_settings)
    uploads.delete("t", "doc")
    assert uploads.records.active_versions("t", ["doc"]) == {}
    with pytest.raises(DocumentNotFoundError):
        uploads.records.get_document("t", "doc")
    run(uploads, store, embedder, ingest_settings)
    assert store.count("t", "doc") == 0
    assert uploads.records.list_documents("t") == []
    with pytest.raises(DocumentNotFoundError):
        uploads.delete("t", "doc")


def test_reupload_after_delete_survives_the_delete_job(
    uploads: Uploads, store: InMemoryStore, embedder: HashEmbedder, ingest_settings: IngestSettings
) -> None:
    uploads.accept("t", "doc.txt", TEXT, document_id="doc", metadata={})
    run(uploads, store, embedder, ingest_settings)
    uploads.delete("t", "doc")
    uploads.accept("t", "doc.txt", TEXT, document_id="doc", metadata={})
    run(uploads, store, embedder, ingest_settings)  # the delete job runs first, then the new ingest
    doc = uploads.records.get_document("t", "doc")
    assert doc.active and store.count("t", "doc") == doc.chunks > 0


def test_tenants_do_not_share_documents(
    uploads: Uploads, store: InMemoryStore, embedder: HashEmbedder, ingest_settings: IngestSettings
) -> None:
    uploads.accept("a", "doc.txt", TEXT, document_id="doc", metadata={})
    run(uploads, store, embedder, ingest_settings)
    with pytest.raises(DocumentNotFoundError):
        uploads.records.get_document("b", "doc")
    assert store.count("b") == 0 and store.count("a") > 0


def test_write_chunks_batches_across_documents_and_reports_progress(
    store: InMemoryStore, embedder: HashEmbedder
) -> None:
    """What evaluation uses: many small documents, chunked lazily, embedded in full batches."""
    budget = pipeline.ChunkBudget.of(embedder, chunk_tokens=8, chunk_overlap=100)
    assert budget.tokens == 8 and budget.overlap == 2  # the overlap is at most a quarter of a chunk
    embedded: list[int] = []
    original = embedder.embed_documents

    def counting(texts):  # type: ignore[no-untyped-def]
        embedded.append(len(texts))
        return original(texts)

    embedder.embed_documents = counting  # type: ignore[method-assign]
    corpus = {f"d{i}": "bees dance where the flowers grow " * (i + 1) for i in range(5)}

    def chunks():  # type: ignore[no-untyped-def]
        for doc_id, text in corpus.items():
            for p in budget.split([Section(text)], embedder):
                yield Chunk(tenant="t", document_id=doc_id, version="eval", position=p.position, text=p.text)

    progress: list[int] = []
    written = pipeline.write_chunks(
        chunks(), store=store, embedder=embedder, batch=4, progress=progress.append
    )
    assert written.chunks == sum(embedded) == sum(store.count("t", d) for d in corpus) > 8
    assert embedded[:-1] == [4] * (len(embedded) - 1) and 0 < embedded[-1] <= 4
    assert progress == [min(4 * (i + 1), written.chunks) for i in range(len(embedded))]
    assert written.embed_s >= 0 and written.upsert_s >= 0
