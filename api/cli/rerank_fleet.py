"""``sieve rerank-server --devices cuda:0,cuda:1`` (or ``--devices all``): one rerank server per device.

Each device gets a child process of its own, ``sieve rerank-server --device D --port P``, with the ports
counted up from ``--port`` (8101, 8102, …), the same ``--host`` and the same environment (``RERANK_*``,
``API_*``, ``RERANK_SERVER_TOKEN``). ``all`` is every GPU this process sees (``CUDA_VISIBLE_DEVICES``
applies); a device may be named twice (two servers on one GPU). A child on ``cuda:N`` sees that GPU alone
(``CUDA_VISIBLE_DEVICES`` narrowed to it, the model on its ``cuda:0``), so no CUDA context of it lands on
another GPU; its log names the device as given. Each child loads and warms its model before
its port opens, so its ``/ready`` answers only once it can serve at speed; the launcher waits for every
``/ready``, then prints the ``RERANK_URLS`` value to give the API (``reranking/backends/pool.py`` spreads the
calls by queue depth). A child that fails before it is ready stops the launch (exit 1, its exit code said);
once all are ready, a child that exits is started again after a backoff (1 s, doubling up to 30 s; back to
1 s after a minute of good running; a start that the system refuses, e.g. no process can be made, is tried
again the same way, never the end of the launcher), and the API's pool takes it back in once its ``/ready``
answers.
SIGINT, SIGTERM and SIGHUP stop every child (SIGTERM, then SIGKILL after ``grace`` seconds); the children
also get SIGTERM when the launcher dies, however it dies (``api.cli.procs.with_parent_death``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from api.cli import procs
from api.cli.stack import exit_text, port_free, ready

logger = logging.getLogger(__name__)

BACKOFF_S, BACKOFF_MAX_S, STABLE_S = 1.0, 30.0, 60.0


class FleetError(RuntimeError):
    """The servers could not be started (a bad device list, a port taken, a child that died starting)."""


def parse_devices(raw: str, visible: Callable[[], list[str]] | None = None) -> list[str]:
    """``"cuda:0,cuda:1"`` → ``["cuda:0", "cuda:1"]``; ``"all"`` → every visible GPU (``visible``, by default
    ``engine.devices.visible_cuda_devices``)."""
    if raw.strip().lower() == "all":
        if visible is None:
            from engine.devices import visible_cuda_devices

            visible = visible_cuda_devices
        devices = visible()
        if not devices:
            raise FleetError(
                "--devices all: no GPU is visible here (CUDA_VISIBLE_DEVICES, the driver, torch)"
            )
        return devices
    devices = [d.strip() for d in raw.split(",") if d.strip()]
    if not devices:
        raise FleetError(f"--devices {raw!r} names no device: give e.g. cuda:0,cuda:1 or all")
    return devices


def next_backoff(previous: float, *, stable: bool) -> float:
    """Seconds before a server starts again: 1 s at first or after a stable run, else double, at most 30."""
    return BACKOFF_S if stable or not previous else min(previous * 2, BACKOFF_MAX_S)


@dataclass
class Member:
    """One rerank server of the fleet, across its restarts."""

    device: str
    host: str
    port: int
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = 0.0
    restart_at: float | None = None  # set while it is down and due to start again

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def argv(self, python: str, device: str | None = None) -> list[str]:
        return [
            python,
            "-m",
            "api.cli",
            "rerank-server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--device",
            device or self.device,
        ]


def pinned(device: str, env: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The device and environment of a child on ``device``: ``cuda:N`` becomes ``cuda:0`` with
    ``CUDA_VISIBLE_DEVICES`` narrowed to the N-th GPU this process sees; other devices stay as they are."""
    child = dict(env)
    name, _, index = device.partition(":")
    if name != "cuda" or not (index or "0").isdigit():
        return device, child
    n = int(index or "0")
    seen = [v.strip() for v in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if "CUDA_VISIBLE_DEVICES" in env and n >= len(seen):
        raise FleetError(f"{device}: CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']!r} has no GPU {n}")
    child["CUDA_VISIBLE_DEVICES"] = seen[n] if "CUDA_VISIBLE_DEVICES" in env else str(n)
    return "cuda:0", child


class Fleet:
    """The rerank servers of ``devices`` on ports ``port``, ``port + 1``, …; see the module."""

    def __init__(
        self,
        devices: Sequence[str],
        *,
        host: str = "127.0.0.1",
        port: int = 8101,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
    ) -> None:
        if not devices:
            raise FleetError("a fleet needs at least one device")
        self.members = [Member(device, host, port + i) for i, device in enumerate(devices)]
        self.env = dict(os.environ if env is None else env)
        self.python = python
        for member in self.members:
            pinned(member.device, self.env)  # a GPU that is not there: refused before anything starts

    @property
    def urls(self) -> list[str]:
        return [m.url for m in self.members]

    def _spawn(self, member: Member) -> None:
        device, env = pinned(member.device, self.env)
        member.proc = subprocess.Popen(
            procs.with_parent_death(member.argv(self.python, device), signal.SIGTERM),
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the launcher, which stops the children in order
        )
        member.started_at, member.restart_at = time.monotonic(), None
        logger.info("rerank server on %s: %s (pid %d)", member.device, member.url, member.proc.pid)

    def start(self, *, ready_timeout_s: float = 900.0, probe: Callable[[str], bool] | None = None) -> None:
        """Start every server and wait until each ``/ready`` answers 200 (the models load in parallel)."""
        probe = probe or ready
        for member in self.members:
            bind = "0.0.0.0" if member.host in ("0.0.0.0", "") else member.host
            if not port_free(member.port, bind):
                raise FleetError(f"port {member.port} ({member.device}) is taken: pick another --port")
        for member in self.members:
            self._spawn(member)
        waiting = list(self.members)
        deadline = time.monotonic() + ready_timeout_s
        while waiting:
            for member in list(waiting):
                assert member.proc is not None
                if member.proc.poll() is not None:
                    raise FleetError(
                        f"the rerank server on {member.device} ({member.url}) exited with code "
                        f"{exit_text(member.proc.returncode)} before it was ready (its log is above)"
                    )
                if probe(member.url):
                    logger.info("rerank server on %s is ready: %s", member.device, member.url)
                    waiting.remove(member)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(f"{m.device} ({m.url})" for m in waiting)
                raise FleetError(f"not ready within {ready_timeout_s:.0f} s: {names}")
            if waiting:
                time.sleep(0.5)

    def supervise(self, now: float | None = None) -> None:
        """One pass: note each server that exited and start it again once its backoff has passed. Call it
        every fraction of a second from the thread that started the servers (their parent-death signal is
        tied to it)."""
        now = time.monotonic() if now is None else now
        for member in self.members:
            proc = member.proc
            if member.restart_at is None and proc is not None and proc.poll() is not None:
                member.backoff = next_backoff(member.backoff, stable=now - member.started_at >= STABLE_S)
                member.restart_at = now + member.backoff
                logger.warning(
                    "rerank server on %s (%s, pid %d) exited with code %s; starting it again in %.0f s",
                    member.device,
                    member.url,
                    proc.pid,
                    exit_text(proc.returncode),
                    member.backoff,
                )
            elif member.restart_at is not None and now >= member.restart_at:
                member.restarts += 1
                try:
                    self._spawn(member)
                except OSError as exc:  # no process could be made (fork or exec refused: pids, memory)
                    member.backoff = next_backoff(member.backoff, stable=False)
                    member.restart_at = now + member.backoff
                    logger.error(
                        "rerank server on %s (%s) could not be started again: %s; trying again in %.0f s",
                        member.device,
                        member.url,
                        exc,
                        member.backoff,
                    )

    def stop(self, grace: float = 20.0) -> None:
        """SIGTERM to every running server, then SIGKILL to those still running after ``grace`` seconds."""
        running = [m.proc for m in self.members if m.proc is not None and m.proc.poll() is None]
        for proc in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for member in self.members:
            member.restart_at = None


def run_fleet(fleet: Fleet, *, ready_timeout_s: float, grace: float, say: Callable[[str], None]) -> int:
    """``sieve rerank-server --devices``: start, report the URLs, supervise until a signal; the exit code."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)
    try:
        fleet.start(ready_timeout_s=ready_timeout_s)
        say(f"{len(fleet.members)} rerank servers ready; give the API RERANK_URLS={','.join(fleet.urls)}")
        while True:
            fleet.supervise()
            time.sleep(0.5)
    except FleetError as exc:
        say(str(exc))
        return 1
    except KeyboardInterrupt:
        say("stopping the rerank servers")
        return 0
    finally:
        fleet.stop(grace)
