"""Accepting uploads: validate, store durably, record, enqueue. Used by the API and the CLI."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from ingestion.backends import make_blob_store
from ingestion.blobs import BlobStore, version_key
from ingestion.errors import DocumentNotFoundError, DocumentTooLargeError, IngestError
from ingestion.files import content_version, safe_name
from ingestion.parsers import detect_format
from ingestion.records import Job, JobState, Records
from ingestion.settings import IngestSettings
from ingestion.validation import check_metadata, parse_metadata, validate_document_id

logger = logging.getLogger(__name__)


class TaskSender(Protocol):
    def send_task(self, name: str, args: list[Any], queue: str | None = None) -> Any: ...


class Uploads:
    """``blobs``: where accepted files are stored (``INGEST_BLOB_STORE`` when not given)."""

    def __init__(
        self,
        settings: IngestSettings,
        records: Records,
        sender: TaskSender,
        *,
        blobs: BlobStore | None = None,
    ) -> None:
        self.settings = settings
        self.records = records
        self.sender = sender
        self.blobs = make_blob_store(settings) if blobs is None else blobs

    def check(self, filename: str, data: bytes) -> None:
        """Cheap checks at the door: size, supported type, not binary junk (raises ``IngestError``)."""
        if len(data) > self.settings.max_file_bytes:
            raise DocumentTooLargeError(
                f"{filename} is {len(data)} bytes; the limit is {self.settings.max_file_bytes} "
                "(INGEST_MAX_FILE_BYTES)"
            )
        detect_format(filename, data)

    def accept(
        self, tenant: str, filename: str, data: bytes, *, document_id: str | None, metadata: dict[str, Any]
    ) -> Job:
        """Store the file, record the job (with its metadata), enqueue it. Raises ``IngestError`` for a file
        we refuse, ``ValueError`` (naming the field) for a bad ``document_id`` or ``metadata``."""
        self.check(filename, data)
        document_id = validate_document_id(document_id or safe_name(filename, limit=256))
        settings = self.settings
        check_metadata(metadata, max_bytes=settings.max_metadata_bytes, max_depth=settings.max_metadata_depth)
        version = content_version(data, metadata)
        try:
            current = self.records.get_document(tenant, document_id)
            unchanged = current.chunks if current.active == version else None
        except DocumentNotFoundError:
            unchanged = None
        key = version_key(tenant, document_id, version, filename)
        self.blobs.put(key, data)  # durable before the job is recorded (BlobStoreUnavailableError: 503)
        job = self.records.accept_upload(
            tenant,
            document_id,
            version=version,
            filename=filename,
            path=key,
            metadata=metadata,
            unchanged_chunks=unchanged,
        )
        if job.state is JobState.QUEUED:
            self.enqueue(job)
        return job

    def parse_metadata(self, raw: str | None) -> dict[str, Any]:
        """The metadata form field of an upload as a dict ({} when absent); ``ValueError`` names the field."""
        limits = self.settings
        return parse_metadata(raw, max_bytes=limits.max_metadata_bytes, max_depth=limits.max_metadata_depth)

    def delete(self, tenant: str, document_id: str) -> Job:
        job = self.records.request_delete(tenant, document_id)
        self.enqueue(job)
        return job

    def enqueue(self, job: Job) -> None:
        task = "sieve.delete" if job.kind == "delete" else "sieve.ingest"
        self.sender.send_task(task, args=[job.id], queue=self.settings.queue)
        self.records.mark_enqueued(job.id)

    def recover(self) -> int:
        """Re-send jobs that were recorded but whose enqueue was not confirmed (a crash in between)."""
        count = 0
        for job_id in self.records.pending_jobs():
            try:
                self.enqueue(self.records.get_job(job_id))
                count += 1
            except DocumentNotFoundError:
                self.records.mark_enqueued(job_id)
        if count:
            logger.info("re-enqueued %d accepted jobs after a restart", count)
        return count


__all__ = ["IngestError", "Uploads", "validate_document_id"]
