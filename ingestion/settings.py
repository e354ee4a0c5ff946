"""Settings of the ingestion stage (environment prefix ``INGEST_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    # Redis: Celery broker, job states and the document registry. The embedded stack starts its own
    # Redis on this port (never the machine's 6379), with an append-only file in its data dir.
    redis_url: str = "redis://127.0.0.1:6390/0"
    # Where accepted files are stored (durably, before the upload is answered) and read by the workers
    # (``ingestion.blobs``): "local", the folder data_dir, which API and workers must share as a disk; or
    # "s3", a bucket of an S3-compatible server (MinIO, AWS S3), shared over the network (the ``s3`` extra).
    blob_store: Literal["local", "s3"] = "local"
    data_dir: Path = Path(".sieve/files")
    s3_bucket: str = ""
    s3_prefix: str = "sieve/files"  # key prefix inside the bucket
    s3_endpoint_url: str = ""  # e.g. http://minio:9000; empty: AWS S3
    s3_region: str = ""  # empty: boto3's (AWS_REGION / AWS_DEFAULT_REGION, a profile)
    # Credentials; empty: boto3's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, a role)
    s3_access_key_id: str = ""
    s3_secret_access_key: SecretStr = SecretStr("")
    # "auto" is "path" when s3_endpoint_url is set (MinIO serves buckets as paths), else boto3's choice.
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_timeout_s: float = 10.0  # connect and read timeout of one request
    s3_max_attempts: int = 3  # boto3's retries of one request (standard mode)
    # A worker downloads a file here for the parser and removes it after; empty: the system's temp folder.
    s3_download_dir: Path | None = None
    queue: str = "sieve.ingest"

    max_file_bytes: int = 50 * 1024 * 1024
    max_files_per_upload: int = 100
    # Upload metadata (a JSON object): its size in UTF-8 bytes and how deeply it may nest.
    max_metadata_bytes: int = 64 * 1024
    max_metadata_depth: int = 32
    chunk_tokens: int = 256  # capped by the embedder's own maximum
    chunk_overlap: int = 32
    embed_batch: int = 32

    # Celery delivery: a message whose worker died (kill -9 of the main process) is redelivered after
    # visibility_timeout; a killed child is redelivered at once (acks_late + reject_on_worker_lost).
    visibility_timeout_s: int = 600
    # How often a worker looks for such messages (kombu's default sweep is about every 100 s).
    restore_interval_s: int = 10
    max_retries: int = 5
    retry_backoff_s: int = 2
    retry_backoff_max_s: int = 60
    # A job started this many times without finishing (worker killed, time limit, broker outages) fails.
    max_attempts: int = 10
    # How long a worker keeps retrying a Redis write (job state, progress, activation) before it leaves the
    # message unacknowledged for redelivery: a Redis restart shorter than this costs nothing.
    redis_retry_s: float = 30.0
    # A running job writes a heartbeat every heartbeat_s; one silent for stale_job_s (its worker gone) is
    # re-queued by the sweeper, which every worker runs at start and every sweep_interval_s.
    heartbeat_s: float = 5.0
    stale_job_s: float = 60.0
    sweep_interval_s: float = 30.0

    # Celery time limits of every ingest and delete task (soft: the job fails with the reason; hard: the
    # worker process is replaced), and of an index rebuild. Prefork pool only (not solo or threads).
    task_soft_time_limit_s: int = 540
    task_time_limit_s: int = 600
    reindex_time_limit_s: int = 24 * 3600
    # How long a new worker process may take to start (its model load) before Celery replaces it.
    worker_start_timeout_s: float = 120.0

    # Parsing runs in a child process with these limits; passing one fails the job, naming it.
    parse_sandbox: bool = True
    parse_timeout_s: float = 30.0  # wall time
    parse_cpu_s: int = 30  # CPU time (RLIMIT_CPU)
    parse_memory_mb: int = 1024  # address space (RLIMIT_AS)
    # Zip-based formats (.docx): total uncompressed size and number of members.
    docx_max_unpacked_mb: int = 64
    docx_max_members: int = 1000
    # Element nesting of HTML (and HTML inside Markdown).
    markup_max_depth: int = 256
