"""Running jobs say they are alive; jobs whose worker is gone are queued again.

- ``Heartbeat``: while a job runs, a thread of its task touches the job's score in ``jobs:running`` (a sorted
  set written with the job's state by ``Records.update_job``) every ``INGEST_HEARTBEAT_S``.
- ``sweep``: a running job silent for ``INGEST_STALE_JOB_S`` (its worker was killed, or a broker outage made
  it drop the task) is marked queued and its task sent again; a job accepted but never confirmed sent
  (``jobs:pending``) for as long is sent again too.
- ``Sweeper``: a daemon thread of each worker's main process sweeps at start and every
  ``INGEST_SWEEP_INTERVAL_S``; a Redis lock with an expiry lets one worker sweep at a time.

A job sent twice is harmless: a delivery of a finished job does nothing, chunk ids are deterministic and
writes are upserts, and activation is a check-and-set on the document's latest version.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import Any, Protocol

from ingestion.errors import DocumentNotFoundError, IngestError
from ingestion.records import Job, Records

logger = logging.getLogger(__name__)

TASK_OF_KIND = {"ingest": "sieve.ingest", "delete": "sieve.delete"}
SILENT = "its worker stopped answering (killed, or cut off from Redis); queued again"


class TaskSender(Protocol):
    def send_task(self, name: str, args: list[Any], queue: str | None = None) -> Any: ...


class Heartbeat:
    """``with Heartbeat(records, job_id, every_s=5):`` keeps the job's heartbeat fresh while the block runs.
    A heartbeat that cannot reach Redis is skipped (the job's own writes decide what an outage means)."""

    def __init__(self, records: Records, job_id: str, *, every_s: float) -> None:
        self.records = records
        self.job_id = job_id
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.records.heartbeat(self.job_id)
            except IngestError as exc:
                logger.debug("heartbeat of job %s skipped: %s", self.job_id, exc)


def sweep(records: Records, sender: TaskSender, *, stale_s: float, queue: str) -> list[str]:
    """Queue again the jobs whose worker is gone and the jobs never confirmed sent; returns their ids."""
    sent: list[str] = []

    def send(job: Job) -> None:
        sender.send_task(TASK_OF_KIND.get(job.kind, "sieve.ingest"), args=[job.id], queue=queue)
        records.mark_enqueued(job.id)
        sent.append(job.id)

    for job_id in records.silent_jobs(stale_s):
        job = records.requeue_silent(job_id, stale_s, SILENT)
        if job is not None:
            logger.warning("job %s ran with no heartbeat for %.0f s: queued again", job_id, stale_s)
            send(job)
    for job_id in records.pending_jobs():
        try:
            job = records.get_job(job_id)
        except DocumentNotFoundError:
            records.mark_enqueued(job_id)
            continue
        if job.id not in sent and job.updated_at < time.time() - stale_s:  # else its sender is still at it
            send(job)
    if sent:
        logger.info("sent %d job(s) again: %s", len(sent), ", ".join(sent))
    return sent


class Sweeper:
    """The worker's sweeping thread (``start`` once per worker process; ``stop`` at shutdown)."""

    def __init__(
        self, records: Records, sender: TaskSender, *, stale_s: float, interval_s: float, queue: str
    ) -> None:
        self.records = records
        self.sender = sender
        self.stale_s = stale_s
        self.interval_s = interval_s
        self.queue = queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sieve-sweeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def sweep_once(self) -> list[str]:
        if not self.records.lock_sweep(self.interval_s * 0.9):
            return []
        return sweep(self.records, self.sender, stale_s=self.stale_s, queue=self.queue)

    def _run(self) -> None:
        while True:
            try:
                self.sweep_once()
            except Exception as exc:  # noqa: BLE001 - Redis or the broker down: the next round tries again
                logger.warning("sweeping stale jobs failed: %s", exc)
            if self._stop.wait(self.interval_s):
                return
