"""The S3 blob store on a real S3-speaking server (moto's, a child process on a free port): the blob-store
contract, downloads removed after the parse, a server that is down, and an ingest end to end through it
(upload through the HTTP API, which stores the file in the bucket; the Celery tasks of a worker, which read it
back for the sandboxed parser; a delete, which removes it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from ingestion.backends import make_blob_store
from ingestion.backends.s3_blobs import S3BlobStore, make_client
from ingestion.blobs import BlobStore, document_prefix
from ingestion.errors import BlobStoreUnavailableError
from ingestion.records import JobState
from ingestion.settings import IngestSettings
from ingestion.worker import WorkerContext, make_celery
from retrieval import RetrievalSettings
from tests.contract.blob_store import BlobStoreContract
from tests.support.apikit import T1, running
from tests.support.fakes import RecordingSender
from tests.support.s3_server import S3Server, start_moto
from tests.support.services import free_port

pytestmark = pytest.mark.integration

BEES = "Honey bees tell their hive mates where the flowers are with the waggle dance. " * 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with start_moto(tmp_path_factory.mktemp("moto") / "moto.log") as started:
        yield started


def new_bucket(server: S3Server) -> str:
    bucket = f"sieve-{uuid.uuid4().hex[:12]}"
    make_client(IngestSettings(**server.settings(bucket))).create_bucket(Bucket=bucket)
    return bucket


def objects(server: S3Server, bucket: str) -> list[str]:
    """Every object name in ``bucket``, read with a client of its own (not the store under test)."""
    s3 = boto3.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
    )
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


class TestS3BlobStore(BlobStoreContract):
    @pytest.fixture
    def blobs(self, server: S3Server, tmp_path: Path) -> BlobStore:
        bucket = new_bucket(server)
        return make_blob_store(IngestSettings(**server.settings(bucket, s3_download_dir=tmp_path / "dl")))


def test_objects_sit_under_the_prefix_and_downloads_are_removed(server: S3Server, tmp_path: Path) -> None:
    bucket = new_bucket(server)
    downloads = tmp_path / "dl"
    downloads.mkdir()
    blobs = make_blob_store(
        IngestSettings(**server.settings(bucket, s3_prefix="/tenants/files/", s3_download_dir=downloads))
    )
    assert isinstance(blobs, S3BlobStore)
    blobs.put("t/doc/v1/a.txt", b"alpha")
    assert objects(server, bucket) == ["tenants/files/t/doc/v1/a.txt"]
    with blobs.fetch("t/doc/v1/a.txt") as path:
        assert path.parent == downloads and path.read_bytes() == b"alpha"
    assert list(downloads.iterdir()) == []
    with pytest.raises(RuntimeError, match="parser crashed"), blobs.fetch("t/doc/v1/a.txt"):
        raise RuntimeError("parser crashed")
    assert list(downloads.iterdir()) == []
    with pytest.raises(FileNotFoundError), blobs.fetch("t/doc/v1/missing.txt"):
        pass
    assert list(downloads.iterdir()) == []


def test_a_store_that_cannot_be_reached_is_unavailable_not_missing(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    settings = IngestSettings(
        blob_store="s3",
        s3_bucket="b",
        s3_endpoint_url=closed,
        s3_region="us-east-1",
        s3_access_key_id="x",
        s3_secret_access_key="y",
        s3_timeout_s=1,
        s3_max_attempts=1,
        s3_download_dir=tmp_path,
    )
    blobs = make_blob_store(settings)
    with pytest.raises(BlobStoreUnavailableError):
        blobs.put("a/b.txt", b"x")
    with pytest.raises(BlobStoreUnavailableError), blobs.fetch("a/b.txt"):
        pass
    with pytest.raises(BlobStoreUnavailableError):
        blobs.list("a/")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_bucket_is_unavailable(server: S3Server) -> None:
    blobs = make_blob_store(IngestSettings(**server.settings("no-such-bucket-here")))
    with pytest.raises(BlobStoreUnavailableError, match="NoSuchBucket"):
        blobs.put("a/b.txt", b"x")


def test_upload_ingest_search_delete_through_the_bucket(server: S3Server, tmp_path: Path) -> None:
    bucket = new_bucket(server)
    downloads = tmp_path / "dl"
    downloads.mkdir()
    ingest = IngestSettings(
        **server.settings(bucket, s3_download_dir=downloads),
        data_dir=tmp_path / "never-used",
        chunk_tokens=32,
        chunk_overlap=4,
        embed_batch=8,
    )
    assert ingest.parse_sandbox  # the parser reads the downloaded file in its own process
    with running(tmp_path, ingest=ingest) as h:
        model = h.res.models.current()
        worker = make_celery(
            context=WorkerContext(
                ingest,  # the worker builds its own blob store from the same settings
                RetrievalSettings(milvus_uri="memory://"),
                embedder_factory=lambda _: model.embedder,
                store_factory=lambda _: model.store,
                records=h.res.records,
            )
        )

        def work() -> list[Any]:
            sender: RecordingSender = h.res.uploads.sender  # type: ignore[assignment]
            jobs = []
            for name, (job_id,) in sender.sent:
                worker.tasks[name].apply(args=[job_id])
                jobs.append(h.res.records.get_job(job_id))
            sender.sent.clear()
            return jobs

        h.upload(T1, "bees", BEES)
        stored = objects(server, bucket)
        assert len(stored) == 1 and stored[0].startswith("sieve/files/" + document_prefix("t1", "bees"))
        assert not (tmp_path / "never-used").exists()

        [job] = work()
        assert job.state is JobState.DONE and job.chunks_total > 0, job.error
        assert list(downloads.iterdir()) == []
        assert h.search(T1, "waggle dance hive")["hits"][0]["document_id"] == "bees"

        h.delete(T1, "bees")
        [deleted] = work()
        assert deleted.state is JobState.DONE, deleted.error
        assert objects(server, bucket) == []
        assert h.search(T1, "waggle dance hive")["hits"] == []


def test_a_job_whose_file_is_gone_from_the_bucket_fails_with_the_reason(
    server: S3Server, tmp_path: Path
) -> None:
    bucket = new_bucket(server)
    ingest = IngestSettings(**server.settings(bucket), chunk_tokens=32, chunk_overlap=4, embed_batch=8)
    with running(tmp_path, ingest=ingest) as h:
        model = h.res.models.current()
        worker = make_celery(
            context=WorkerContext(
                ingest,
                RetrievalSettings(milvus_uri="memory://"),
                embedder_factory=lambda _: model.embedder,
                store_factory=lambda _: model.store,
                records=h.res.records,
            )
        )
        h.upload(T1, "bees", BEES)
        h.res.uploads.blobs.delete_prefix(document_prefix("t1", "bees"))
        sender: RecordingSender = h.res.uploads.sender  # type: ignore[assignment]
        [(name, (job_id,))] = sender.sent
        worker.tasks[name].apply(args=[job_id], retries=0)
        job = h.res.records.get_job(job_id)
        assert job.state is JobState.FAILED and "no stored file" in job.error


def test_an_upload_while_the_bucket_is_unreachable_is_503_and_records_no_job(tmp_path: Path) -> None:
    ingest = IngestSettings(
        blob_store="s3",
        s3_bucket="b",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        s3_region="us-east-1",
        s3_access_key_id="x",
        s3_secret_access_key="y",
        s3_timeout_s=1,
        s3_max_attempts=1,
    )
    with running(tmp_path, ingest=ingest) as h:
        files = [("files", ("bees.txt", BEES.encode()))]
        r = h.client.post("/v1/documents", files=files, headers=T1)
        assert r.status_code == 503, r.text
        assert "unreachable" in r.text and "127.0.0.1" not in r.text  # never where the store is
        assert h.res.records.list_documents("t1") == []
        assert h.res.uploads.sender.sent == []  # type: ignore[attr-defined]
