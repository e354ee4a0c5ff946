"""The work of ingestion, as plain functions over a document version (the Celery tasks in ``ingestion.worker``
only add retry and bookkeeping; ``ingestion.reindex`` and evaluation reuse the same steps).

ingest: parse (in a child process with time and memory limits, ``ingestion.sandbox``) -> chunk (by the
        embedder's tokenizer, within the chunk budget) -> embed in batches -> upsert + flush per batch
        -> activate the version in the registry -> remove every other version's chunks.
Re-running any step is harmless: chunk ids are deterministic and writes are upserts. Every chunk carries the
metadata of the upload that made its version (the job's own), so a later upload cannot relabel it.

The collection must exist (``VectorStore.ensure_collection``) before anything is written: the worker
ensures it once per process and index, a rebuild when it creates the new collection, the API at start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ingestion.backends import make_blob_store
from ingestion.blobs import BlobStore, document_prefix
from ingestion.chunking import TextChunk, chunk_sections
from ingestion.errors import DocumentNotFoundError
from ingestion.parsers import Section
from ingestion.records import DocumentVersion, Job, JobState, Records
from ingestion.sandbox import limits_from, parse_file
from ingestion.settings import IngestSettings
from retrieval import Chunk, Embedder, VectorStore

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (chunks written, chunks in the version)


@dataclass(frozen=True, slots=True)
class ChunkBudget:
    """How long a chunk may be (in the embedder's tokens) and how much consecutive chunks overlap."""

    tokens: int
    overlap: int

    @classmethod
    def of(cls, embedder: Embedder, *, chunk_tokens: int, chunk_overlap: int) -> ChunkBudget:
        """The configured length capped by the embedder's own maximum (at least 8 tokens); the overlap at most
        a quarter of it."""
        tokens = max(8, min(chunk_tokens, embedder.max_tokens))
        return cls(tokens, min(chunk_overlap, tokens // 4))

    @classmethod
    def from_settings(cls, embedder: Embedder, settings: IngestSettings) -> ChunkBudget:
        return cls.of(embedder, chunk_tokens=settings.chunk_tokens, chunk_overlap=settings.chunk_overlap)

    def split(self, sections: Sequence[Section], embedder: Embedder) -> list[TextChunk]:
        return chunk_sections(
            sections,
            count_tokens=embedder.count_tokens,
            chunk_tokens=self.tokens,
            overlap_tokens=self.overlap,
        )


@dataclass(frozen=True, slots=True)
class Written:
    """What ``write_chunks`` wrote, and the seconds it spent embedding and upserting."""

    chunks: int
    embed_s: float
    upsert_s: float


def write_chunks(
    chunks: Iterable[Chunk],
    *,
    store: VectorStore,
    embedder: Embedder,
    batch: int,
    progress: Callable[[int], None] | None = None,
) -> Written:
    """Embed chunks in batches of ``batch`` and upsert each batch (the store flushes per upsert).

    ``chunks`` may span many documents and may be a generator (chunked lazily); ``progress`` is called with
    the number written so far after each batch."""
    step = max(1, batch)
    done, embed_s, upsert_s = 0, 0.0, 0.0
    pending: list[Chunk] = []

    def flush() -> None:
        nonlocal done, embed_s, upsert_s
        started = time.perf_counter()
        vectors = embedder.embed_documents([c.indexed_text for c in pending])
        embed_s += time.perf_counter() - started
        started = time.perf_counter()
        store.upsert(pending, vectors)
        upsert_s += time.perf_counter() - started
        done += len(pending)
        pending.clear()
        if progress:
            progress(done)

    for chunk in chunks:
        pending.append(chunk)
        if len(pending) >= step:
            flush()
    if pending:
        flush()
    return Written(done, embed_s, upsert_s)


def chunk_version(
    version: DocumentVersion,
    embedder: Embedder,
    budget: ChunkBudget,
    settings: IngestSettings | None = None,
    blobs: BlobStore | None = None,
) -> list[TextChunk]:
    """Parse the version's stored file (from ``blobs``, else the store ``settings`` name) under the limits of
    ``settings`` and chunk it. Raises the parser's errors (``ParseLimitError`` for a parse past a limit),
    ``FileNotFoundError`` when the file is gone, ``BlobStoreUnavailableError`` when the store is down."""
    settings = settings or IngestSettings()
    parse_limits, sandbox = limits_from(settings)
    blobs = make_blob_store(settings) if blobs is None else blobs
    with blobs.fetch(version.blob_key) as path:  # a download (S3) is removed after the parse
        sections = parse_file(path, version.filename, parse_limits, sandbox)
    return budget.split(sections, embedder)


def write_version(
    version: DocumentVersion,
    metadata: dict[str, Any],
    *,
    store: VectorStore,
    embedder: Embedder,
    settings: IngestSettings,
    progress: Progress | None = None,
    blobs: BlobStore | None = None,
) -> int:
    """Chunk, embed and upsert one document version (``metadata`` goes with every chunk, with the filename).
    Returns the number of chunks. Nothing is activated: see ``settle``."""
    budget = ChunkBudget.from_settings(embedder, settings)
    pieces = chunk_version(version, embedder, budget, settings, blobs)
    total = len(pieces)
    base_meta = {**metadata, "filename": version.filename}
    chunks = (
        Chunk(
            tenant=version.tenant,
            document_id=version.document_id,
            version=version.version,
            position=p.position,
            page=p.page,
            text=p.text,
            context=p.context,
            metadata=base_meta,
        )
        for p in pieces
    )
    if progress:
        progress(0, total)
    step = (lambda done: progress(done, total)) if progress else None
    return write_chunks(
        chunks, store=store, embedder=embedder, batch=settings.embed_batch, progress=step
    ).chunks


def ingest(
    version: DocumentVersion,
    *,
    records: Records,
    store: VectorStore,
    embedder: Embedder,
    settings: IngestSettings,
    progress: Progress | None = None,
    metadata: dict[str, Any] | None = None,
    blobs: BlobStore | None = None,
) -> int:
    """Index one document version and make it the served one. Returns the number of chunks.

    ``metadata``: the upload's own (a job's); None takes the document record's (jobs recorded before jobs
    carried their metadata). ``blobs``: where the file is (the store ``settings`` name when None). Raises the
    parser's errors (permanent) or store/Redis/blob-store errors (transient).
    """
    try:
        document = records.get_document(version.tenant, version.document_id)
    except DocumentNotFoundError:
        logger.info(
            "document %s was deleted before version %s was indexed", version.document_id, version.version
        )
        return 0
    meta = document.metadata if metadata is None else metadata
    total = write_version(
        version, meta, store=store, embedder=embedder, settings=settings, progress=progress, blobs=blobs
    )
    settle(version, records=records, store=store, chunks=total, metadata=meta)
    return total


def settle(
    version: DocumentVersion,
    *,
    records: Records,
    store: VectorStore,
    chunks: int,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Switch search to this version if it is still the latest upload, then drop stale chunks.

    The switch is one atomic registry write, and search serves only a document's active version, so a
    query never sees both versions or neither. A superseded version removes only its own chunks.
    """
    tenant, document_id = version.tenant, version.document_id
    if records.activate(tenant, document_id, version.version, chunks, metadata=metadata):
        records.bump_index_version(tenant)  # cached results of the old version are never served again
        store.delete_document(tenant, document_id, except_versions=[version.version])
        logger.info("document %s version %s active with %d chunks", document_id, version.version, chunks)
        return
    try:
        current = records.get_document(tenant, document_id)
        keep = {current.active, current.latest}
    except DocumentNotFoundError:
        keep = set()
    if version.version not in keep:
        store.delete_document(tenant, document_id, version=version.version)
    logger.info("superseded: version %s of %s not activated", version.version, document_id)


def discard(version: DocumentVersion, *, records: Records, store: VectorStore) -> None:
    """Remove the chunks a failed job wrote for ``version``, unless search serves that version: chunks of a
    version that never activates are not left behind."""
    try:
        active = records.get_document(version.tenant, version.document_id).active
    except DocumentNotFoundError:
        active = ""
    if version.version and version.version != active:
        store.delete_document(version.tenant, version.document_id, version=version.version)


def delete(tenant: str, document_id: str, *, records: Records, store: VectorStore, blobs: BlobStore) -> None:
    """Remove a deleted document's chunks and stored files; if it was re-uploaded meanwhile, keep the new
    upload."""
    try:
        current = records.get_document(tenant, document_id)
    except DocumentNotFoundError:
        store.delete_document(tenant, document_id)
        blobs.delete_prefix(document_prefix(tenant, document_id))
        records.forget(tenant, document_id)
        records.bump_index_version(tenant)
        return
    keep = [v for v in (current.active, current.latest) if v]
    store.delete_document(tenant, document_id, except_versions=keep)
    records.bump_index_version(tenant)


def run_job(job: Job, records: Records, work: Callable[[], int | None]) -> None:
    """Bookkeeping around a job's work: running -> done, with the attempt counted."""
    records.update_job(job.id, state=JobState.RUNNING, attempts=job.attempts + 1, error="")
    done = work()
    update: dict[str, JobState | int] = {"state": JobState.DONE}
    if done is not None:
        update |= {"chunks_done": done, "chunks_total": done}
    records.update_job(job.id, **update)
