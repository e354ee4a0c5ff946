"""A Redis the test can stop and start again, and real Celery ingestion workers, for the integration tests
of ingestion under outages and hostile files (Milvus Lite comes from ``tests.support.services``)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from api.cli.stack import redis_server_binary
from tests.support.services import ServiceStartError, free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]


class RedisServer:
    """``redis-server`` on a fixed port over one data folder (append-only file, fsync on every write), so
    that ``stop`` (SIGKILL by default: a crash) and ``start`` make a Redis restart that keeps its data."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port)]
        argv += ["--dir", str(self.data_dir), "--appendonly", "yes", "--appendfsync", "always"]
        argv += ["--save", "", "--protected-mode", "no"]
        log = open(self.data_dir.with_suffix(".log"), "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    return
            if self.proc.poll() is not None:
                raise ServiceStartError(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.1)
        raise ServiceStartError(f"no answer from Redis at {self.url} within {timeout:.0f} s")

    def kill(self) -> None:
        """Crash it (SIGKILL); its data is on disk (fsync always)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None


@contextlib.contextmanager
def redis_server(data_dir: Path) -> Iterator[RedisServer]:
    server = RedisServer(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def celery_worker(
    env: dict[str, str], log_path: Path, *, app: str = "tests.support.slow_worker:celery_app", queue: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A prefork Celery worker (one pool process) of the app that ``app`` (``module:function``) makes, with
    ``env`` over the environment, started as ``sieve worker`` starts one; stopped at exit with its whole
    process group."""
    module, function = app.split(":")
    start = f"import sys; from {module} import {function}; {function}().worker_main(sys.argv[1:])"
    argv = [sys.executable, "-c", start, "worker", "--pool=prefork", "--concurrency=1"]
    argv += ["-Q", queue, "--without-gossip", "--without-mingle", "--loglevel=INFO"]
    full_env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "PYTHONUNBUFFERED": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        **env,
    }
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=full_env, cwd=ROOT, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop_process(proc)
