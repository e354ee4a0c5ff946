"""``engine.hub``: where weights come from, and the identity and revision the API reports (no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.hub import MODEL_CARD, model_identity, model_revision, offline_kwargs
from engine.prompts import format_query

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_revision_of_a_trained_folder_a_hub_snapshot_and_neither(tmp_path: Path) -> None:
    trained = tmp_path / "trained"
    trained.mkdir()
    (trained / MODEL_CARD).write_text(json.dumps({"revision": "r7"}), encoding="utf-8")
    assert model_revision(str(trained)) == "r7"
    assert model_revision(f"/cache/models--Qwen--Qwen3-Reranker-0.6B/snapshots/{COMMIT}") == COMMIT
    assert model_revision(str(tmp_path)) is None  # a plain folder
    assert model_revision("Qwen/Qwen3-Reranker-0.6B") is None  # a bare hub id
    assert model_revision("") is None


def test_a_hub_id_is_local_only_while_the_hub_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert offline_kwargs("Qwen/Qwen3-Embedding-0.6B") == {"local_files_only": True}
    assert offline_kwargs(str(tmp_path)) == {}  # a folder never reaches the hub
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "")
    assert offline_kwargs("Qwen/Qwen3-Embedding-0.6B") == {}


def test_identity_is_the_folder_name_or_the_hub_id(tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    assert model_identity(str(folder) + "/") == "my-model"
    assert model_identity("Qwen/Qwen3-Embedding-0.6B") == "Qwen/Qwen3-Embedding-0.6B"


def test_the_qwen3_embedding_query_template() -> None:
    assert format_query("q?", "Find it") == "Instruct: Find it\nQuery:q?"
