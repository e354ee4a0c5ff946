"""The suite's own stack and the handles to break it.

``Harness`` starts ``api.cli.stack.Stack`` (its own Redis with an append-only file, a Milvus Lite server, a
real Celery worker process, the API under uvicorn) on free ports in a temporary home, with keys for three
tenants and an admin. It uses only ``Stack(home=, redis_port=, milvus_port=, api_port=, extra_env=)``,
``start()``, ``stop()``, ``api_url``, ``redis_url``, ``milvus_uri`` and the ``(name, Popen)`` handles the
stack keeps; what else it needs (killing a process tree, restarting a process as it was started) is here:

- ``kill(name)`` sends SIGKILL to the named child, every descendant (Celery's pool children) and its process
  group, and waits for it;
- ``respawn(name, spec)`` starts the process again with the command line, environment and working folder it
  had (read from ``/proc`` before the kill), so a Redis or a Milvus Lite comes back on the same port over the
  same data; ``scenarios.common.restore`` first gives a supervisor (if the ``Stack`` ever runs one by itself)
  a moment to do it.

``Api`` is an ``httpx.AsyncClient`` that times every call and honours 429 ``Retry-After`` when asked to (the
correctness scenarios must reach the handlers, not the rate limiter).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from api.cli import procs
from api.cli.stack import Stack

logger = logging.getLogger(__name__)

COLLECTION = "reliability_chunks"
DOCUMENTED_5XX = frozenset({503})  # store or broker down (README, API section)


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    key: str


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children first), from ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@dataclass(frozen=True)
class ProcSpec:
    """How a child was started: enough to start it again the same way."""

    argv: list[str]
    env: dict[str, str]
    cwd: str

    @classmethod
    def of(cls, proc: subprocess.Popen[bytes]) -> ProcSpec:
        pid = proc.pid
        raw_env = Path(f"/proc/{pid}/environ").read_bytes()
        env = dict(item.split("=", 1) for item in raw_env.decode(errors="replace").split("\0") if "=" in item)
        args = proc.args
        argv = [str(a) for a in args] if isinstance(args, list | tuple) else [str(args)]
        return cls(argv=argv, env=env, cwd=os.readlink(f"/proc/{pid}/cwd"))


@dataclass
class KillRecord:
    name: str
    pids: list[int]
    at: float
    replaced_by: str = ""  # "stack" (a supervisor) or "suite"


class Harness:
    """The stack under test and the suite's handles on it."""

    def __init__(self, home: Path, *, extra_env: dict[str, str] | None = None) -> None:
        self.home = home
        self.tenants = {
            name: Tenant(f"tenant-{name}", f"rel-{name}-{secrets.token_urlsafe(24)}") for name in "abc"
        }
        self.admin_key = f"rel-admin-{secrets.token_urlsafe(24)}"
        self.env = {
            "API_KEYS": json.dumps({t.key: t.name for t in self.tenants.values()}),
            "API_ADMIN_KEY": self.admin_key,
            "RETRIEVAL_COLLECTION": COLLECTION,
            **(extra_env or {}),
        }
        self.stack = Stack(
            home=home,
            redis_port=free_port(),
            milvus_port=free_port(),
            api_port=free_port(),
            extra_env=self.env,
        )
        self._own: dict[str, subprocess.Popen[bytes]] = {}  # processes the suite restarted
        self._retired: list[subprocess.Popen[bytes]] = []
        # replacements that exited on their own, started again: (name, exit code)
        self.revived: list[tuple[str, int | None]] = []
        self.kills: list[KillRecord] = []

    # -- life cycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        self.stack.start()

    def stop(self) -> None:
        for proc in [*self._own.values(), *self._retired]:
            self._stop(proc)
        self._own.clear()
        self.stack.stop()

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)

    @property
    def api_url(self) -> str:
        return self.stack.api_url

    # -- processes ----------------------------------------------------------------------------------
    def proc(self, name: str) -> subprocess.Popen[bytes] | None:
        """The live process serving as ``name`` ("api", "worker", "redis", "milvus-lite"), if any."""
        own = self._own.get(name)
        if own is not None and own.poll() is None:
            return own
        for proc_name, proc in reversed(list(self.stack.procs)):
            if proc_name == name and proc.poll() is None:
                return proc
        return None

    def roots(self) -> dict[str, list[int]]:
        """The root pids of each service, for the RSS sampler."""
        out: dict[str, list[int]] = {}
        for name in ("api", "worker", "redis", "milvus-lite"):
            proc = self.proc(name)
            if proc is not None:
                out[name] = [proc.pid]
        return out

    def kill(self, name: str) -> tuple[ProcSpec, KillRecord]:
        """SIGKILL ``name``, its descendants and its process group; returns how to start it again."""
        proc = self.proc(name)
        if proc is None:
            raise RuntimeError(f"no live {name} process to kill")
        spec = ProcSpec.of(proc)
        pids = [proc.pid, *descendants(proc.pid)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in pids[1:]) and time.monotonic() < deadline:
            time.sleep(0.05)
        record = KillRecord(name=name, pids=pids, at=time.time())
        self.kills.append(record)
        if self._own.get(name) is proc:
            self._retired.append(self._own.pop(name))
        logger.info("killed %s (pids %s)", name, pids)
        return spec, record

    def revive(self, name: str, spec: ProcSpec) -> int | None:
        """Start ``name`` again when the replacement the suite started has exited on its own (not killed by
        the suite); returns its exit code (negative: the signal), None when it is alive or not the suite's."""
        own = self._own.get(name)
        if own is None or own.poll() is None or self.proc(name) is not None:
            return None
        code = own.returncode
        self._retired.append(self._own.pop(name))
        self.revived.append((name, code))
        self.respawn(name, spec, KillRecord(name=name, pids=[own.pid], at=time.time()))
        logger.warning(
            "the %s the suite started (pid %d) exited with code %s; started again", name, own.pid, code
        )
        return code

    def supervised(self, name: str) -> bool:
        """Whether something else (a supervisor of a newer ``Stack``) already started ``name`` again."""
        return self.proc(name) is not None

    def respawn(self, name: str, spec: ProcSpec, record: KillRecord) -> None:
        """Start ``name`` again as ``spec`` says (call it from the main thread: the child gets SIGKILL when
        the thread that started it ends, so that a killed suite leaves nothing behind)."""
        log = self.home / "logs" / f"{name}.restarts.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            self._own[name] = subprocess.Popen(
                procs.with_parent_death(spec.argv, signal.SIGKILL),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=spec.env,
                cwd=spec.cwd,
                start_new_session=True,
            )
        record.replaced_by = "suite"

    # -- direct views of the stores (for verification, never for the figures of the API itself) -------
    def redis(self) -> Any:
        import redis

        return redis.Redis.from_url(
            self.stack.redis_url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )

    def redis_answers(self) -> bool:
        import redis

        client = self.redis()
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def milvus(self) -> Any:
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.stack.milvus_uri, timeout=10)

    def milvus_answers(self) -> bool:
        try:
            client = self.milvus()
            client.list_collections(timeout=2)
            client.close()
            return True
        except Exception:  # noqa: BLE001 - a liveness probe: any failure means not answering yet
            return False

    def chunk_rows(self, tenant: str) -> list[dict[str, Any]]:
        """Every chunk row of ``tenant`` in the collection, read from Milvus directly (id, doc, version,
        position) with a query iterator (a plain query with a limit returns *some* rows, in no key order:
        paging it by "id > the last id" skipped rows once a tenant had more than one page)."""
        client = self.milvus()
        rows: list[dict[str, Any]] = []
        try:
            client.load_collection(COLLECTION)
            iterator = client.query_iterator(
                COLLECTION,
                batch_size=2000,
                filter=f'tenant == "{tenant}"',
                output_fields=["id", "doc_id", "version", "position"],
            )
            try:
                while batch := iterator.next():
                    rows.extend(batch)
            finally:
                iterator.close()
        finally:
            client.close()
        return rows

    def job_states(self, job_ids: list[str]) -> dict[str, tuple[str, float]]:
        """Job states and the time of their last update, read from Redis directly (``job:{id}``), to time
        kills without the API's rate limit."""
        from ingestion import keyspace

        client = self.redis()
        try:
            pipe = client.pipeline()
            for job_id in job_ids:
                pipe.hmget(keyspace.job(job_id), ["state", "updated_at"])
            return {
                j: (state or "", float(updated or 0))
                for j, (state, updated) in zip(job_ids, pipe.execute(), strict=True)
            }
        finally:
            client.close()


