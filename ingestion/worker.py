"""Celery application and thin tasks: ids in, ``ingestion.pipeline`` does the work.

Delivery guarantees: ``acks_late`` + ``task_reject_on_worker_lost`` (a killed child's task is redelivered),
a deliberate broker ``visibility_timeout`` (a killed worker's unacked task is redelivered after it), retries
with exponential backoff for transient errors, a terminal ``failed`` state after the last retry, and
permanent errors (unreadable file) failing at once. Models load once per worker process.

Every task first follows the serving pointer (``ingestion.indexes``): after a switch to a rebuilt index the
process loads the new embedder and writes to the new collection. An ingest or delete that ran across a switch
runs again on the new index (its writes are idempotent), so nothing activated at the switch is left behind.
``sieve.reindex`` runs ``ingestion.reindex.Rebuild``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init

from ingestion import pipeline, reindex
from ingestion.errors import EmptyDocumentError, ParseError, UnsupportedFormatError
from ingestion.files import FileStore
from ingestion.indexes import RUNNING, BuildState, Indexes, IndexSpec, ReindexBusyError, settings_spec
from ingestion.records import JobState, Records
from ingestion.settings import IngestSettings
from retrieval import Embedder, ModelLoadError, RetrievalSettings, VectorStore, make_embedder, make_store

logger = logging.getLogger(__name__)

PERMANENT = (ParseError, UnsupportedFormatError, EmptyDocumentError, FileNotFoundError)
EmbedderFactory = Callable[[RetrievalSettings], Embedder]
StoreFactory = Callable[[RetrievalSettings], VectorStore]


class Resources:
    """What a worker process holds: built lazily once per process (after fork), reused by every task."""

    def __init__(
        self,
        ingest: IngestSettings,
        retrieval: RetrievalSettings,
        embedder_factory: EmbedderFactory = make_embedder,
        store_factory: StoreFactory = make_store,
    ) -> None:
        self.ingest = ingest
        self.retrieval = retrieval
        self.default_spec = settings_spec(retrieval)
        self._embedder_factory = embedder_factory
        self.store_factory = store_factory
        self._spec = self.default_spec  # the index that ``embedder`` and ``store`` are for
        self._generation: int | None = None
        self._embedder: Embedder | None = None
        self._store: VectorStore | None = None
        self._records: Records | None = None

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.load_embedder(self._spec.settings(self.retrieval))
        return self._embedder

    @property
    def store(self) -> VectorStore:
        if self._store is None:
            self._store = self.store_factory(self._spec.settings(self.retrieval))
        return self._store

    def load_embedder(self, settings: RetrievalSettings) -> Embedder:
        embedder = self._embedder_factory(settings)
        embedder.warm_up()
        return embedder

    @property
    def indexes(self) -> Indexes:
        return Indexes(self.records.client)

    def refresh(self) -> IndexSpec:
        """Follow the serving pointer (one Redis GET while it is unchanged); returns the index to write to."""
        generation = self.indexes.generation()
        if generation != self._generation:
            spec = self.indexes.serving(self.default_spec)
            if not spec.same_index(self._spec):
                settings = spec.settings(self.retrieval)
                embedder = self.load_embedder(settings)
                self._embedder, self._store = embedder, self.store_factory(settings)
                logger.info("now writing to index %s (embedder %s)", spec.collection, embedder.name)
            self._spec, self._generation = spec, generation
        return self._spec

    @property
    def records(self) -> Records:
        if self._records is None:
            self._records = Records(self.ingest.redis_url)
        return self._records

    @property
    def files(self) -> FileStore:
        return FileStore(self.ingest.data_dir)


def make_celery(
    settings: IngestSettings | None = None,
    retrieval: RetrievalSettings | None = None,
    *,
    embedder_factory: EmbedderFactory = make_embedder,
    store_factory: StoreFactory = make_store,
) -> Celery:
    """``embedder_factory``: how a worker process builds its embedder (``api.models.build_embedder`` picks the
    GPU inference engine; ``ingestion`` cannot import it itself)."""
    settings = settings or IngestSettings()
    retrieval = retrieval or RetrievalSettings()
    app = Celery("sieve", broker=settings.redis_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_ignore_result=True,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": settings.restore_interval_s,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    resources = Resources(settings, retrieval, embedder_factory, store_factory)
    app.conf.sieve_resources = resources

    def _fail(job_id: str, exc: BaseException) -> None:
        message = str(exc) or type(exc).__name__
        logger.warning("job %s failed: %s", job_id, message)
        resources.records.update_job(job_id, state=JobState.FAILED, error=message[:2000])

    def _retry(task: Task, job_id: str, exc: Exception) -> Any:
        if task.request.retries >= settings.max_retries:
            _fail(job_id, RuntimeError(f"gave up after {task.request.retries + 1} attempts: {exc}"))
            return None
        countdown = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2**task.request.retries)
        logger.info("job %s: transient error (%s), retrying in %ss", job_id, exc, countdown)
        resources.records.update_job(
            job_id, state=JobState.QUEUED, error=f"retrying in {countdown}s after: {exc}"[:2000]
        )
        raise task.retry(exc=exc, countdown=countdown)

    @app.task(name="sieve.ingest", bind=True, max_retries=None, shared=False)
    def ingest_task(self: Task, job_id: str) -> None:
        records = resources.records
        job = records.get_job(job_id)
        if job.state in (JobState.DONE, JobState.FAILED):
            return  # redelivered after it finished: nothing to do twice

        def progress(done: int, total: int) -> None:
            records.update_job(job_id, chunks_done=done, chunks_total=total)

        def work() -> int:
            while True:  # again when the serving index switched while it ran
                spec = resources.refresh()
                chunks = pipeline.ingest(
                    job,
                    records=records,
                    store=resources.store,
                    embedder=resources.embedder,
                    settings=settings,
                    progress=progress,
                )
                if resources.refresh() is spec:
                    return chunks

        try:
            pipeline.run_job(job, records, work)
        except PERMANENT as exc:
            _fail(job_id, exc)
        except Exception as exc:  # transient: store or Redis down, model hiccup
            _retry(self, job_id, exc)

    @app.task(name="sieve.delete", bind=True, max_retries=None, shared=False)
    def delete_task(self: Task, job_id: str) -> None:
        records = resources.records
        job = records.get_job(job_id)
        if job.state in (JobState.DONE, JobState.FAILED):
            return

        def work() -> None:
            while True:
                spec = resources.refresh()
                pipeline.delete(job, records=records, store=resources.store, files=resources.files)
                if resources.refresh() is spec:
                    return

        try:
            pipeline.run_job(job, records, work)
        except Exception as exc:
            _retry(self, job_id, exc)

    @app.task(name="sieve.reindex", bind=True, max_retries=None, shared=False)
    def reindex_task(self: Task, build_id: str) -> None:
        indexes = resources.indexes
        build = indexes.build()
        if build is None or build.id != build_id or build.state not in RUNNING:
            return  # redelivered after it ended, or superseded
        try:
            target = build.settings(resources.retrieval)
            reindex.Rebuild(
                build,
                records=resources.records,
                indexes=indexes,
                files=resources.files,
                store=resources.store_factory(target),
                embedder=resources.load_embedder(target),
                settings=settings,
                default=resources.default_spec,
            ).run()
        except (ModelLoadError, ReindexBusyError) as exc:
            logger.warning("rebuild %s failed: %s", build_id, exc)
            indexes.update_build(build_id, state=BuildState.FAILED, error=str(exc)[:2000])
        except Exception as exc:  # store or Redis down: start over (the new collection is rebuilt from empty)
            if self.request.retries >= settings.max_retries:
                message = f"gave up after {self.request.retries + 1} attempts: {exc}"
                indexes.update_build(build_id, state=BuildState.FAILED, error=message[:2000])
                return
            countdown = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2**self.request.retries)
            indexes.update_build(build_id, error=f"retrying in {countdown}s after: {exc}"[:2000])
            raise self.retry(exc=exc, countdown=countdown) from exc

    @worker_process_init.connect(weak=False)
    def _load_models(**_: Any) -> None:
        # Each worker process loads its model once, before taking its first task.
        resources.embedder  # noqa: B018 - property access loads the model

    return app


def celery_app() -> Celery:
    """Entry point for ``celery -A ingestion.worker:celery_app worker`` (settings from the environment)."""
    return make_celery()
