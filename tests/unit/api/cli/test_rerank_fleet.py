"""``sieve rerank-server --devices`` (``api.cli.rerank_fleet``): the device list, the ports, the start that
waits for every server, the restart of one that exits, the stop. The children here are stand-ins (a program
that sleeps, or exits), so no model loads; tests/integration/test_rerank_pool_kill.py starts real servers."""

from __future__ import annotations

import os
import signal
import socket
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import rerank_fleet
from api.cli.main import app
from api.cli.rerank_fleet import BACKOFF_S, Fleet, FleetError, parse_devices, pinned
from api.cli.stack import free_port

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX processes")


def test_devices_are_listed_or_all_visible_ones() -> None:
    assert parse_devices(" cuda:0, cuda:1 ") == ["cuda:0", "cuda:1"]
    assert parse_devices("cuda:0,cuda:0") == ["cuda:0", "cuda:0"]  # two servers on one GPU
    assert parse_devices("all", visible=lambda: ["cuda:0", "cuda:1", "cuda:2"]) == [
        "cuda:0",
        "cuda:1",
        "cuda:2",
    ]
    with pytest.raises(FleetError, match="no GPU is visible"):
        parse_devices("ALL", visible=lambda: [])
    with pytest.raises(FleetError, match="names no device"):
        parse_devices(" , ")


def test_one_port_per_device_counted_up() -> None:
    fleet = Fleet(["cuda:0", "cuda:1"], host="0.0.0.0", port=9100)
    assert fleet.urls == ["http://127.0.0.1:9100", "http://127.0.0.1:9101"]
    argv = fleet.members[1].argv("python")
    assert argv[argv.index("--device") + 1] == "cuda:1" and argv[argv.index("--port") + 1] == "9101"
    assert argv[argv.index("--host") + 1] == "0.0.0.0"


def test_each_gpu_server_sees_its_gpu_alone() -> None:
    assert pinned("cuda:1", {})[0] == "cuda:0" and pinned("cuda:1", {})[1]["CUDA_VISIBLE_DEVICES"] == "1"
    assert pinned("cuda", {"X": "y"})[1] == {"X": "y", "CUDA_VISIBLE_DEVICES": "0"}
    # The N-th GPU this launcher sees, where CUDA_VISIBLE_DEVICES already narrows them.
    assert pinned("cuda:1", {"CUDA_VISIBLE_DEVICES": "2,3"})[1]["CUDA_VISIBLE_DEVICES"] == "3"
    assert pinned("cpu", {"CUDA_VISIBLE_DEVICES": "2"}) == ("cpu", {"CUDA_VISIBLE_DEVICES": "2"})
    with pytest.raises(FleetError, match="has no GPU 2"):
        Fleet(["cuda:0", "cuda:2"], env={"CUDA_VISIBLE_DEVICES": "4,5"})


def stand_in(tmp_path: Path, body: str) -> str:
    """A program that takes the place of ``python`` (its arguments ignored)."""
    path = tmp_path / "stand-in"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.fixture
def fleets() -> Iterator[list[Fleet]]:
    made: list[Fleet] = []
    yield made
    for fleet in made:
        fleet.stop(grace=5)


def test_start_waits_for_every_server_then_restarts_one_that_exits(
    tmp_path: Path, fleets: list[Fleet]
) -> None:
    fleet = Fleet(["cpu", "cpu"], port=free_port(), python=stand_in(tmp_path, "exec sleep 60"))
    fleets.append(fleet)
    asked: list[str] = []
    fleet.start(ready_timeout_s=10, probe=lambda url: asked.append(url) or len(asked) > 2)
    assert set(asked) == set(fleet.urls)  # each was asked until it answered
    first, second = fleet.members
    assert first.proc is not None and second.proc is not None
    old_pid = second.proc.pid
    os.kill(old_pid, signal.SIGKILL)
    second.proc.wait(5)
    now = second.started_at + 1
    fleet.supervise(now)
    assert second.restart_at == now + BACKOFF_S and second.restarts == 0  # not before its backoff
    fleet.supervise(now + BACKOFF_S)
    assert second.restarts == 1 and second.proc.pid != old_pid and second.proc.poll() is None
    assert first.restarts == 0 and first.proc.poll() is None
    fleet.stop(grace=5)
    assert first.proc.poll() is not None and second.proc.poll() is not None


def test_a_restart_the_system_refuses_is_tried_again_not_the_end_of_the_launcher(
    tmp_path: Path, fleets: list[Fleet], monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = Fleet(["cpu"], port=free_port(), python=stand_in(tmp_path, "exec sleep 60"))
    fleets.append(fleet)
    fleet.start(ready_timeout_s=10, probe=lambda url: True)
    (member,) = fleet.members
    assert member.proc is not None
    os.kill(member.proc.pid, signal.SIGKILL)
    member.proc.wait(5)
    now = member.started_at + 1
    fleet.supervise(now)

    def refused(*args: object, **kwargs: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")  # fork() at the pids limit

    with monkeypatch.context() as patch:
        patch.setattr(rerank_fleet.subprocess, "Popen", refused)
        fleet.supervise(now + BACKOFF_S)  # no exception out of the loop
    assert member.proc.poll() is not None and member.restart_at == now + BACKOFF_S + 2 * BACKOFF_S
    fleet.supervise(now + BACKOFF_S + 2 * BACKOFF_S)
    assert member.restarts == 2 and member.restart_at is None and member.proc.poll() is None


def test_a_server_that_dies_starting_stops_the_launch(tmp_path: Path, fleets: list[Fleet]) -> None:
    fleet = Fleet(["cuda:7"], port=free_port(), python=stand_in(tmp_path, "exit 3"))
    fleets.append(fleet)
    with pytest.raises(FleetError, match=r"cuda:7 .* exited with code 3 before it was ready"):
        fleet.start(ready_timeout_s=10, probe=lambda url: False)


def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path, fleets: list[Fleet]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        fleet = Fleet(["cpu"], port=port, python=stand_in(tmp_path, "exec sleep 60"))
        fleets.append(fleet)
        with pytest.raises(FleetError, match=f"port {port} .* is taken"):
            fleet.start(ready_timeout_s=10, probe=lambda url: True)
        assert all(m.proc is None for m in fleet.members)


def test_device_and_devices_together_are_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["rerank-server", "--device", "cuda:0", "--devices", "cuda:0,cuda:1"])
    assert result.exit_code == 2 and "not both" in result.output
