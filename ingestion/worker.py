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
with exponential backoff for temporary errors (``IngestTask.retry_or_give_up``), a terminal ``failed`` state
after the last retry, and permanent errors (``is_permanent``: unreadable file, a parse past its limits, a
value the store cannot keep) failing at once with their reason. A Redis outage never loses a job: the
worker's Redis writes ride out a restart (``INGEST_REDIS_RETRY_S``), and when they cannot, the message goes
back to the queue rather than being acknowledged (``IngestTask``). Running jobs keep a heartbeat, and every
worker's sweeper re-queues those whose worker is gone (``ingestion.liveness``); a job started
``INGEST_MAX_ATTEMPTS`` times without finishing fails. A redelivered job that already finished is not run
twice. Every task has Celery soft and hard time limits (``INGEST_TASK_*TIME_LIMIT_S``), and parsing runs in a
child process with its own limits (``ingestion.sandbox``).

Every task first follows the serving pointer (``ingestion.indexes``): after a switch to a rebuilt index the
process loads the new embedder and writes to the new collection. An ingest or delete that ran across a switch
runs again on the new index (its writes are idempotent), so nothing activated at the switch is left behind.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery import Celery, Task, current_app
from celery.exceptions import Reject
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from ingestion import pipeline, reindex
from ingestion.backends import make_blob_store
from ingestion.blobs import BlobStore
from ingestion.errors import (
    DocumentNotFoundError,
    DocumentTooLargeError,
    EmptyDocumentError,
    IngestError,
    ParseError,
    RedisUnavailableError,
    UnsupportedFormatError,
)
from ingestion.indexes import RUNNING, BuildState, Indexes, IndexSpec, ReindexBusyError, settings_spec
from ingestion.liveness import Heartbeat, Sweeper
from ingestion.records import Job, JobState, Records
from ingestion.settings import IngestSettings
from retrieval import Embedder, ModelLoadError, RetrievalSettings, VectorStore, make_embedder, make_store
from retrieval.errors import EmbedderInputError

logger = logging.getLogger(__name__)

# Retrying cannot help: the file (unreadable, past a parse limit: ParseLimitError is a ParseError), or a value
# the store refuses (ValueError / TypeError: a document id past its column, metadata that is not strict JSON).
PERMANENT: tuple[type[BaseException], ...] = (
    ParseError,
    UnsupportedFormatError,
    EmptyDocumentError,
    DocumentTooLargeError,
    FileNotFoundError,
    EmbedderInputError,
    ValueError,
    TypeError,
)
FINISHED = (JobState.DONE, JobState.FAILED)
JOB_TASKS = ("sieve.ingest", "sieve.delete")
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
        self._blobs: BlobStore | None = None

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
        """The job store, its writes retried while Redis restarts (``INGEST_REDIS_RETRY_S``)."""
        if self._records is None:
            self._records = Records(self.ingest.redis_url, retry_s=self.ingest.redis_retry_s)
        return self._records

    @property
    def indexes(self) -> Indexes:
        return Indexes(self.records.client)

    @property
    def blobs(self) -> BlobStore:
        """Where uploaded files are stored (``INGEST_BLOB_STORE``), one client per process."""
        if self._blobs is None:
            self._blobs = make_blob_store(self.ingest)
        return self._blobs

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


def is_permanent(exc: BaseException) -> bool:
    """Whether retrying cannot help: the file, its metadata or its document id cannot be taken as they are,
    or a parse passed a limit. Anything else (Redis, Milvus or the model unavailable, and errors not known
    here) is taken as temporary and retried with backoff, at most ``INGEST_MAX_RETRIES`` times."""
    return isinstance(exc, PERMANENT)


