"""Rebuild the index with a new embedder beside the serving one, then switch (plain functions; the Celery
task in ``ingestion.worker`` only adds retry and bookkeeping).

1. Create the new collection (empty: a leftover of a failed or older build under that name is dropped).
2. Re-chunk and re-embed the active version of every document of every tenant from its stored file.
3. Catch up: compare the registry again; re-index documents whose active version changed, remove the ones
   deleted; repeat until a pass finds nothing changed (at most ``max_passes``).
4. Switch the serving pointer (one Redis transaction), then one more catch-up pass.

Search and ingestion keep using the serving index until the switch: workers write only there, and the catch-up
passes carry what they wrote into the new index. A job that runs across the switch writes to the old index,
then notices the new generation and runs again on the new one (``ingestion.worker``); together with the pass
after the switch, no activation is missed. The old collection stays until ``drop_previous``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ingestion.blobs import BlobStore, version_prefix
from ingestion.errors import EmptyDocumentError, ParseError, UnsupportedFormatError
from ingestion.files import safe_name
from ingestion.indexes import BuildState, BuildStatus, Indexes, IndexSpec, ReindexBusyError
from ingestion.pipeline import write_version
from ingestion.records import Document, DocumentVersion, Records
from ingestion.settings import IngestSettings
from retrieval import Embedder, VectorStore

logger = logging.getLogger(__name__)

Key = tuple[str, str]  # (tenant, document_id)
Snapshot = dict[Key, Document]
UNREADABLE = (ParseError, UnsupportedFormatError, EmptyDocumentError, FileNotFoundError)


def active_documents(records: Records) -> Snapshot:
    """Every served document version of every tenant, as the registry says now."""
    return {
        (tenant, doc.document_id): doc
        for tenant in records.tenants()
        for doc in records.list_documents(tenant)
        if doc.active
    }


def index_document(
    doc: Document,
    *,
    blobs: BlobStore,
    store: VectorStore,
    embedder: Embedder,
    settings: IngestSettings,
) -> int:
    """Index the active version of ``doc`` from its stored file into ``store``; drop its other versions."""
    keys = blobs.list(version_prefix(doc.tenant, doc.document_id, doc.active))
    if not keys:
        raise FileNotFoundError(f"the stored file of {doc.document_id!r} version {doc.active} is gone")
    key = keys[0]
    stored = key.rsplit("/", 1)[-1]
    # The record's filename is the latest upload's; the served version's may have had another name.
    filename = doc.filename if safe_name(doc.filename) == stored else stored
    version = DocumentVersion(doc.tenant, doc.document_id, doc.active, filename, key)
    metadata = doc.metadata if doc.active_metadata is None else doc.active_metadata  # the served version's
    total = write_version(version, metadata, store=store, embedder=embedder, settings=settings, blobs=blobs)
    store.delete_document(doc.tenant, doc.document_id, except_versions=[doc.active])
    return total


class Rebuild:
    """One rebuild of ``build`` into ``store`` with ``embedder``; ``indexed`` is what the new index holds."""

    def __init__(
        self,
        build: BuildStatus,
        *,
        records: Records,
        indexes: Indexes,
        blobs: BlobStore,
        store: VectorStore,
        embedder: Embedder,
        settings: IngestSettings,
        default: IndexSpec,
        max_passes: int = 10,
        on_document: Callable[[BuildStatus], None] | None = None,
    ) -> None:
        self.build = build
        self.records, self.indexes, self.blobs = records, indexes, blobs
        self.store, self.embedder, self.settings = store, embedder, settings
        self.default = default
        self.max_passes = max_passes
        self.on_document = on_document
        self.indexed: dict[Key, str] = {}

    def run(self) -> BuildStatus:
        """Build, catch up, switch; returns the final status (``SWITCHED``). Store/Redis errors propagate."""
        if self.indexes.serving(self.default).collection == self.build.collection:
            raise ReindexBusyError(f"collection {self.build.collection!r} serves search: it is not rebuilt")
        self.store.drop()
        self.store.ensure_collection(embedder_name=self.embedder.name, dimension=self.embedder.dimension)
        self._update(state=BuildState.BUILDING, embedder_name=self.embedder.name)
        changed = self.sync(active_documents(self.records))
        self._update(state=BuildState.CATCHING_UP)
        while changed and self.build.passes < self.max_passes:
            self._update(passes=self.build.passes + 1)
            changed = self.sync(active_documents(self.records))
        if changed:
            logger.warning(
                "rebuild %s: still changing after %d passes; switching", self.build.id, self.max_passes
            )
        self.indexes.switch(
            self.build.spec().model_copy(update={"embedder_name": self.embedder.name}), default=self.default
        )
        self.sync(active_documents(self.records))  # what was activated between the last pass and the switch
        self._update(state=BuildState.SWITCHED)
        logger.info("rebuild %s switched search to %s", self.build.id, self.build.collection)
        return self.build

    def sync(self, snapshot: Snapshot) -> int:
        """Make the new index hold ``snapshot``: index what is missing or changed, remove what is gone.
        Returns how many documents changed."""
        changed = [key for key, doc in snapshot.items() if self.indexed.get(key) != doc.active]
        gone = [key for key in self.indexed if key not in snapshot]
        if self.build.state is BuildState.BUILDING:
            self._update(documents_total=len(changed))
        else:
            self._update(documents_total=self.build.documents_total + len(changed))
        for tenant, document_id in gone:
            self.store.delete_document(tenant, document_id)
            del self.indexed[(tenant, document_id)]
        for key in changed:
            self._index(snapshot[key])
        return len(changed) + len(gone)

    def _index(self, doc: Document) -> None:
        chunks = 0
        try:
            chunks = index_document(
                doc, blobs=self.blobs, store=self.store, embedder=self.embedder, settings=self.settings
            )
        except UNREADABLE as exc:  # the document cannot be served by the new index; the others can
            logger.warning(
                "rebuild %s: %s of %s skipped: %s", self.build.id, doc.document_id, doc.tenant, exc
            )
            self.store.delete_document(doc.tenant, doc.document_id)
            self._update(documents_failed=self.build.documents_failed + 1, error=str(exc)[:500])
        self.indexed[(doc.tenant, doc.document_id)] = doc.active
        self._update(documents_done=self.build.documents_done + 1, chunks=self.build.chunks + chunks)
        if self.on_document:
            self.on_document(self.build)

    def _update(self, **fields: object) -> None:
        self.build = self.build.model_copy(update=fields)
        self.indexes.update_build(self.build.id, **fields)


def drop_previous(indexes: Indexes, store: VectorStore) -> IndexSpec | None:
    """Drop the collection that served before the last switch (``store`` is on it); the switch can no
    longer be undone by switching back. Returns the dropped index, None when there is none."""
    previous = indexes.previous()
    if previous is None:
        return None
    store.drop()
    indexes.forget_previous()
    return previous
