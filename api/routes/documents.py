"""Document upload, jobs, listing and deletion."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from api.deps import RecordsDep, TenantDep, UploadsDep
from api.errors import ApiError, status_for
from ingestion.errors import IngestError
from ingestion.records import Document, Job, JobState
from ingestion.validation import validate_document_id

router = APIRouter(prefix="/v1", tags=["documents"])


class JobView(BaseModel):
    job_id: str
    kind: str
    document_id: str
    filename: str
    state: JobState
    chunks_done: int
    chunks_total: int
    attempts: int
    error: str

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(
            job_id=job.id,
            kind=job.kind,
            document_id=job.document_id,
            filename=job.filename,
            state=job.state,
            chunks_done=job.chunks_done,
            chunks_total=job.chunks_total,
            attempts=job.attempts,
            error=job.error,
        )


class Rejected(BaseModel):
    filename: str
    status: int
    error: str


class UploadResponse(BaseModel):
    jobs: list[JobView]
    rejected: list[Rejected]


class DocumentView(BaseModel):
    document_id: str
    filename: str
    metadata: dict[str, Any]
    version: str
    pending_version: str | None
    chunks: int
    last_job: str

    @classmethod
    def of(cls, doc: Document) -> DocumentView:
        return cls(
            document_id=doc.document_id,
            filename=doc.filename,
            metadata=doc.metadata,
            version=doc.active,
            pending_version=doc.latest if doc.latest != doc.active else None,
            chunks=doc.chunks,
            last_job=doc.last_job,
        )


@router.post("/documents", status_code=202, response_model=UploadResponse)
async def upload(
    tenant: TenantDep,
    uploads: UploadsDep,
    files: Annotated[list[UploadFile], File(description="One or many files: txt, md, html, pdf, docx")],
    metadata: Annotated[str | None, Form(description="JSON object stored with every chunk")] = None,
    document_id: Annotated[str | None, Form(description="Client document id (one file only)")] = None,
) -> UploadResponse:
    """Accept files; each accepted file gets a job. Files refused at the door are listed in ``rejected``;
    if every file is refused the whole request fails with the first file's status. ``metadata`` and
    ``document_id`` are checked before any file is read: a value the store could not keep is a 422 naming
    the field, never an accepted job that fails later."""
    try:
        meta = uploads.parse_metadata(metadata)
        if document_id is not None:
            document_id = validate_document_id(document_id)
    except ValueError as exc:
        raise ApiError(422, str(exc)) from exc
    if document_id is not None and len(files) != 1:
        raise ApiError(422, "document_id can only be given with exactly one file")
    if len(files) > uploads.settings.max_files_per_upload:
        raise ApiError(413, f"at most {uploads.settings.max_files_per_upload} files per upload")
    jobs: list[JobView] = []
    rejected: list[Rejected] = []
    for upload_file in files:
        name = upload_file.filename or "upload"
        data = await upload_file.read(uploads.settings.max_file_bytes + 1)
        try:
            job = await run_in_threadpool(
                uploads.accept, tenant, name, data, document_id=document_id, metadata=meta
            )
        except (IngestError, ValueError) as exc:
            status = status_for(exc) if isinstance(exc, IngestError) else 422
            rejected.append(Rejected(filename=name, status=status, error=str(exc)))
            continue
        jobs.append(JobView.of(job))
    if not jobs:
        first = rejected[0]
        raise ApiError(
            first.status,
            first.error if len(rejected) == 1 else "; ".join(f"{r.filename}: {r.error}" for r in rejected),
        )
    return UploadResponse(jobs=jobs, rejected=rejected)


@router.get("/jobs/{job_id}", response_model=JobView)
def get_job(job_id: str, tenant: TenantDep, records: RecordsDep) -> JobView:
    return JobView.of(records.get_job(job_id, tenant=tenant))


@router.get("/documents", response_model=list[DocumentView])
def list_documents(tenant: TenantDep, records: RecordsDep) -> list[DocumentView]:
    return [DocumentView.of(d) for d in records.list_documents(tenant)]


@router.get("/documents/{document_id:path}", response_model=DocumentView)
def get_document(document_id: str, tenant: TenantDep, records: RecordsDep) -> DocumentView:
    return DocumentView.of(records.get_document(tenant, document_id))


@router.delete("/documents/{document_id:path}", status_code=202, response_model=JobView)
def delete_document(document_id: str, tenant: TenantDep, uploads: UploadsDep) -> JobView:
    """Hides the document from search at once; a job removes its chunks."""
    return JobView.of(uploads.delete(tenant, document_id))
