"""The rebuild of an index with a new embedder beside the serving one (``ingestion.reindex``), on fakes.

Workers keep writing to the serving index while it runs; the tests do the same from the progress hook.
"""

from __future__ import annotations

import pytest

from ingestion import keyspace, pipeline
from ingestion.blobs import version_prefix
from ingestion.indexes import BuildState, BuildStatus, Indexes, IndexSpec, ReindexBusyError
from ingestion.records import Records
from ingestion.reindex import Rebuild, drop_previous
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from ingestion.worker import WorkerContext, make_celery, worker_context
from retrieval import RetrievalSettings, VectorStore
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import HashEmbedder, SaltedEmbedder

OLD = IndexSpec(collection="sieve_chunks", embedder="test", embedder_model="")
DOCS = {
    "bees.txt": b"Honey bees dance to show their hive mates where the flowers grow.",
    "tides.txt": b"Tides rise and fall with the pull of the moon and the sun.",
    "rust.md": b"# Borrowing\n\nThe borrow checker refuses two mutable references at once.",
}


def ingest(uploads: Uploads, store: VectorStore, embedder: HashEmbedder, name: str, data: bytes) -> None:
    """Accept an upload and run its job on ``store``, as a worker writing to the serving index does."""
    job = uploads.accept("t1", name, data, document_id=name, metadata={"src": "unit"})
    pipeline.ingest(
        job.document_version,
        records=uploads.records,
        store=store,
        embedder=embedder,
        settings=uploads.settings,
    )


def delete(uploads: Uploads, store: VectorStore, name: str) -> None:
    job = uploads.delete("t1", name)
    pipeline.delete(job.tenant, job.document_id, records=uploads.records, store=store, blobs=uploads.blobs)


def documents(store: VectorStore, tenant: str = "t1") -> dict[str, set[str]]:
    """document id -> versions held by ``store``."""
    found: dict[str, set[str]] = {}
    for hit in store.search(tenant, None, limit=1000, mode="bm25", query_text=" ".join(ALL_WORDS)):
        found.setdefault(hit.document_id, set()).add(hit.version)
    return found


ALL_WORDS = {
    w for text in (*DOCS.values(), b"bees swarm new queen", b"volcano lava") for w in text.decode().split()
}


@pytest.fixture
def old_store(uploads: Uploads, embedder: HashEmbedder) -> InMemoryStore:
    store = InMemoryStore()
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    for name, data in DOCS.items():
        ingest(uploads, store, embedder, name, data)
    uploads.records.client.sadd(keyspace.documents("t2"), "ghost")  # a tenant whose only document is gone
    return store


def rebuild(records: Records, uploads: Uploads, store: VectorStore, **kwargs: object) -> Rebuild:
    indexes = Indexes(records.client)
    build = indexes.start_build(
        BuildStatus(collection="sieve_chunks_new", embedder="test", embedder_model="v2")
    )
    return Rebuild(
        build,
        records=records,
        indexes=indexes,
        blobs=uploads.blobs,
        store=store,
        embedder=SaltedEmbedder(),
        settings=uploads.settings,
        default=OLD,
        **kwargs,  # type: ignore[arg-type]
    )


def test_rebuild_fills_a_new_index_beside_the_old_and_switches(
    records: Records, uploads: Uploads, old_store: InMemoryStore
) -> None:
    new_store = InMemoryStore()
    seen: list[tuple[BuildState, str, int]] = []
    indexes = Indexes(records.client)

    def during(build: BuildStatus) -> None:  # search still reads the old index: the pointer has not moved
        seen.append((build.state, indexes.serving(OLD).collection, build.documents_done))

    result = rebuild(records, uploads, new_store, on_document=during).run()

    assert [s[:2] for s in seen] == [(BuildState.BUILDING, "sieve_chunks")] * 3
    assert [s[2] for s in seen] == [1, 2, 3]
    assert result.state is BuildState.SWITCHED and result.documents_total == 3 and result.chunks >= 3
    stored = indexes.build()
    assert stored is not None and stored.state is BuildState.SWITCHED and stored.documents_done == 3
    serving = indexes.serving(OLD)
    assert serving.collection == "sieve_chunks_new" and serving.embedder_model == "v2"
    assert serving.embedder_name == SaltedEmbedder.name and serving.switched_at > 0
    assert indexes.previous() == OLD and indexes.generation() == 1
    active = {d.document_id: {d.active} for d in records.list_documents("t1")}
    assert documents(new_store) == active == documents(old_store)  # the old index is kept as it was
    hit = new_store.search("t1", SaltedEmbedder().embed_queries(["where do bees dance"])[0], limit=1)[0]
    assert hit.document_id == "bees.txt" and hit.metadata == {"src": "unit", "filename": "bees.txt"}


def test_documents_updated_deleted_and_added_during_the_rebuild_are_right_after_the_switch(
    records: Records, uploads: Uploads, old_store: InMemoryStore, embedder: HashEmbedder
) -> None:
    new_store = InMemoryStore()

    def meanwhile(build: BuildStatus) -> None:  # workers keep writing to the serving (old) index
        if build.documents_done == 1:
            ingest(uploads, old_store, embedder, "bees.txt", b"Bees swarm when a new queen is raised.")
            delete(uploads, old_store, "tides.txt")
            ingest(uploads, old_store, embedder, "volcano.txt", b"Volcano lava cools into basalt.")

    result = rebuild(records, uploads, new_store, on_document=meanwhile).run()

    active = {d.document_id: {d.active} for d in records.list_documents("t1")}
    assert sorted(active) == ["bees.txt", "rust.md", "volcano.txt"]
    assert documents(new_store) == active  # one version each, the active one; the deleted one gone
    assert result.passes >= 1 and result.documents_total == result.documents_done == 5
    query = SaltedEmbedder().embed_queries(["new queen"])[0]
    assert new_store.search("t1", query, limit=1)[0].text.startswith("Bees swarm")


