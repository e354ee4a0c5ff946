"""api.cli.procs.with_parent_death: the child ends with its parent, however the parent ends, and starts
without a preexec_fn (vfork + exec: no fork handler of the parent's libraries runs in the child)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from api.cli import procs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")


def _wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_the_child_runs_the_command_itself_under_its_own_pid(tmp_path) -> None:
    out = tmp_path / "out"
    argv = procs.with_parent_death(
        [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write(str(os.getpid()))"]
    )
    proc = subprocess.Popen(argv)
    assert proc.wait(timeout=30) == 0
    assert out.read_text() == str(proc.pid)


def test_the_child_is_killed_when_its_parent_is_killed() -> None:
    parent_code = textwrap.dedent(
        f"""
        import subprocess, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from api.cli import procs
        child = subprocess.Popen(procs.with_parent_death(["sleep", "120"], 9))
        print(child.pid, flush=True)
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "sleep" not in procs.command_line(child):
            time.sleep(0.05)  # the short interpreter has not exec'd yet
        assert "sleep" in procs.command_line(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        assert _wait_gone(child), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
