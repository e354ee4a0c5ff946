"""Issue 13 item 4 (folder ingest ids are folder-relative paths; collisions reported) and the ingest part of
item 3 (a refused file is listed with its reason and the rest continue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from api.cli import ingest as ingest_mod
from api.cli.client import SieveClientError
from api.cli.ingest import Planned, ingest_files, plan_uploads
from api.cli.main import app


def _tree(root: Path) -> Path:
    for rel in ("a/README.md", "b/README.md", "top.txt", "b/deep/notes.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(f"text of {rel}")
    return root


def test_folder_files_get_folder_relative_ids(tmp_path: Path) -> None:
    planned, collisions = plan_uploads([_tree(tmp_path / "docs")])
    assert sorted(str(p.document_id) for p in planned) == [
        "a/README.md",
        "b/README.md",
        "b/deep/notes.md",
        "top.txt",
    ]
    assert collisions == []


def test_same_id_twice_is_a_reported_collision(tmp_path: Path) -> None:
    docs = _tree(tmp_path / "docs")
    (tmp_path / "top.txt").write_text("another top")
    planned, collisions = plan_uploads([docs, tmp_path / "top.txt"])
    assert [(c[0].path, c[1].path) for c in collisions] == [(docs / "top.txt", tmp_path / "top.txt")]
    assert len(planned) == 4


class FakeApi:
    """Refuses ``bad.exe`` as the API would (415, the whole request refused); every other upload is done."""

    def __init__(self) -> None:
        self.uploads: list[tuple[str, str | None]] = []

    def upload(
        self, paths: list[Path], *, metadata: Any = None, document_id: str | None = None
    ) -> dict[str, Any]:
        (path,) = paths
        if path.suffix == ".exe":
            raise SieveClientError(415, "unsupported file type '.exe'")
        self.uploads.append((path.name, document_id))
        job = {"job_id": str(len(self.uploads)), "document_id": document_id or path.name, "state": "queued"}
        return {"jobs": [job], "rejected": []}

    def wait(self, job_ids: list[str], on_progress: Any = None) -> list[dict[str, Any]]:
        return [
            {"job_id": j, "document_id": j, "state": "done", "chunks_total": 2, "chunks_done": 2}
            for j in job_ids
        ]


def test_refused_file_is_listed_and_the_rest_continue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.exe").write_bytes(b"MZ")
    (tmp_path / "good.txt").write_text("fine")
    api = FakeApi()
    jobs = ingest_files(api, [Planned(tmp_path / "bad.exe", None), Planned(tmp_path / "good.txt", None)])
    out = capsys.readouterr().out
    assert "bad.exe" in out and "415" in out and ".exe" in out
    assert [j["state"] for j in jobs] == ["done"] and api.uploads == [("good.txt", None)]
    assert "1 document(s) indexed, 2 chunks; 1 refused, 0 failed" in out


def test_cli_ingest_uploads_relative_ids_and_exits_1_on_collision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = _tree(tmp_path / "docs")
    (tmp_path / "top.txt").write_text("another top")
    api = FakeApi()
    monkeypatch.setattr(ingest_mod, "client", lambda url, key: api)
    result = CliRunner().invoke(app, ["ingest", str(docs), str(tmp_path / "top.txt")], env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert sorted(i for _, i in api.uploads if i) == [
        "a/README.md",
        "b/README.md",
        "b/deep/notes.md",
        "top.txt",
    ]
    assert "collision" in result.output and "Traceback" not in result.output
    assert "4 document(s) indexed" in result.output