def test_an_unreadable_document_is_skipped_and_reported(
    records: Records, uploads: Uploads, old_store: InMemoryStore
) -> None:
    doc = records.get_document("t1", "rust.md")
    prefix = version_prefix("t1", "rust.md", doc.active)
    assert len(uploads.blobs.list(prefix)) == 1
    uploads.blobs.delete_prefix(prefix)

    result = rebuild(records, uploads, InMemoryStore()).run()

    assert result.state is BuildState.SWITCHED and result.documents_failed == 1
    assert "rust.md" in result.error


def test_a_second_rebuild_while_one_runs_is_refused_and_the_serving_index_is_never_rebuilt(
    records: Records, uploads: Uploads, old_store: InMemoryStore
) -> None:
    indexes = Indexes(records.client)
    indexes.start_build(BuildStatus(collection="a", embedder="test"))
    with pytest.raises(ReindexBusyError):
        indexes.start_build(BuildStatus(collection="b", embedder="test"))
    indexes.switch(IndexSpec(collection="a", embedder="test"), default=OLD)
    indexes.update_build(indexes.build().id, state=BuildState.SWITCHED)  # type: ignore[union-attr]
    build = indexes.start_build(BuildStatus(collection="a", embedder="test"))
    with pytest.raises(ReindexBusyError, match="serves search"):
        Rebuild(
            build,
            records=records,
            indexes=indexes,
            blobs=uploads.blobs,
            store=old_store,
            embedder=SaltedEmbedder(),
            settings=uploads.settings,
            default=OLD,
        ).run()
    assert old_store.count("t1") > 0


def test_drop_previous_drops_the_old_collection_only_when_asked(
    records: Records, uploads: Uploads, old_store: InMemoryStore
) -> None:
    rebuild(records, uploads, InMemoryStore()).run()
    indexes = Indexes(records.client)
    assert old_store.count("t1") > 0

    assert drop_previous(indexes, old_store) == OLD
    assert indexes.previous() is None and drop_previous(indexes, old_store) is None
    with pytest.raises(Exception, match="does not exist"):
        old_store.count("t1")


@pytest.fixture
def worker(ingest_settings: IngestSettings, records: Records, embedder: HashEmbedder):  # type: ignore[no-untyped-def]
    """A Celery app whose processes build stores per collection (shared, like one Milvus) and embedders by
    model, as ``retrieval.make_embedder`` does."""
    stores: dict[str, InMemoryStore] = {}
    context = WorkerContext(
        ingest_settings,
        RetrievalSettings(milvus_uri="memory://", embedder="test"),
        embedder_factory=lambda s: SaltedEmbedder() if s.embedder_model == "v2" else HashEmbedder(),
        store_factory=lambda s: stores.setdefault(s.collection, InMemoryStore()),
        records=records,
    )
    return make_celery(context=context), stores


def test_the_worker_task_rebuilds_and_its_next_jobs_write_to_the_new_index(worker, uploads: Uploads) -> None:  # type: ignore[no-untyped-def]
    celery, stores = worker
    for name, data in DOCS.items():
        job = uploads.accept("t1", name, data, document_id=name, metadata={})
        celery.tasks["sieve.ingest"].apply(args=[job.id])
    indexes = Indexes(uploads.records.client)
    build = indexes.start_build(
        BuildStatus(collection="sieve_chunks_v2", embedder="test", embedder_model="v2")
    )

    celery.tasks["sieve.reindex"].apply(args=[build.id])

    assert indexes.build().state is BuildState.SWITCHED  # type: ignore[union-attr]
    assert sorted(stores) == ["sieve_chunks", "sieve_chunks_v2"]
    assert documents(stores["sieve_chunks_v2"]) == documents(stores["sieve_chunks"])
    job = uploads.accept("t1", "late.txt", b"volcano lava", document_id="late.txt", metadata={})
    celery.tasks["sieve.ingest"].apply(args=[job.id])
    assert "late.txt" in documents(stores["sieve_chunks_v2"]) and "late.txt" not in documents(
        stores["sieve_chunks"]
    )
    assert isinstance(worker_context(celery).embedder, SaltedEmbedder)
    celery.tasks["sieve.reindex"].apply(args=[build.id])  # redelivered after it ended: nothing happens
    assert indexes.generation() == 1


def test_a_job_that_runs_across_a_switch_runs_again_on_the_new_index(worker, uploads: Uploads) -> None:  # type: ignore[no-untyped-def]
    celery, stores = worker
    context = worker_context(celery)
    indexes = Indexes(uploads.records.client)
    context.refresh()
    stores["sieve_chunks_v2"] = InMemoryStore()
    stores["sieve_chunks_v2"].ensure_collection(embedder_name=SaltedEmbedder.name, dimension=64)
    original = pipeline.settle
    calls: list[str] = []

    def settle_then_switch(version, **kwargs):  # type: ignore[no-untyped-def]
        original(version, **kwargs)
        if not calls:  # the rebuild's last pass ran before this activation; the switch comes right after
            indexes.switch(
                IndexSpec(collection="sieve_chunks_v2", embedder="test", embedder_model="v2"), default=OLD
            )
        calls.append(version.version)

    job = uploads.accept("t1", "bees.txt", DOCS["bees.txt"], document_id="bees.txt", metadata={})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "settle", settle_then_switch)
        celery.tasks["sieve.ingest"].apply(args=[job.id])

    assert len(calls) == 2
    assert documents(stores["sieve_chunks_v2"]) == {"bees.txt": {job.version}}
    assert uploads.records.get_job(job.id).state.value == "done"
