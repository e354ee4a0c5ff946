"""Metadata belongs to the upload that brought it: a job's chunks carry its own upload's metadata, and the
same bytes uploaded again with new metadata make a new version whose chunks carry the new values."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ingestion import pipeline, reindex
from ingestion.files import content_version
from ingestion.records import JobState, Records
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from retrieval import Chunk
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import HashEmbedder, RecordingSender

TEXT = b"Puffins nest in burrows on steep grassy cliffs above the North Atlantic. " * 8


class RecordingStore(InMemoryStore):
    """Remembers the metadata of every chunk upserted, by version."""

    def __init__(self) -> None:
        super().__init__()
        self.written: dict[str, list[dict[str, Any]]] = {}

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        for chunk in chunks:
            self.written.setdefault(chunk.version, []).append(dict(chunk.metadata))
        super().upsert(chunks, vectors)


def run_sent(
    uploads: Uploads, store: InMemoryStore, embedder: HashEmbedder, settings: IngestSettings
) -> None:
    """Play the worker: run every sent ingest job once, in order, with its own metadata."""
    sender: RecordingSender = uploads.sender  # type: ignore[assignment]
    sent, sender.sent = list(sender.sent), []
    for _, (job_id,) in sent:
        job = uploads.records.get_job(job_id)
        pipeline.run_job(
            job,
            uploads.records,
            lambda job=job: pipeline.ingest(  # type: ignore[misc]
                job.document_version,
                records=uploads.records,
                store=store,
                embedder=embedder,
                settings=settings,
                metadata=job.metadata,
            ),
        )


def hits(store: InMemoryStore, embedder: HashEmbedder, **filters: Any) -> set[str]:
    vector = embedder.embed_queries(["puffins nest on cliffs"])[0]
    return {c.document_id for c in store.search("t", vector, limit=10, filters=filters)}


def test_identical_bytes_with_new_metadata_relabel_the_chunks(
    uploads: Uploads, embedder: HashEmbedder, store: InMemoryStore, ingest_settings: IngestSettings
) -> None:
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    first = uploads.accept("t", "puffins.txt", TEXT, document_id=None, metadata={"team": "a"})
    run_sent(uploads, store, embedder, ingest_settings)
    assert hits(store, embedder, team="a") == {"puffins.txt"}

    second = uploads.accept("t", "puffins.txt", TEXT, document_id=None, metadata={"team": "b"})
    assert second.state is JobState.QUEUED and second.version != first.version  # not "unchanged"
    run_sent(uploads, store, embedder, ingest_settings)
    assert hits(store, embedder, team="b") == {"puffins.txt"}
    assert hits(store, embedder, team="a") == set()
    assert uploads.records.get_document("t", "puffins.txt").active == second.version

    again = uploads.accept("t", "puffins.txt", TEXT, document_id=None, metadata={"team": "b"})
    assert again.state is JobState.DONE and uploads.sender.sent == []  # type: ignore[attr-defined]


def test_the_version_is_the_bytes_alone_without_metadata() -> None:
    assert content_version(TEXT) == content_version(TEXT, {}) != content_version(TEXT, {"team": "a"})
    assert content_version(TEXT, {"a": 1, "b": 2}) == content_version(TEXT, {"b": 2, "a": 1})


def test_a_job_writes_its_own_uploads_metadata_not_the_latest_uploads(
    uploads: Uploads, embedder: HashEmbedder, ingest_settings: IngestSettings
) -> None:
    store = RecordingStore()
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    older = uploads.accept("t", "puffins.txt", TEXT, document_id=None, metadata={"season": "spring"})
    newer = uploads.accept(
        "t", "puffins.txt", TEXT + b"Late.", document_id=None, metadata={"season": "autumn"}
    )
    assert uploads.records.get_job(older.id).metadata == {"season": "spring"}
    run_sent(uploads, store, embedder, ingest_settings)
    assert {m["season"] for m in store.written[older.version]} == {"spring"}
    assert {m["season"] for m in store.written[newer.version]} == {"autumn"}
    assert hits(store, embedder, season="autumn") == {"puffins.txt"}
    assert hits(store, embedder, season="spring") == set()  # superseded: its chunks are gone


def test_a_rebuild_writes_the_served_versions_metadata(
    uploads: Uploads, records: Records, embedder: HashEmbedder, ingest_settings: IngestSettings
) -> None:
    store = InMemoryStore()
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    uploads.accept("t", "puffins.txt", TEXT, document_id=None, metadata={"team": "a"})
    run_sent(uploads, store, embedder, ingest_settings)
    # a later upload with other metadata is accepted (the record's metadata is the latest upload's) ...
    uploads.accept("t", "puffins.txt", TEXT + b"Edited.", document_id=None, metadata={"team": "z"})
    uploads.sender.sent.clear()  # type: ignore[attr-defined] # ... and never activates
    doc = records.get_document("t", "puffins.txt")
    assert doc.metadata == {"team": "z"} and doc.active_metadata == {"team": "a"}
    rebuilt = InMemoryStore()
    rebuilt.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    reindex.index_document(
        doc, blobs=uploads.blobs, store=rebuilt, embedder=embedder, settings=ingest_settings
    )
    assert hits(rebuilt, embedder, team="a") == {"puffins.txt"} and hits(rebuilt, embedder, team="z") == set()
