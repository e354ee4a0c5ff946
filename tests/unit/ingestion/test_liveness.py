"""Heartbeats of running jobs, the sweeper that re-queues jobs whose worker is gone, and the worker's Redis
calls that ride out a Redis restart."""

from __future__ import annotations

import time
from typing import Any

import fakeredis
import pytest
import redis

from ingestion import keyspace
from ingestion.errors import RedisUnavailableError
from ingestion.liveness import Heartbeat, Sweeper, sweep
from ingestion.records import JobState, Records
from ingestion.uploads import Uploads
from tests.support.fakes import RecordingSender

TEXT = b"Swifts sleep on the wing during their long migrations across the Sahara."


def age(records: Records, job_id: str, seconds: float) -> None:
    """Make a running job's last heartbeat ``seconds`` old."""
    records.client.zadd(keyspace.RUNNING_JOBS, {job_id: time.time() - seconds})


def test_the_running_set_follows_the_job_state(uploads: Uploads, records: Records) -> None:
    job = uploads.accept("t", "swifts.txt", TEXT, document_id=None, metadata={})
    assert records.silent_jobs(0) == []
    records.update_job(job.id, state=JobState.RUNNING)
    assert records.silent_jobs(-1) == [job.id]
    records.update_job(job.id, chunks_done=1)  # progress leaves it running
    assert records.silent_jobs(-1) == [job.id]
    records.update_job(job.id, state=JobState.DONE)
    assert records.silent_jobs(-1) == []
    records.heartbeat(job.id)  # a late heartbeat does not bring a finished job back
    assert records.silent_jobs(-1) == []


def test_a_heartbeat_keeps_a_running_job_fresh(uploads: Uploads, records: Records) -> None:
    job = uploads.accept("t", "swifts.txt", TEXT, document_id=None, metadata={})
    records.update_job(job.id, state=JobState.RUNNING)
    age(records, job.id, 100)
    assert records.silent_jobs(50) == [job.id]
    with Heartbeat(records, job.id, every_s=0.01):
        deadline = time.monotonic() + 5
        while records.silent_jobs(50) and time.monotonic() < deadline:
            time.sleep(0.01)
    assert records.silent_jobs(50) == []


def test_the_sweeper_requeues_a_silent_running_job_and_sends_it_again(
    uploads: Uploads, records: Records
) -> None:
    silent = uploads.accept("t", "a.txt", TEXT, document_id=None, metadata={})
    alive = uploads.accept("t", "b.txt", TEXT + b" b", document_id=None, metadata={})
    finished = uploads.accept("t", "c.txt", TEXT + b" c", document_id=None, metadata={})
    for job in (silent, alive, finished):
        records.update_job(job.id, state=JobState.RUNNING, attempts=1)
    age(records, silent.id, 120)
    records.client.hset(keyspace.job(finished.id), "state", JobState.DONE.value)  # finished, set left behind
    age(records, finished.id, 120)
    sender = RecordingSender()
    assert sweep(records, sender, stale_s=60, queue="q") == [silent.id]
    assert sender.sent == [("sieve.ingest", [silent.id])]
    requeued = records.get_job(silent.id)
    assert requeued.state is JobState.QUEUED and "worker stopped answering" in requeued.error
    assert records.get_job(alive.id).state is JobState.RUNNING
    assert records.get_job(finished.id).state is JobState.DONE and records.silent_jobs(-1) == [alive.id]
    assert records.pending_jobs() == []  # the re-send is confirmed


def test_the_sweeper_sends_jobs_whose_enqueue_was_never_confirmed(
    records: Records, ingest_settings: Any
) -> None:
    broken = Uploads(ingest_settings, records, RecordingSender(fail=True))
    with pytest.raises(ConnectionError):
        broken.accept("t", "a.txt", TEXT, document_id=None, metadata={})
    (job_id,) = records.pending_jobs()
    sender = RecordingSender()
    assert sweep(records, sender, stale_s=60, queue="q") == []  # just accepted: its sender may be at it
    records.client.hset(keyspace.job(job_id), "updated_at", str(time.time() - 120))
    assert sweep(records, sender, stale_s=60, queue="q") == [job_id]
    assert sender.sent == [("sieve.ingest", [job_id])] and records.pending_jobs() == []


def test_one_worker_sweeps_at_a_time(records: Records) -> None:
    first = Sweeper(records, RecordingSender(), stale_s=60, interval_s=30, queue="q")
    second = Sweeper(records, RecordingSender(), stale_s=60, interval_s=30, queue="q")
    assert records.lock_sweep(30)
    assert first.sweep_once() == [] and second.sweep_once() == []
    records.client.delete(keyspace.SWEEP_LOCK)
    assert records.lock_sweep(30) and not records.lock_sweep(30)


class RestartingRedis(fakeredis.FakeRedis):
    """Refuses connections for its first ``down`` commands, as a Redis that is restarting does."""

    def __init__(self, down: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.down = down

    def refuse(self) -> None:
        if self.down > 0:
            self.down -= 1
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6390. Connection refused.")

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.refuse()
        return super().execute_command(*args, **options)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = super().pipeline(transaction, shard_hint)
        execute = pipe.execute

        def refusing(raise_on_error: bool = True) -> Any:
            try:
                self.refuse()
            except redis.ConnectionError:
                pipe.reset()  # as redis-py does: the queued commands are gone
                raise
            return execute(raise_on_error)

        pipe.execute = refusing  # type: ignore[method-assign] # a fake connection failure
        return pipe


def test_a_worker_rides_out_a_short_redis_restart_and_the_api_does_not_wait() -> None:
    client = RestartingRedis(0, decode_responses=True)
    worker = Records("redis://fake", client=client, retry_s=10)
    job = worker.accept_upload("t", "d", version="v", filename="d.txt", path="/nowhere", metadata={})
    client.down = 3
    worker.update_job(job.id, state=JobState.RUNNING, chunks_done=2)  # a pipeline, built again on each try
    client.down = 2
    running = worker.get_job(job.id)
    assert running.state is JobState.RUNNING and running.chunks_done == 2
    assert worker.silent_jobs(-1) == [job.id]
    api = Records("redis://fake", client=RestartingRedis(1, decode_responses=True))
    with pytest.raises(RedisUnavailableError):
        api.pending_jobs()
    down_for_good = Records("redis://fake", client=RestartingRedis(10**6, decode_responses=True), retry_s=0.5)
    with pytest.raises(RedisUnavailableError, match="Connection refused"):
        down_for_good.update_job("j1", state=JobState.DONE)
