"""Ingestion on real services under trouble: a Redis of the test's own crashed and restarted while a job runs,
and hostile files (a .docx zip bomb, 100,000 nested <div>s) on a real Celery worker.

The worker is the product's (``ingestion.worker``) with a slow hashed embedder (``tests.support.slow_worker``)
so a job runs long enough to be interrupted; chunks go to a real Milvus Lite server.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from pymilvus import MilvusClient

from ingestion.records import Job, JobState, Records
from ingestion.settings import IngestSettings
from ingestion.uploads import Uploads
from ingestion.worker import make_celery
from retrieval.milvus_store import GRPC_OPTIONS
from tests.support import bombs
from tests.support.ingest_services import RedisServer, celery_worker, redis_server
from tests.support.services import ServiceStartError, start_milvus_lite

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COLLECTION = "resilience_chunks"
QUEUE = "sieve.ingest.resilience"
PARAGRAPH = (
    "Swifts spend most of their lives in the air, feeding, drinking and even sleeping on the wing, and they "
    "land only to nest; a young swift may fly for two or three years before it first touches down. "
)
WORKER_RSS_CAP = 1536 * 2**20  # the worker's processes together (README: Ingestion limits)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisServer, str, Path]]:
    home = tmp_path_factory.mktemp("resilience")
    try:
        with redis_server(home / "redis") as server, start_milvus_lite(home / "milvus") as (_, milvus_uri):
            yield server, milvus_uri, home
    except ServiceStartError as exc:
        pytest.skip(f"services did not start: {exc}")


def worker_env(server: RedisServer, milvus_uri: str, home: Path, **extra: str) -> dict[str, str]:
    return {
        "INGEST_REDIS_URL": server.url,
        "INGEST_DATA_DIR": str(home / "files"),
        "INGEST_QUEUE": QUEUE,
        "INGEST_CHUNK_TOKENS": "24",
        "INGEST_CHUNK_OVERLAP": "0",
        "INGEST_EMBED_BATCH": "4",
        "INGEST_VISIBILITY_TIMEOUT_S": "15",
        "INGEST_RESTORE_INTERVAL_S": "1",
        "INGEST_RETRY_BACKOFF_S": "1",
        "INGEST_HEARTBEAT_S": "1",
        "INGEST_STALE_JOB_S": "20",
        "INGEST_SWEEP_INTERVAL_S": "5",
        "RETRIEVAL_MILVUS_URI": milvus_uri,
        "RETRIEVAL_COLLECTION": COLLECTION,
        "SIEVE_TEST_EMBED_DELAY_S": "0.5",
        **extra,
    }


def uploads_for(server: RedisServer, home: Path) -> Uploads:
    settings = IngestSettings(redis_url=server.url, data_dir=home / "files", queue=QUEUE)
    return Uploads(settings, Records(server.url, retry_s=30), make_celery(settings))


def wait_for(records: Records, job_id: str, *, until: tuple[JobState, ...], timeout: float = 240) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_workers()
        job = records.get_job(job_id)
        if job.state in until:
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {records.get_job(job_id)} after {timeout:.0f} s")


def wait_running(records: Records, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_workers()
        job = records.get_job(job_id)
        if job.state is JobState.RUNNING and job.chunks_done > 0:
            return
        assert job.state not in (JobState.DONE, JobState.FAILED), job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not start within {timeout:.0f} s")


WORKERS: list[subprocess.Popen[bytes]] = []


def check_workers() -> None:
    for proc in WORKERS:
        assert proc.poll() is None, f"the worker exited with {proc.returncode} (its log: the test folder)"


@contextlib.contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with celery_worker(env, log, queue=QUEUE) as proc:
        WORKERS.append(proc)
        try:
            yield proc
        finally:
            WORKERS.remove(proc)


def stored_versions(milvus_uri: str, tenant: str, document_id: str) -> dict[str, int]:
    client = MilvusClient(uri=milvus_uri, grpc_options=GRPC_OPTIONS)
    try:
        rows = client.query(
            COLLECTION,
            filter=f'tenant == "{tenant}" and doc_id == "{document_id}"',
            output_fields=["version"],
            limit=16384,
        )
    finally:
        client.close()
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["version"]] = counts.get(row["version"], 0) + 1
    return counts


@pytest.mark.parametrize(
    ("redis_retry_s", "outage_s"),
    [("30", 4.0), ("1", 8.0)],
    ids=["outage-ridden-out", "outage-longer-than-the-retry-window"],
)
def test_a_job_running_through_a_redis_crash_ends_done_without_orphan_chunks(
    services: tuple[RedisServer, str, Path], redis_retry_s: str, outage_s: float
) -> None:
    server, milvus_uri, home = services
    tenant = f"t-{redis_retry_s}"
    env = worker_env(server, milvus_uri, home, INGEST_REDIS_RETRY_S=redis_retry_s)
    with worker(env, home / f"worker-{redis_retry_s}.log"):
        uploads = uploads_for(server, home)
        records = uploads.records
        first = uploads.accept(tenant, "swifts.txt", PARAGRAPH.encode(), document_id=None, metadata={})
        assert wait_for(records, first.id, until=(JobState.DONE, JobState.FAILED)).state is JobState.DONE

        long_text = (PARAGRAPH * 30).encode()  # ~80 chunks: 20 slow batches, ~10 s
        second = uploads.accept(tenant, "swifts.txt", long_text, document_id=None, metadata={"v": 2})
        wait_running(records, second.id)
        server.kill()
        time.sleep(outage_s)
        server.start()

        job = wait_for(records, second.id, until=(JobState.DONE, JobState.FAILED))
        assert job.state is JobState.DONE, job
        assert job.chunks_done == job.chunks_total > 0
        document = records.get_document(tenant, "swifts.txt")
        assert document.active == second.version and document.chunks == job.chunks_total
        # the first version's chunks are gone, the second's all there: no orphans, none missing
        assert stored_versions(milvus_uri, tenant, "swifts.txt") == {second.version: job.chunks_total}


class RssWatch:
    """Samples the summed RSS of a process and its children every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            total = 0
            for proc in [self.root, *self.root.children(recursive=True)]:
                try:
                    if proc.ppid() != self.root.pid and "ingestion.sandbox" not in proc.cmdline():
                        continue  # a parse child before its exec shares the pool process's pages
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak = max(self.peak, total)