# -- HTTP -----------------------------------------------------------------------------------------------
@dataclass
class Result:
    status: int  # 0: no answer (transport error or timeout); -1: not sent (httpx refused to build it)
    seconds: float
    response: httpx.Response | None = None
    error: str = ""
    retried_429: int = 0

    @property
    def body(self) -> str:
        return self.response.text if self.response is not None else ""

    def json(self) -> Any:
        return self.response.json() if self.response is not None else None


@dataclass
class Tally:
    """What a set of calls got back: statuses, undocumented 5xx, hangs, latencies."""

    hang_s: float = 10.0
    statuses: Counter[int] = field(default_factory=Counter)
    seconds: list[float] = field(default_factory=list)
    bad_5xx: list[str] = field(default_factory=list)  # 5xx other than the documented 503
    hangs: list[str] = field(default_factory=list)  # no answer within hang_s
    no_answer: list[str] = field(default_factory=list)  # transport errors
    not_sent: list[str] = field(default_factory=list)  # requests httpx would not build

    def add(self, what: str, result: Result) -> None:
        if result.status == -1:
            self.not_sent.append(f"{what}: {result.error[:120]}")
            return
        self.statuses[result.status] += 1
        self.seconds.append(result.seconds)
        if result.status >= 500 and result.status not in DOCUMENTED_5XX:
            self.bad_5xx.append(f"{what}: {result.status} {result.body[:200]}")
        if result.seconds > self.hang_s or "timeout" in result.error.lower():
            self.hangs.append(f"{what}: {result.seconds:.1f} s ({result.status or result.error})")
        elif result.status == 0:
            self.no_answer.append(f"{what}: {result.error}")

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> str:
        return ", ".join(f"{s or 'no answer'}: {n}" for s, n in sorted(self.statuses.items()))


