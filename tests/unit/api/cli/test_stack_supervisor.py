"""The embedded stack's process handling on small stand-in processes (no Redis, Milvus or model): restarts
with backoff, children that end with ``sieve up`` however it ends, leftovers of a dead ``sieve up`` cleared on
the next start, ``sieve down`` from elsewhere, and the environment and secrets it gives its children."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.cli import procs
from api.cli.stack import Stack, StackError, stop_recorded
from api.stack_state import STATE_ENV, STATE_FILE, read_state, write_state

ROOT = Path(__file__).resolve().parents[4]
SLEEP = [sys.executable, "-c", "import time; time.sleep(120)"]

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux's")


def wait_gone(pid: int, ticks: int | None, within: float = 15.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not procs.alive(pid, ticks):
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Processes a test starts by hand; killed at the end whatever happened."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def sleeper(started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(SLEEP, start_new_session=True)
    started.append(proc)
    return proc


# -- the supervisor ------------------------------------------------------------------------------------------


def test_a_dead_child_is_restarted_with_growing_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stack = Stack(home=tmp_path / "home", backoff_s=1.0, backoff_max_s=3.0, stable_s=60.0)
    argv = [sys.executable, "-c", "import sys; sys.exit(3)"]
    proc = stack._spawn("flaky", argv, tmp_path / "flaky.log")
    proc.wait()
    child = stack.children["flaky"]
    t0 = child.started_at + 0.1
    with caplog.at_level(logging.WARNING, logger="api.cli.stack"):
        stack.supervise(now=t0)
    assert child.state == "restarting" and child.last_exit == 3 and child.restart_at == t0 + 1.0
    assert f"flaky (pid {proc.pid}) exited with code 3; restart 1 in 1 s" in caplog.text
    recorded = read_state(stack.state_path)
    assert recorded is not None
    assert recorded["children"][0] | {"pid": 0} == recorded["children"][0] | {
        "pid": 0,
        "state": "restarting",
        "restarts": 0,
        "last_exit": 3,
    }

    stack.supervise(now=t0 + 0.5)  # backoff not over yet
    assert child.proc is proc
    stack.supervise(now=t0 + 1.0)
    assert child.proc is not proc and child.restarts == 1 and child.state == "running"
    assert [name for name, _ in stack.procs] == ["flaky"]  # the handle list follows the restart

    # Dies again at once: the next wait doubles, up to the cap.
    waits = []
    for _ in range(3):
        assert child.proc is not None
        child.proc.wait()
        now = child.started_at + 0.1
        stack.supervise(now=now)
        assert child.restart_at is not None
        waits.append(child.restart_at - now)
        stack.supervise(now=child.restart_at)
    assert waits == [2.0, 3.0, 3.0]
    assert child.restarts == 4
    assert read_state(stack.state_path)["children"][0]["restarts"] == 4  # type: ignore[index]
    stack.stop()


def test_the_backoff_starts_over_after_a_stable_run(tmp_path: Path) -> None:
    stack = Stack(home=tmp_path / "home", backoff_s=1.0, backoff_max_s=30.0, stable_s=60.0)
    proc = stack._spawn("flaky", [sys.executable, "-c", "pass"], tmp_path / "flaky.log")
    proc.wait()
    child = stack.children["flaky"]
    child.backoff = 16.0  # after a series of quick deaths
    stack.supervise(now=child.started_at + 61)  # ... it ran for a minute this time
    assert child.backoff == 1.0
    stack.stop()


def test_stop_stops_every_child_and_records_it(tmp_path: Path) -> None:
    stack = Stack(home=tmp_path / "home")
    procs_started = [stack._spawn(name, SLEEP, tmp_path / f"{name}.log") for name in ("a", "b")]
    stack.stop()
    assert all(p.poll() is not None for p in procs_started)
    state = read_state(stack.state_path)
    assert state is not None and state["stopped_at"]
    assert {c["state"] for c in state["children"]} == {"stopped"}
    stack.supervise()  # a stopped stack restarts nothing
    assert all(c.proc is p for c, p in zip(stack.children.values(), procs_started, strict=True))


# -- children end with their parent --------------------------------------------------------------------------

PARENT = """
import sys, time
from pathlib import Path
from api.cli.stack import Stack
stack = Stack(home=Path(sys.argv[1]))
proc = stack._spawn("sleeper", {sleep!r}, Path(sys.argv[1]) / "sleeper.log")
print(proc.pid, flush=True)
time.sleep(120)
"""


def test_children_end_when_their_parent_is_killed_9(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    """kill -9 of `sieve up` (here a stand-in that starts its children the same way) ends its children."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT.format(sleep=SLEEP), str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    sleepers.append(parent)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    ticks = procs.start_ticks(child)
    assert procs.alive(child, ticks)
    parent.kill()
    parent.wait()
    try:
        assert wait_gone(child, ticks), "the child outlived its killed parent"
    finally:
        if procs.alive(child, ticks):
            os.kill(child, signal.SIGKILL)


