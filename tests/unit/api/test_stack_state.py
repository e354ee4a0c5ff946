"""The stack's state file (``api.stack_state``): atomic writes, tolerant reads, and what ``/ready`` reports of
the processes of ``sieve up``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from api.stack_state import STATE_ENV, read_state, ready_report, write_state
from tests.support.apikit import running


def test_a_written_state_reads_back_with_its_version(tmp_path: Path) -> None:
    path = tmp_path / "home" / "stack.json"
    write_state(path, {"pid": 12, "ports": {"api": 8100}})
    assert read_state(path) == {"version": 1, "pid": 12, "ports": {"api": 8100}}
    assert [p.name for p in path.parent.iterdir()] == ["stack.json"]  # no temporary file left behind


def test_a_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    write_state(path, {"children": [{"name": "x"}] * 100})
    write_state(path, {"children": []})
    assert read_state(path) == {"version": 1, "children": []}


def test_a_failed_write_keeps_the_previous_state(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    write_state(path, {"pid": 1})
    with pytest.raises(TypeError):
        write_state(path, {"pid": object()})  # not JSON
    assert read_state(path) == {"version": 1, "pid": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["stack.json"]


@pytest.mark.parametrize("content", [None, "", "{half", "[1, 2]"])
def test_a_missing_or_broken_state_reads_as_none(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "stack.json"
    if content is not None:
        path.write_text(content)
    assert read_state(path) is None


def test_ready_report_lists_the_children_without_their_command_lines(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    child = {"name": "worker", "pid": 7, "argv": ["python", "-m", "api.cli", "worker"], "state": "running"}
    write_state(path, {"pid": 3, "children": [child | {"restarts": 2, "last_exit": -9, "restart_at": None}]})
    assert ready_report({STATE_ENV: str(path)}) == {
        "supervisor_pid": 3,
        "children": [
            {
                "name": "worker",
                "pid": 7,
                "state": "running",
                "restarts": 2,
                "last_exit": -9,
                "restart_at": None,
            }
        ],
    }
    assert ready_report({}) is None  # not under `sieve up`


def test_ready_shows_the_stack_under_sieve_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "stack.json"
    write_state(
        path, {"pid": 3, "children": [{"name": "worker", "pid": 9, "state": "restarting", "restarts": 1}]}
    )
    with running(tmp_path) as h:
        assert "stack" not in h.client.get("/ready").json()
        monkeypatch.setenv(STATE_ENV, str(path))
        body = h.client.get("/ready").json()
    assert body["ready"] is True
    assert body["stack"]["children"][0] | {"restart_at": None} == {
        "name": "worker",
        "pid": 9,
        "state": "restarting",
        "restarts": 1,
        "last_exit": None,
        "restart_at": None,
    }
    json.dumps(body)  # plain JSON
