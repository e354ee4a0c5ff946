"""`sieve up` as a supervisor, on the real stack (Redis, Milvus Lite, a Celery worker, the API with MiniLM):
a child killed with -9 is restarted and /ready says so; kill -9 of `sieve up` takes every child (and the
worker's pool process) with it; a new start on the same ports works; `sieve status` and `sieve down` work
from other folders. Redis refuses clients without the generated password; the operator's API_KEYS and the
generated key both work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.cli import procs
from api.cli.client import SieveClient
from api.cli.stack import free_port, stop_recorded
from api.stack_state import STATE_FILE, read_state

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's"),
]

ROOT = Path(__file__).resolve().parents[2]


def eventually(check: Callable[[], Any], what: str, *, within: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            value = check()
        except (httpx.HTTPError, OSError, KeyError, ValueError):
            value = None
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {within:.0f} s: {what}"
        time.sleep(0.25)


class Up:
    """`sieve up` started as a user would, from folder ``cwd``, its output in ``log``."""

    def __init__(self, args: list[str], *, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "api.cli", "up", "--no-sample", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def wait_ready(self, home: Path) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            assert self.proc.poll() is None, f"sieve up exited:\n{self.log.read_text()[-3000:]}"
            state = read_state(home / STATE_FILE)
            if not state or state.get("pid") != self.proc.pid or len(state.get("children", [])) < 4:
                return None
            return state if httpx.get(f"{state['api_url']}/ready", timeout=5).status_code == 200 else None

        return dict(eventually(ready, "the stack answers /ready", within=300))


def sieve(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", *args],
        cwd=cwd,
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def everything_of(state: dict[str, Any]) -> list[tuple[int, int | None]]:
    """Every process of the stack: each child and what runs in its session (Celery's pool process)."""
    found = []
    for child in state["children"]:
        for pid in [child["pid"], *procs.session_members(child["pid"])]:
            found.append((pid, procs.start_ticks(pid)))
    return sorted(set(found), key=lambda p: p[0])


def child(state: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in state["children"] if c["name"] == name)


@pytest.fixture
def setting(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "API_KEYS": json.dumps({"team-key": "team"}),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RETRIEVAL_COLLECTION": "supervisor_chunks",
    }
    for name in ("SIEVE_HOME", "SIEVE_URL", "SIEVE_API_KEY", "INGEST_REDIS_URL", "API_ADMIN_KEY"):
        env.pop(name, None)
    yield home, env
    stop_recorded(home, grace=10)  # whatever a failed test left running


def test_sieve_up_restarts_children_and_takes_them_along_when_killed(
    tmp_path: Path, setting: tuple[Path, dict[str, str]]
) -> None:
    home, env = setting
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    port, redis_port, milvus_port = free_port(), free_port(), free_port()
    ports = ["--port", str(port), "--redis-port", str(redis_port), "--milvus-port", str(milvus_port)]

    up = Up(["--home", str(home), *ports], cwd=here, env=env, log=tmp_path / "up.log")
    state = up.wait_ready(home)
    url = state["api_url"]
    assert url == f"http://127.0.0.1:{port}"

    # Redis: only with the generated password; the operator's key and the stack's key both work.
    with pytest.raises(redis.RedisError):
        redis.Redis(port=redis_port, socket_connect_timeout=2).ping()
    password = (home / "redis_password").read_text().strip()
    assert redis.Redis(port=redis_port, password=password).ping()
    assert SieveClient(url, "team-key").documents() == []
    assert SieveClient(url, (home / "api_key").read_text().strip()).documents() == []

    # kill -9 of a child: restarted, and /ready says so.
    for name in ("worker", "redis"):
        before = child(read_state(home / STATE_FILE) or {}, name)
        os.kill(before["pid"], signal.SIGKILL)

        def restarted(name: str = name, old: int = before["pid"]) -> dict[str, Any] | None:
            body = httpx.get(f"{url}/ready", timeout=5).json()
            now = next(c for c in body["stack"]["children"] if c["name"] == name)
            done = now["restarts"] == 1 and now["pid"] != old and now["state"] == "running" and body["ready"]
            return now if done else None

        now = eventually(restarted, f"{name} restarted and reported by /ready")
        assert now["last_exit"] == -signal.SIGKILL
        assert procs.alive(now["pid"])
    log = up.log.read_text()
    assert "worker (pid" in log and "exited with code -9 (SIGKILL); restart 1 in 1 s" in log
    assert SieveClient(url, "team-key").documents() == []  # the API reaches the restarted Redis

    # `sieve status` from another folder, through SIEVE_HOME.
    status = sieve("status", cwd=there, env={**env, "SIEVE_HOME": str(home)})
    assert status.returncode == 0, status.stdout + status.stderr
    state = read_state(home / STATE_FILE) or {}
    for c in state["children"]:
        assert c["name"] in status.stdout and str(c["pid"]) in status.stdout
    assert "Traceback" not in status.stdout + status.stderr

    # kill -9 of `sieve up`: all its processes go with it.
    everything = everything_of(state)
    assert len(everything) >= 5  # four children and the worker's pool process
    up.proc.kill()
    up.proc.wait()
    eventually(
        lambda: not [pid for pid, ticks in everything if procs.alive(pid, ticks)],
        f"every process of the killed stack gone: {everything}",
        within=20,
    )

    # The next start, from another folder through SIEVE_HOME, on the same ports; `sieve down` from elsewhere.
    again = Up(ports, cwd=there, env={**env, "SIEVE_HOME": str(home)}, log=tmp_path / "up2.log")
    state = again.wait_ready(home)
    everything = everything_of(state)
    down = sieve("--home", str(home), "down", cwd=here, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"sieve up (pid {again.proc.pid})" in down.stdout
    assert again.proc.wait(timeout=60) == 0
    assert not [pid for pid, ticks in everything if procs.alive(pid, ticks)]
    assert (read_state(home / STATE_FILE) or {}).get("stopped_at")
    assert "no stack running" in sieve("down", cwd=there, env={**env, "SIEVE_HOME": str(home)}).stdout