# -- leftovers of a dead `sieve up` and `sieve down` ---------------------------------------------------------


def dead_pid() -> tuple[int, int | None]:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = procs.start_ticks(proc.pid)
    proc.wait()
    return proc.pid, ticks


def record(home: Path, owner: tuple[int, int | None], children: dict[str, subprocess.Popen[bytes]]) -> None:
    write_state(
        home / STATE_FILE,
        {
            "pid": owner[0],
            "ticks": owner[1],
            "api_url": "http://127.0.0.1:1",
            "children": [
                {
                    "name": name,
                    "pid": p.pid,
                    "ticks": procs.start_ticks(p.pid),
                    "argv": SLEEP,
                    "state": "running",
                }
                for name, p in children.items()
            ],
        },
    )


def test_leftovers_of_a_dead_sieve_up_are_stopped_on_start(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    home = tmp_path / "home"
    left = sleeper(sleepers)
    record(home, dead_pid(), {"worker": left})
    stopped = Stack(home=home).clear_leftovers()
    assert stopped == [f"worker (pid {left.pid})"]
    assert left.wait(timeout=15) is not None


def test_a_recorded_pid_now_held_by_another_process_is_left_alone(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    home = tmp_path / "home"
    other = sleeper(sleepers)
    record(home, dead_pid(), {"worker": other})
    state = read_state(home / STATE_FILE)
    assert state is not None
    state["children"][0]["ticks"] -= 1  # the same pid, started at another time: not ours
    write_state(home / STATE_FILE, state)
    assert Stack(home=home).clear_leftovers() == []
    assert other.poll() is None


def test_a_running_sieve_up_is_not_started_twice(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    home = tmp_path / "home"
    owner = sleeper(sleepers)
    record(home, (owner.pid, procs.start_ticks(owner.pid)), {})
    with pytest.raises(StackError, match="sieve down"):
        Stack(home=home).start()


def test_sieve_down_stops_a_stack_started_elsewhere(
    tmp_path: Path, sleepers: list[subprocess.Popen[bytes]]
) -> None:
    home = tmp_path / "home"
    owner, child = sleeper(sleepers), sleeper(sleepers)
    record(home, (owner.pid, procs.start_ticks(owner.pid)), {"api": child})
    stopped = stop_recorded(home, grace=5)
    assert stopped == [f"sieve up (pid {owner.pid})", f"api (pid {child.pid})"]
    assert owner.wait(timeout=10) == -signal.SIGTERM
    assert child.wait(timeout=10) is not None
    state = read_state(home / STATE_FILE)
    assert state is not None and state["stopped_at"] and state["children"][0]["state"] == "stopped"
    assert stop_recorded(home) == []  # nothing left to stop


# -- environment and secrets ---------------------------------------------------------------------------------


def test_the_operators_keys_are_kept_beside_the_generated_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API_KEYS", json.dumps({"team-key": "team"}))
    stack = Stack(home=tmp_path / "home")
    assert json.loads(stack.env()["API_KEYS"]) == {stack.api_key(): "default", "team-key": "team"}
    given = Stack(home=tmp_path / "home", extra_env={"API_KEYS": json.dumps({"k2": "t2"})})
    assert json.loads(given.env()["API_KEYS"]) == {stack.api_key(): "default", "k2": "t2"}


def test_unreadable_api_keys_name_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEYS", "key=tenant")
    with pytest.raises(StackError, match="API_KEYS"):
        Stack(home=tmp_path / "home").env()


def test_redis_gets_a_password_and_protected_mode(tmp_path: Path) -> None:
    stack = Stack(home=tmp_path / "home", redis_port=6999)
    password = stack.redis_password()
    assert len(password) >= 24
    assert stack.redis_url == f"redis://:{password}@127.0.0.1:6999/0"
    env = stack.env()
    assert env["INGEST_REDIS_URL"] == stack.redis_url
    assert env[STATE_ENV] == str(stack.home / STATE_FILE)
    config = stack.redis_config()
    lines = config.read_text().splitlines()
    assert "protected-mode yes" in lines and f'requirepass "{password}"' in lines
    for secret in ("redis_password", "api_key", "admin_key", "redis.conf"):
        assert (stack.home / secret).stat().st_mode & 0o777 == 0o600, secret


def test_an_existing_secret_readable_by_others_is_narrowed(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "api_key").write_text("old-key\n")
    (home / "api_key").chmod(0o644)
    assert Stack(home=home).api_key() == "old-key"
    assert (home / "api_key").stat().st_mode & 0o777 == 0o600