class IngestTask(Task):
    """Base of the ingestion tasks: the process's context, and the one shape of a job's delivery.

    A delivery ends in one of three ways, and never acknowledges a job that is not finished:
    the job is ``done`` or ``failed`` (with its reason), a retry is scheduled (``queued``, its message sent
    before this one is acknowledged), or the message is rejected back to the queue (``Reject(requeue=True)``)
    because Redis could not be reached to record any of that. If even the reject cannot reach Redis, the
    message stays in the broker's unacknowledged set and comes back after ``INGEST_VISIBILITY_TIMEOUT_S``;
    the sweeper (``ingestion.liveness``) re-queues the job sooner, once its heartbeat is stale.
    """

    @property
    def context(self) -> WorkerContext:
        return worker_context(self.app)

    def run_job(self, job_id: str, work: Callable[[Job], int | None]) -> None:
        """Run ``work`` on the job: bookkeeping (running, done, attempts, heartbeat), then the outcome."""
        try:
            self._run_job(job_id, work)
        except RedisUnavailableError as exc:
            raise self.requeue(f"job {job_id}", exc) from exc

    def _run_job(self, job_id: str, work: Callable[[Job], int | None]) -> None:
        context = self.context
        settings, records = context.ingest, context.records
        try:
            job = records.get_job(job_id)
        except DocumentNotFoundError:
            logger.warning("job %s is not recorded; dropping its message", job_id)
            return
        if job.state in FINISHED:
            return  # redelivered after it finished: nothing to do twice
        if job.attempts >= settings.max_attempts:
            last = f" (last: {job.error})" if job.error else ""
            self.fail_job(job, f"started {job.attempts} times without finishing (INGEST_MAX_ATTEMPTS){last}")
            return
        try:
            with Heartbeat(records, job_id, every_s=settings.heartbeat_s):
                pipeline.run_job(job, records, lambda: work(job))
        except SoftTimeLimitExceeded:
            limit = settings.task_soft_time_limit_s
            self.fail_job(
                job, f"the job exceeded its time limit of {limit} s (INGEST_TASK_SOFT_TIME_LIMIT_S)"
            )
        except Exception as exc:  # noqa: BLE001 - the task's boundary: permanent fails at once, the rest retries
            if is_permanent(exc):
                self.fail_job(job, exc)
            else:
                self.retry_job(job, exc)

    def requeue(self, what: str, exc: BaseException) -> Reject:
        """The ``Reject`` that puts this message back on the queue, after a pause (Redis may restart)."""
        logger.warning("%s: Redis unreachable (%s); leaving the message to be delivered again", what, exc)
        time.sleep(self.context.ingest.retry_backoff_s)
        return Reject(exc, requeue=True)

    def retry_or_give_up(
        self, exc: Exception, *, what: str, retrying: Callable[[str], None], give_up: Callable[[str], None]
    ) -> None:
        """Retry after an exponential backoff (``retrying`` records why; celery's ``Retry`` is raised), or,
        once ``INGEST_MAX_RETRIES`` retries are spent, call ``give_up`` with the final message. Should the
        retry's message not be sent (the broker down), this one goes back to the queue instead of being
        dropped."""
        settings = self.context.ingest
        retries = self.request.retries
        if retries >= settings.max_retries:
            give_up(f"gave up after {retries + 1} attempts: {exc}"[:2000])
            return
        countdown = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2**retries)
        logger.info("%s: transient error (%s), retrying in %ss", what, exc, countdown)
        retrying(f"retrying in {countdown}s after: {exc}"[:2000])
        try:
            raise self.retry(exc=exc, countdown=countdown)
        except Reject as rejected:  # celery could not send the retry and would drop this message
            raise self.requeue(what, rejected.reason) from exc

    def fail_job(self, job: Job, exc: BaseException | str, *, discard: bool = True) -> None:
        """Mark the job failed with its reason, then (``discard``) remove the chunks its version left (never
        served)."""
        message = str(exc) or type(exc).__name__
        logger.warning("job %s failed: %s", job.id, message)
        context = self.context
        context.records.update_job(job.id, state=JobState.FAILED, error=message[:2000])
        if job.kind != "ingest" or not discard:
            return
        try:
            pipeline.discard(job.document_version, records=context.records, store=context.store)
        except Exception as cleanup:  # noqa: BLE001 - the store down: a later ingest of the document removes them
            logger.warning("job %s: could not remove the chunks of its version yet: %s", job.id, cleanup)

    def retry_job(self, job: Job, exc: Exception) -> None:
        records = self.context.records
        self.retry_or_give_up(
            exc,
            what=f"job {job.id}",
            retrying=lambda note: records.update_job(job.id, state=JobState.QUEUED, error=note),
            give_up=lambda message: self.fail_job(job, message),
        )

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """A hard time limit (its pool process replaced; called in the worker's main process): the job fails
        with the reason instead of staying ``running``. Its chunks stay until the document's next ingest:
        the main process holds no store (opening one would load the model there)."""
        if isinstance(exc, TimeLimitExceeded) and self.name in JOB_TASKS and args:
            limit = self.context.ingest.task_time_limit_s
            with contextlib.suppress(IngestError):
                job = self.context.records.get_job(str(args[0]))
                if job.state not in FINISHED:
                    reason = f"the job exceeded its hard time limit of {limit} s (INGEST_TASK_TIME_LIMIT_S)"
                    self.fail_job(job, reason, discard=False)


