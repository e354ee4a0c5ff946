"""``sieve eval`` on a tiny BEIR folder: in-memory store, hashed bag-of-words embedder, metrics by hand."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

pytest.importorskip("ir_measures")
pytest.importorskip("matplotlib")

from api.relevance.beir import load_beir  # noqa: E402
from api.relevance.eval_options import EvalOptions  # noqa: E402
from api.relevance.evaluate import evaluate  # noqa: E402
from reranking import NoneReranker  # noqa: E402
from retrieval.memory_store import InMemoryStore  # noqa: E402
from tests.support.fakes import FakeReranker, HashEmbedder  # noqa: E402
from tests.support.tiny_beir import QRELS, write_tiny_beir  # noqa: E402

GRADES: dict[str, dict[str, int]] = {}
for _q, _d, _g in QRELS:
    GRADES.setdefault(_q, {})[_d] = _g


def ndcg_at_10(ranking: Sequence[str], grades: dict[str, int]) -> float:
    """trec_eval's nDCG@10, written out: linear gain, log2(rank + 1) discount, ideal order of the grades."""
    dcg = sum(grades.get(doc, 0) / math.log2(rank + 1) for rank, doc in enumerate(ranking[:10], start=1))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:10]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg / idcg


def mrr_at_10(ranking: Sequence[str], grades: dict[str, int]) -> float:
    return next((1 / rank for rank, doc in enumerate(ranking[:10], start=1) if grades.get(doc, 0) > 0), 0.0)


@pytest.fixture
def quiet() -> Console:
    return Console(quiet=True)


@pytest.fixture
def report(tmp_path: Path, quiet: Console) -> dict[str, Any]:
    dataset = load_beir(write_tiny_beir(tmp_path / "tiny"))
    return evaluate(
        dataset,
        tmp_path / "out",
        store=InMemoryStore(),
        embedder=HashEmbedder(),
        reranker=NoneReranker(),
        console=quiet,
    )


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {config["name"]: config for config in report["configurations"]}


def test_bm25_metrics_match_the_hand_computed_values(report: dict[str, Any]) -> None:
    bm25 = by_name(report)["bm25"]
    # q1: d1 (grade 2) then d2 (grade 1), the ideal order. q2: the unjudged-relevant d3 (three "volcano")
    # outranks d4, the relevant one, which comes second: DCG = 1 / log2(3), IDCG = 1.
    assert bm25["top10"]["q1"] == ["d1", "d2"]
    assert bm25["top10"]["q2"] == ["d3", "d4"]
    assert bm25["per_query"]["nDCG@10"] == pytest.approx(
        {"q1": 1.0, "q2": 1 / math.log2(3), "q3": 1.0, "q4": 1.0}
    )
    assert bm25["metrics"]["nDCG@10"] == pytest.approx((3 + 1 / math.log2(3)) / 4)
    assert bm25["metrics"]["MRR@10"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert bm25["metrics"]["R@50"] == bm25["metrics"]["R@100"] == pytest.approx(1.0)


def test_every_configuration_scores_its_own_ranking(report: dict[str, Any]) -> None:
    assert [c["name"] for c in report["configurations"]] == ["bm25", "dense", "hybrid"]
    for config in report["configurations"]:
        for qid, ranking in config["top10"].items():
            assert config["per_query"]["nDCG@10"][qid] == pytest.approx(ndcg_at_10(ranking, GRADES[qid]))
            assert config["per_query"]["MRR@10"][qid] == pytest.approx(mrr_at_10(ranking, GRADES[qid]))
        means = {name: sum(values.values()) / 4 for name, values in config["per_query"].items()}
        assert config["metrics"] == pytest.approx(means)


def test_report_files_and_what_they_say(report: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((out / "report.json").read_text())
    assert saved["dataset"]["queries"] == 4  # q5 has no judgement
    assert saved["dataset"]["query_ids"] == ["q1", "q2", "q3", "q4"]
    assert saved["index"]["documents"] == 6 and saved["index"]["chunks"] == 6
    assert saved["configurations"][0]["p_ndcg10_vs_first"] is None
    assert any("no rerank stage" in note for note in saved["notes"])
    markdown = (out / "report.md").read_text()
    assert "| bm25 | 0.9077 | 1.0000 | 1.0000 | 0.8750 |" in markdown
    assert {"embed", "stage1", "total"} <= saved["configurations"][1]["timings_ms"].keys()
    assert "embed" not in saved["configurations"][0]["timings_ms"]


def test_rerank_and_fusion_configurations(tmp_path: Path, quiet: Console) -> None:
    dataset = load_beir(write_tiny_beir(tmp_path / "tiny"))
    report = evaluate(
        dataset,
        tmp_path / "out",
        store=InMemoryStore(),
        embedder=HashEmbedder(),
        reranker=FakeReranker("shortest", name="test:shortest-first", max_tokens=None),
        options=EvalOptions(modes=("bm25",)),
        console=quiet,
    )
    configs = by_name(report)
    assert list(configs) == ["bm25", "bm25+rerank", "bm25+rerank+fusion"]
    # the reranker puts the shorter d4 above d3; RRF of two opposite orders ties, and a tie keeps stage 1's
    assert configs["bm25+rerank"]["top10"]["q2"] == ["d4", "d3"]
    assert configs["bm25+rerank"]["per_query"]["nDCG@10"]["q2"] == pytest.approx(1.0)
    assert configs["bm25+rerank+fusion"]["top10"]["q2"] == ["d3", "d4"]
    assert {"rerank", "fusion"} <= configs["bm25+rerank+fusion"]["timings_ms"].keys()
    assert report["notes"] == []


def test_unknown_mode_is_refused_before_indexing(tmp_path: Path, quiet: Console) -> None:
    dataset = load_beir(write_tiny_beir(tmp_path / "tiny"))
    store = InMemoryStore()
    with pytest.raises(ValueError, match="fuzzy"):
        evaluate(
            dataset,
            tmp_path / "out",
            store=store,
            embedder=HashEmbedder(),
            reranker=None,
            options=EvalOptions(modes=("fuzzy",)),
            console=quiet,
        )
    assert not (tmp_path / "out").exists()
