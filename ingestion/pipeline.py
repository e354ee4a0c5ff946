"""The work of an ingestion job, as plain functions (the Celery tasks only add retry and bookkeeping).

ingest: parse -> chunk (by the embedder's tokenizer) -> embed in batches -> upsert + flush per batch
        -> activate the version in the registry -> remove every other version's chunks.
Re-running any step is harmless: chunk ids are deterministic and writes are upserts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingestion.chunking import TextChunk, chunk_sections
from ingestion.errors import DocumentNotFoundError
from ingestion.files import FileStore
from ingestion.parsers import parse
from ingestion.records import Job, JobState, Records
from ingestion.settings import IngestSettings
from retrieval import Chunk, Embedder, VectorStore

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


def chunk_document(job: Job, embedder: Embedder, settings: IngestSettings) -> list[TextChunk]:
    data = Path(job.path).read_bytes()
    sections = parse(data, job.filename)
    budget = max(8, min(settings.chunk_tokens, embedder.max_tokens))
    overlap = min(settings.chunk_overlap, budget // 4)
    return chunk_sections(
        sections, count_tokens=embedder.count_tokens, chunk_tokens=budget, overlap_tokens=overlap
    )


def ingest(
    job: Job,
    *,
    records: Records,
    store: VectorStore,
    embedder: Embedder,
    settings: IngestSettings,
    progress: Progress | None = None,
) -> int:
    """Index one document version and make it the served one. Returns the number of chunks.

    Raises the parser's errors (permanent) or store/Redis errors (transient, worth a retry).
    """
    try:
        document = records.get_document(job.tenant, job.document_id)
    except DocumentNotFoundError:
        logger.info("document %s was deleted before job %s ran; nothing to do", job.document_id, job.id)
        return 0
    pieces = chunk_document(job, embedder, settings)
    store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
    metadata = {**document.metadata, "filename": job.filename}
    total = write_chunks(
        job, pieces, metadata, store=store, embedder=embedder, settings=settings, progress=progress
    )
    settle(job, records=records, store=store, chunks=total)
    return total


def write_chunks(
    job: Job,
    pieces: list[TextChunk],
    base_meta: dict[str, Any],
    *,
    store: VectorStore,
    embedder: Embedder,
    settings: IngestSettings,
    progress: Progress | None = None,
) -> int:
    """Embed a version's chunks in batches and upsert them (flushed per batch). Returns how many."""
    total = len(pieces)
    if progress:
        progress(0, total)
    step = max(1, settings.embed_batch)
    for start in range(0, total, step):
        batch = pieces[start : start + step]
        chunks = [
            Chunk(
                tenant=job.tenant,
                document_id=job.document_id,
                version=job.version,
                position=p.position,
                page=p.page,
                text=p.text,
                metadata=base_meta,
            )
            for p in batch
        ]
        vectors = embedder.embed_documents([c.text for c in chunks])
        store.upsert(chunks, vectors)
        if progress:
            progress(start + len(batch), total)
    return total


def settle(job: Job, *, records: Records, store: VectorStore, chunks: int) -> None:
    """Switch search to this version if it is still the latest upload, then drop stale chunks.

    The switch is one atomic registry write, and search serves only a document's active version, so a
    query never sees both versions or neither. A superseded job removes only its own chunks.
    """
    if records.activate(job.tenant, job.document_id, job.version, chunks):
        records.bump_index_version(job.tenant)  # cached results of the old version are never served again
        store.delete_document(job.tenant, job.document_id, except_versions=[job.version])
        logger.info("document %s version %s active with %d chunks", job.document_id, job.version, chunks)
        return
    try:
        current = records.get_document(job.tenant, job.document_id)
        keep = {current.active, current.latest}
    except DocumentNotFoundError:
        keep = set()
    if job.version not in keep:
        store.delete_document(job.tenant, job.document_id, version=job.version)
    logger.info("job %s superseded: version %s of %s not activated", job.id, job.version, job.document_id)


def delete(job: Job, *, records: Records, store: VectorStore, files: FileStore) -> None:
    """Remove a deleted document's chunks and files; if it was re-uploaded meanwhile, keep the new upload."""
    try:
        current = records.get_document(job.tenant, job.document_id)
    except DocumentNotFoundError:
        store.delete_document(job.tenant, job.document_id)
        files.remove_document(job.tenant, job.document_id)
        records.forget(job.tenant, job.document_id)
        records.bump_index_version(job.tenant)
        return
    keep = [v for v in (current.active, current.latest) if v]
    store.delete_document(job.tenant, job.document_id, except_versions=keep)
    records.bump_index_version(job.tenant)


def run_job(job: Job, records: Records, work: Callable[[], int | None]) -> None:
    """Bookkeeping around a job's work: running -> done, with the attempt counted."""
    records.update_job(job.id, state=JobState.RUNNING, attempts=job.attempts + 1, error="")
    done = work()
    update: dict[str, JobState | int] = {"state": JobState.DONE}
    if done is not None:
        update |= {"chunks_done": done, "chunks_total": done}
    records.update_job(job.id, **update)