def ingest_task(self: IngestTask, job_id: str) -> None:
    context = self.context
    records = context.records

    def work(job: Job) -> int:
        version = job.document_version

        def progress(done: int, total: int) -> None:
            records.update_job(job.id, chunks_done=done, chunks_total=total)

        return context.on_serving_index(
            lambda: pipeline.ingest(
                version,
                records=records,
                store=context.store,
                embedder=context.embedder,
                settings=context.ingest,
                progress=progress,
                metadata=job.metadata,
                blobs=context.blobs,
            )
        )

    self.run_job(job_id, work)


def delete_task(self: IngestTask, job_id: str) -> None:
    context = self.context
    records = context.records

    def work(job: Job) -> None:
        context.on_serving_index(
            lambda: pipeline.delete(
                job.tenant, job.document_id, records=records, store=context.store, blobs=context.blobs
            )
        )

    self.run_job(job_id, work)


def reindex_task(self: IngestTask, build_id: str) -> None:
    try:
        _reindex(self, build_id)
    except RedisUnavailableError as exc:
        raise self.requeue(f"rebuild {build_id}", exc) from exc


def _reindex(self: IngestTask, build_id: str) -> None:
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
            blobs=context.blobs,
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
        broker_connection_max_retries=None,  # a worker outlives a Redis outage of any length
        # A task running when the broker connection drops goes on (its Redis writes ride out the outage,
        # IngestTask); its message, which cannot be acknowledged on the lost connection, comes back and
        # finds the job finished.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_soft_time_limit=settings.task_soft_time_limit_s,
        task_time_limit=settings.task_time_limit_s,
        # Celery replaces a pool process that has not started within this (its model load) and the
        # default (4 s) is shorter than loading a model on a busy machine.
        worker_proc_alive_timeout=settings.worker_start_timeout_s,
        worker_hijack_root_logger=False,
    )
    app.conf[CONTEXT] = context
    limits = {"sieve.reindex": (settings.reindex_time_limit_s, settings.reindex_time_limit_s + 60)}
    for name, run in TASKS.items():
        soft, hard = limits.get(name, (settings.task_soft_time_limit_s, settings.task_time_limit_s))
        app.task(
            name=name,
            base=IngestTask,
            bind=True,
            max_retries=None,
            shared=False,
            soft_time_limit=soft,
            time_limit=hard,
        )(run)
    return app


@worker_process_init.connect
def _load_models(**_: Any) -> None:
    """Each prefork worker process loads its model once, before taking its first task (solo and thread
    pools load it on first use)."""
    context = current_app.conf.get(CONTEXT)
    if isinstance(context, WorkerContext):
        context.warm_up()


_SWEEPERS: list[Sweeper] = []


@worker_ready.connect
def _start_sweeper(sender: Any = None, **_: Any) -> None:
    """The worker's main process sweeps stale jobs at start and every ``INGEST_SWEEP_INTERVAL_S`` (0: off)."""
    app = getattr(sender, "app", None) or current_app
    context = app.conf.get(CONTEXT)
    if not isinstance(context, WorkerContext) or context.ingest.sweep_interval_s <= 0:
        return
    settings = context.ingest
    sweeper = Sweeper(
        Records(settings.redis_url),
        app,
        stale_s=settings.stale_job_s,
        interval_s=settings.sweep_interval_s,
        queue=settings.queue,
    )
    sweeper.start()
    _SWEEPERS.append(sweeper)


@worker_shutdown.connect
def _stop_sweepers(**_: Any) -> None:
    while _SWEEPERS:
        _SWEEPERS.pop().stop()


def celery_app() -> Celery:
    """Entry point for ``celery -A ingestion.worker:celery_app worker`` (settings from the environment)."""
    return make_celery()
