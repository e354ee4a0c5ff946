"""``sieve train embedder`` / ``sieve train reranker``: a versioned model folder with its evaluation, from a
labelled-pairs file (slow tier: each runs a short training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from reranking.backends.cross_encoder import CrossEncoderReranker
from tests.support.training import CODES

pytestmark = pytest.mark.slow  # training runs


def test_cli_writes_a_versioned_folder_with_its_eval(tmp_path: Path, minilm_dir: Path) -> None:
    from api.cli import app

    data = tmp_path / "pairs.jsonl"
    lines = [f'{{"query": "what is {c}", "passage": "{p}", "label": 1}}' for c, p in CODES.items()]
    data.write_text("\n".join(lines) + "\n")
    args = ["train", "embedder", "--data", str(data), "--out", str(tmp_path / "models"), "--max-steps", "1"]
    result = CliRunner().invoke(
        app,
        [*args, "--batch-size", "4", "--held-out", "0.25", "--max-seq-length", "32", "--mine-with", "hybrid"],
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "models" / "embedder-v1"
    assert {"eval.md", "eval.json", "sieve-model.json", "model.safetensors"} <= {
        p.name for p in folder.iterdir()
    }
    assert not (folder / "checkpoints").exists()
    assert "| before |" in (folder / "eval.md").read_text() and "revision" in result.output
    manifest = json.loads((folder / "sieve-model.json").read_text())
    assert manifest["hyper_parameters"]["mine_with"] == "hybrid"
    assert json.loads((folder / "run.json").read_text())["mine_with"] == "hybrid"
    missing = CliRunner().invoke(app, ["train", "reranker", "--data", str(data)])
    assert missing.exit_code != 0 and "--base" in missing.output


def test_cli_reranker_reports_stage_one_before_and_after(
    tmp_path: Path, tiny_cross_encoder_dir: Path
) -> None:
    from api.cli import app

    data = tmp_path / "pairs.jsonl"
    lines = [f'{{"query": "what is {c}", "passage": "{p}", "label": 1}}' for c, p in CODES.items()]
    data.write_text("\n".join(lines) + "\n")
    args = [
        "train",
        "reranker",
        "--data",
        str(data),
        "--base",
        str(tiny_cross_encoder_dir),
        "--max-steps",
        "2",
    ]
    result = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "m"), "--held-out", "0.25", "--rerank-depth", "4"]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "m" / "reranker-v1"
    report = json.loads((folder / "eval.json").read_text())
    assert set(report["results"]) == {"stage 1", "before", "after"}
    manifest = json.loads((folder / "sieve-model.json").read_text())
    assert manifest["reranker_kind"] == "cross-encoder" and manifest["data"]["held_out_queries"] == 2
    assert CrossEncoderReranker(model=str(folder)).rank("what is blorvak", ["a", "b"])[0].index in (0, 1)
