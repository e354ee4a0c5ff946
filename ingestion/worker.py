"""The Celery app of the ingestion workers and its thin tasks: ids in, ``ingestion.pipeline`` does the work.

Tasks (module-level functions registered on the app by ``make_celery``; names and queue as the API sends):
- ``sieve.ingest``  (job id)   index the job's document version and activate it
- ``sieve.delete``  (job id)   remove a deleted document's chunks and files
- ``sieve.reindex`` (build id) run ``ingestion.reindex.Rebuild``

Each runs on ``IngestTask``, whose ``context`` is the process's ``WorkerContext``: the embedder, the vector
store (its collection ensured once per process and index), the job store, built lazily once per worker process
(the embedder at ``worker_process_init``, before the first task) and shared by every task of the app.

Delivery guarantees: ``acks_late`` + ``task_reject_on_worker_lost`` (a killed child's task is redelivered),
a deliberate broker ``visibility_timeout`` (a killed worker's unacked task is redelivered after it), retries
with exponential backoff for transient errors (``IngestTask.retry_or_give_up``), a terminal ``failed`` state
after the last retry, and permanent errors (unreadable file) failing at once. A redelivered job that already
finished is not run twice.

Every task first follows the serving pointer (``ingestion.indexes``): after a switch to a rebuilt index the
process loads the new embedder and writes to the new collection. An ingest or delete that ran across a switch
runs again on the new index (its writes are idempotent), so nothing activated at the switch is left behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from celery import Celery, Task, current_app
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
FINISHED = (JobState.DONE, JobState.FAILED)
CONTEXT = "sieve_worker_context"  # the app's ``conf`` key of its WorkerContext
EmbedderFactory = Callable[[RetrievalSettings], Embedder]
StoreFactory = Callable[[RetrievalSettings], VectorStore]
T = TypeVar("T")


class WorkerContext:
    """What one worker process holds, built lazily once per process (after fork) and reused by every task.

    The product builds its embedder and store with retrieval's factories; ``embedder_factory``,
    ``store_factory`` and ``records`` are for tests (fakes, a shared job store). Cheap to construct.
    """

    def __init__(
        self,
        ingest: IngestSettings,
        retrieval: RetrievalSettings,
        *,
        embedder_factory: EmbedderFactory = make_embedder,
        store_factory: StoreFactory = make_store,
        records: Records | None = None,
    ) -> None:
        self.ingest = ingest
        self.retrieval = retrieval
        self.default_spec = settings_spec(retrieval)
        self.embedder_factory = embedder_factory
        self.store_factory = store_factory
        self._records = records
        self._spec = self.default_spec  # the index that ``embedder`` and ``store`` are for
        self._generation: int | None = None
        self._embedder: Embedder | None = None
        self._store: VectorStore | None = None  # its collection ensured

    def warm_up(self) -> None:
        """Load the embedder (``worker_process_init``: before the process takes its first task)."""
        _ = self.embedder

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = self.load_embedder(self._spec.settings(self.retrieval))
        return self._embedder

    @property
    def store(self) -> VectorStore:
        """The serving index's store; its collection is ensured on first use (once per process and index)."""
        if self._store is None:
            store = self.store_factory(self._spec.settings(self.retrieval))
            embedder = self.embedder
            store.ensure_collection(embedder_name=embedder.name, dimension=embedder.dimension)
            self._store = store
        return self._store

    def load_embedder(self, settings: RetrievalSettings) -> Embedder:
        embedder = self.embedder_factory(settings)
        embedder.warm_up()
        return embedder

    @property
    def records(self) -> Records:
        if self._records is None:
            self._records = Records(self.ingest.redis_url)
        return self._records

    @property
    def indexes(self) -> Indexes:
        return Indexes(self.records.client)

    @property
    def files(self) -> FileStore:
        return FileStore(self.ingest.data_dir)

    def refresh(self) -> IndexSpec:
        """Follow the serving pointer (one Redis GET while it is unchanged); returns the index to write to."""
        generation = self.indexes.generation()
        if generation != self._generation:
            spec = self.indexes.serving(self.default_spec)
            if not spec.same_index(self._spec):
                embedder = self.load_embedder(spec.settings(self.retrieval))
                self._embedder, self._store = embedder, None
                logger.info("now writing to index %s (embedder %s)", spec.collection, embedder.name)
            self._spec, self._generation = spec, generation
        return self._spec

    def on_serving_index(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the serving index; again if the serving index switched while it ran."""
        while True:
            spec = self.refresh()
            result = work()
            if self.refresh() is spec:
                return result


def worker_context(app: Celery) -> WorkerContext:
    """The ``WorkerContext`` of an app built by ``make_celery``."""
    context = app.conf[CONTEXT]
    assert isinstance(context, WorkerContext)
    return context


class IngestTask(Task):
    """Base of the ingestion tasks: the process's context, and the one retry policy."""

    @property
    def context(self) -> WorkerContext:
        return worker_context(self.app)

    def retry_or_give_up(
        self, exc: Exception, *, what: str, retrying: Callable[[str], None], give_up: Callable[[str], None]
    ) -> None:
        """Retry after an exponential backoff (``retrying`` records why; celery's ``Retry`` is raised), or,
        once ``INGEST_MAX_RETRIES`` retries are spent, call ``give_up`` with the final message."""
        settings = self.context.ingest
        retries = self.request.retries
        if retries >= settings.max_retries:
            give_up(f"gave up after {retries + 1} attempts: {exc}"[:2000])
            return
        countdown = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2**retries)
        logger.info("%s: transient error (%s), retrying in %ss", what, exc, countdown)
        retrying(f"retrying in {countdown}s after: {exc}"[:2000])
        raise self.retry(exc=exc, countdown=countdown) from exc

    def fail_job(self, job_id: str, exc: BaseException | str) -> None:
        message = str(exc) or type(exc).__name__
        logger.warning("job %s failed: %s", job_id, message)
        self.context.records.update_job(job_id, state=JobState.FAILED, error=message[:2000])

    def retry_job(self, job_id: str, exc: Exception) -> None:
        records = self.context.records
        self.retry_or_give_up(
            exc,
            what=f"job {job_id}",
            retrying=lambda note: records.update_job(job_id, state=JobState.QUEUED, error=note),
            give_up=lambda message: self.fail_job(job_id, message),
        )