class Api:
    """Async calls to the stack's API, timed; ``retry_429`` honours ``Retry-After`` (up to ``max_wait_s``)."""

    def __init__(self, url: str, *, timeout: float = 30.0, connections: int = 256) -> None:
        self.http = httpx.AsyncClient(
            base_url=url,
            timeout=timeout,
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        retry_429: bool = False,
        max_wait_s: float = 60.0,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> Result:
        headers = dict(kwargs.pop("headers", None) or {})
        if key is not None:
            headers.setdefault("Authorization", f"Bearer {key}")
        waited, retried = 0.0, 0
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        while True:
            try:
                request = self.http.build_request(method, path, headers=headers, **kwargs, **extra)
            except (httpx.HTTPError, httpx.InvalidURL, ValueError, TypeError) as exc:
                return Result(-1, 0.0, None, f"not sent (the client refused it): {exc}", retried)
            started = time.perf_counter()
            try:
                response = await self.http.send(request)
            except httpx.TimeoutException as exc:
                return Result(
                    0, time.perf_counter() - started, None, f"timeout: {type(exc).__name__}", retried
                )
            except httpx.HTTPError as exc:
                return Result(0, time.perf_counter() - started, None, f"{type(exc).__name__}: {exc}", retried)
            seconds = time.perf_counter() - started
            if response.status_code == 429 and retry_429 and waited < max_wait_s:
                pause = min(2.0, float(response.headers.get("retry-after") or 1)) * (
                    0.5 + secrets.randbelow(100) / 100
                )
                waited += pause
                retried += 1
                await asyncio.sleep(pause)
                continue
            return Result(response.status_code, seconds, response, "", retried)


async def gather_limited(limit: int, coros: Iterator[Any] | list[Any]) -> list[Any]:
    """Run coroutines with at most ``limit`` at once; results in order."""
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))
