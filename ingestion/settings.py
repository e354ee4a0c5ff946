"""Settings of the ingestion stage (environment prefix ``INGEST_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore")

    # Redis: Celery broker, job states and the document registry. The embedded stack starts its own
    # Redis on this port (never the machine's 6379), with an append-only file in its data dir.
    redis_url: str = "redis://127.0.0.1:6390/0"
    # Accepted files are written here (and fsynced) before the upload is answered.
    data_dir: Path = Path(".sieve/files")
    queue: str = "sieve.ingest"

    max_file_bytes: int = 50 * 1024 * 1024
    max_files_per_upload: int = 100
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
