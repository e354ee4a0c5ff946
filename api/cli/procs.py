"""Process helpers of the embedded stack: children that end with their parent, a process's identity across
runs of the CLI, stopping a process group that another run started.

A process is named by its pid *and* its start time (``/proc/<pid>/stat``, field 22, in clock ticks since
boot), so a pid that the kernel has since given to an unrelated process is never signalled. Linux only for the
parent-death signal and the start time; elsewhere the helpers fall back to the pid and the command line.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _libc_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl  # type: ignore[no-any-return] # a ctypes foreign function
    except (OSError, AttributeError):
        return None


# Whether this platform has prctl (the child's own interpreter calls it, see ``with_parent_death``).
_PRCTL = _libc_prctl()

# Run by a fresh interpreter before the real command: set the parent-death signal, then exec the command.
# ``subprocess`` then needs no ``preexec_fn``, so it starts the child with vfork + exec: nothing runs in a
# forked copy of the parent. With a ``preexec_fn`` it must fork(), and fork() runs the parent's libraries'
# fork handlers in the child: gRPC's (pymilvus, loaded by the stack's readiness checks and by the reliability
# suite) restarted its poller there and aborted the child now and then (SIGABRT, "epoll_wait error: Bad file
# descriptor") before it reached exec, so a restarted worker was gone without a line in its log.
_EXEC_WITH_DEATHSIG = (
    "import ctypes, os, sys\n"
    "sig, parent = int(sys.argv[1]), int(sys.argv[2])\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, sig, 0, 0, 0)\n"
    "if os.getppid() != parent:\n"  # the parent died before prctl: nobody would send the signal
    "    os.kill(os.getpid(), sig)\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def with_parent_death(argv: list[str], sig: int = signal.SIGTERM) -> list[str]:
    """``argv`` started so that the child receives ``sig`` when its parent ends, however it ends (``kill -9``
    included): a short interpreter (``python -I -S``) sets ``PR_SET_PDEATHSIG`` and execs ``argv``, so the
    process keeps its pid and ends up running ``argv`` alone. ``argv`` as it is where the platform has no
    ``prctl``.

    The signal fires when the *thread* that started the child ends: start children from a thread that lives as
    long as they should (``sieve up`` starts every child from its main thread). It survives ``exec`` and is
    cleared in the child's own children, so grandchildren need their own (Celery's prefork pool sets SIGKILL
    for its processes; Milvus Lite 3 and Redis's own forks are not long-lived servers of their own).
    """
    if _PRCTL is None:
        return list(argv)
    return [sys.executable, "-I", "-S", "-c", _EXEC_WITH_DEATHSIG, str(int(sig)), str(os.getpid()), *argv]


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot); None when it does not exist or on a platform without
    ``/proc``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 of the whole line; fields[0] is field 3 (the state)
    except (IndexError, ValueError):
        return None


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except (OSError, IndexError):
        return None


def command_line(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def alive(pid: int | None, ticks: int | None = None, program: str | None = None) -> bool:
    """Whether ``pid`` is a running process (not a zombie) and the same one that was recorded: the same start
    time when ``ticks`` is given, its command line naming ``program`` (a path's file name is enough) when
    given."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's: the checks below decide
    if _state(pid) == "Z":
        return False
    if ticks is not None:
        now = start_ticks(pid)
        if now is not None and now != ticks:
            return False
    if program:
        line = command_line(pid)
        if line and Path(program).name not in " ".join(line):
            return False
    return True


def session_members(sid: int) -> list[int]:
    """Pids whose session id is ``sid`` (each child of the stack leads a session of its own)."""
    members = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def stop_session(
    pid: int, *, ticks: int | None = None, program: str | None = None, grace: float = 10.0
) -> bool:
    """Stop the process ``pid`` (recorded with ``ticks`` / ``program``) and whatever is left of the session it
    leads: SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns whether anything was running."""
    leader = alive(pid, ticks, program)
    # Leftovers of a dead leader still hold its pid as their session id, so the kernel has not given that pid
    # to another process: they are ours. A live process with another start time is not: leave its session.
    members = [p for p in session_members(pid) if p != pid] if leader or not _running(pid) else []
    if not leader and not members:
        return False
    targets = ([pid] if leader else []) + members
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for target in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline and any(_running(t) for t in targets):
            time.sleep(0.1)
        targets = [t for t in targets if _running(t)]
        if not targets:
            break
    return True


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _state(pid) not in (None, "Z")