def test_bombs_fail_with_their_reason_and_other_jobs_keep_flowing(
    services: tuple[RedisServer, str, Path],
) -> None:
    server, milvus_uri, home = services
    env = worker_env(server, milvus_uri, home, SIEVE_TEST_EMBED_DELAY_S="0")
    with worker(env, home / "worker-bombs.log") as proc, RssWatch(proc.pid) as rss:
        uploads = uploads_for(server, home)
        records = uploads.records
        zip_bomb = bombs.docx_bomb(400)
        assert len(zip_bomb) < 2_000_000
        bomb_jobs = [
            uploads.accept("hostile", "report.docx", zip_bomb, document_id=None, metadata={}),
            uploads.accept("hostile", "deep.html", bombs.nested_divs(100_000), document_id=None, metadata={}),
        ]
        other = uploads.accept("calm", "swifts.txt", PARAGRAPH.encode(), document_id=None, metadata={})
        failed = [wait_for(records, job.id, until=(JobState.DONE, JobState.FAILED)) for job in bomb_jobs]
        assert [job.state for job in failed] == [JobState.FAILED, JobState.FAILED]
        assert failed[0].attempts == 1 and "INGEST_DOCX_MAX_UNPACKED_MB" in failed[0].error
        assert failed[1].attempts == 1 and "INGEST_MARKUP_MAX_DEPTH" in failed[1].error
        assert wait_for(records, other.id, until=(JobState.DONE, JobState.FAILED)).state is JobState.DONE
    assert 0 < rss.peak < WORKER_RSS_CAP