def ingest_task(self: IngestTask, job_id: str) -> None:
    context = self.context
    records = context.records
    job = records.get_job(job_id)
    if job.state in FINISHED:
        return  # redelivered after it finished: nothing to do twice
    version = job.document_version

    def progress(done: int, total: int) -> None:
        records.update_job(job_id, chunks_done=done, chunks_total=total)

    def work() -> int:
        return context.on_serving_index(
            lambda: pipeline.ingest(
                version,
                records=records,
                store=context.store,
                embedder=context.embedder,
                settings=context.ingest,
                progress=progress,
            )
        )

    try:
        pipeline.run_job(job, records, work)
    except PERMANENT as exc:
        self.fail_job(job_id, exc)
    except Exception as exc:  # noqa: BLE001 - the task's boundary: the rest is retried, a bounded few times
        self.retry_job(job_id, exc)


def delete_task(self: IngestTask, job_id: str) -> None:
    context = self.context
    records = context.records
    job = records.get_job(job_id)
    if job.state in FINISHED:
        return

    def work() -> None:
        context.on_serving_index(
            lambda: pipeline.delete(
                job.tenant, job.document_id, records=records, store=context.store, files=context.files
            )
        )

    try:
        pipeline.run_job(job, records, work)
    except Exception as exc:  # noqa: BLE001 - the task's boundary: retried a bounded number of times
        self.retry_job(job_id, exc)


def reindex_task(self: IngestTask, build_id: str) -> None:
    context = self.context
    indexes = context.indexes
    build = indexes.build()
    if build is None or build.id != build_id or build.state not in RUNNING:
        return  # redelivered after it ended, or superseded
    try:
        target = build.settings(context.retrieval)
        reindex.Rebuild(
            build,
            records=context.records,
            indexes=indexes,
            files=context.files,
            store=context.store_factory(target),
            embedder=context.load_embedder(target),
            settings=context.ingest,
            default=context.default_spec,
        ).run()
    except (ModelLoadError, ReindexBusyError) as exc:
        logger.warning("rebuild %s failed: %s", build_id, exc)
        indexes.update_build(build_id, state=BuildState.FAILED, error=str(exc)[:2000])
    except Exception as exc:  # noqa: BLE001 - the task's boundary: retried from empty, a bounded few times
        self.retry_or_give_up(
            exc,
            what=f"rebuild {build_id}",
            retrying=lambda note: indexes.update_build(build_id, error=note),
            give_up=lambda message: indexes.update_build(build_id, state=BuildState.FAILED, error=message),
        )


TASKS: dict[str, Callable[..., None]] = {
    "sieve.ingest": ingest_task,
    "sieve.delete": delete_task,
    "sieve.reindex": reindex_task,
}


def make_celery(
    settings: IngestSettings | None = None,
    retrieval: RetrievalSettings | None = None,
    *,
    context: WorkerContext | None = None,
) -> Celery:
    """The ingestion Celery app (settings from the environment when not given). ``context``: the worker
    context to use instead of one built from the settings (tests: fakes); its settings are then the app's."""
    if context is None:
        context = WorkerContext(settings or IngestSettings(), retrieval or RetrievalSettings())
    elif settings is not None or retrieval is not None:
        raise ValueError("give either settings or a context (which holds its settings), not both")
    settings = context.ingest
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
    app.conf[CONTEXT] = context
    for name, run in TASKS.items():
        app.task(name=name, base=IngestTask, bind=True, max_retries=None, shared=False)(run)
    return app


@worker_process_init.connect
def _load_models(**_: Any) -> None:
    """Each prefork worker process loads its model once, before taking its first task (solo and thread
    pools load it on first use)."""
    context = current_app.conf.get(CONTEXT)
    if isinstance(context, WorkerContext):
        context.warm_up()


def celery_app() -> Celery:
    """Entry point for ``celery -A ingestion.worker:celery_app worker`` (settings from the environment)."""
    return make_celery()
