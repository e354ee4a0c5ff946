"""The rerank gate where a user sees it: /v1/search and /info on fakes, and ``sieve eval`` with ``gate``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

pytest.importorskip("ir_measures")
pytest.importorskip("matplotlib")

from api.gate_decision import Fusion, GateDecision, Stage1, Stage1Decision  # noqa: E402
from api.relevance.beir import load_beir  # noqa: E402
from api.relevance.eval_options import EvalOptions  # noqa: E402
from api.relevance.eval_run import gate_split  # noqa: E402
from api.relevance.evaluate import evaluate  # noqa: E402
from api.relevance.stage1_gate import STAGE1_GRID  # noqa: E402
from ingestion.settings import IngestSettings  # noqa: E402
from retrieval.memory_store import InMemoryStore  # noqa: E402
from tests.support import compat_harness as harness  # noqa: E402
from tests.support.compat_harness import AUTH  # noqa: E402
from tests.support.fakes import FakeReranker, HashEmbedder  # noqa: E402
from tests.support.tiny_beir import write_keyword_beir, write_tiny_beir  # noqa: E402

DOCS = {
    "bees.md": "Honey bees dance to show where flowers grow.",
    "tides.txt": "Tides follow the moon and the sun, where bees never dance.",
    "hive.txt": "A hive of bees keeps its honey for the winter.",
}
QUERY = {"query": "where do bees dance", "top_k": 5}
HALF = Fusion(method="weighted", stage1_weight=0.5, rerank_weight=0.5)


def decision(*, enabled: bool, reranker: str = "test:overlap", revision: str | None = None) -> GateDecision:
    metrics = {"nDCG@10": 0.685, "R@50": 0.9, "MRR@10": 0.65}
    after = {**metrics, "nDCG@10": 0.712 if enabled else 0.551}
    shown = "0.712 (+0.027, p=0.004" if enabled else "0.551 (-0.134, p=0.001"
    return GateDecision(
        enabled=enabled,
        reason=f"sieve eval on scifact showed nDCG@10 0.685 → {shown}, 60 held-out queries)",
        dataset="scifact",
        reranker=reranker,
        reranker_revision=revision,
        embedder="test:hash-bow:64",
        stage1_mode="hybrid",
        rerank_depth=50,
        fusion=HALF,
        before=metrics,
        after=after,
        delta_ndcg10=after["nDCG@10"] - 0.685,
        p_value=0.004 if enabled else 0.001,
        min_gain=0.005,
        alpha=0.05,
        train_queries=100,
        heldout_queries=60,
    )


def test_no_decision_means_stage_1_only_and_no_rerank_call(ingest_settings: IngestSettings) -> None:
    reranker = FakeReranker()
    with harness.client(ingest_settings, reranker, rerank_gate="evaluated", cache_ttl_s=0) as (client, res):
        harness.index(res, "t1", DOCS)
        body = client.post("/v1/search", json=QUERY, headers=AUTH).json()
        info = client.get("/info", headers=AUTH).json()
        anonymous = client.get("/info").json()
    assert reranker.calls == []
    assert body["rerank"]["applied"] is False and body["degraded"] is False
    assert body["rerank"]["note"].startswith("rerank stage off for this tenant: no evaluation yet")
    assert "sieve eval --gate" in body["rerank"]["note"]
    assert body["gate"]["mode"] == "evaluated" and body["gate"]["enabled"] is False
    assert all(h["rerank_score"] is None and h["score"] == h["stage1_score"] for h in body["hits"])
    assert info["rerank_gate"]["tenant"] == "t1" and info["rerank_gate"]["enabled"] is False
    assert anonymous["rerank_gate"] == {"mode": "evaluated"}


def test_a_refusing_decision_says_why_in_each_response(ingest_settings: IngestSettings) -> None:
    reranker = FakeReranker()
    with harness.client(ingest_settings, reranker, rerank_gate="evaluated", cache_ttl_s=0) as (client, res):
        harness.index(res, "t1", DOCS)
        assert res.gates is not None
        res.gates.put("t1", decision(enabled=False))
        body = client.post("/v1/search", json=QUERY, headers=AUTH).json()
    assert reranker.calls == [] and body["rerank"]["applied"] is False
    assert body["rerank"]["note"] == (
        "rerank stage off for this tenant: sieve eval on scifact showed nDCG@10 0.685 → 0.551 "
        "(-0.134, p=0.001, 60 held-out queries)"
    )
    assert body["gate"]["decided_at"] and body["gate"]["dataset"] == "scifact"


def test_an_enabled_decision_serves_the_learned_fusion(ingest_settings: IngestSettings) -> None:
    reranker = FakeReranker()
    with harness.client(ingest_settings, reranker, rerank_gate="evaluated", cache_ttl_s=0) as (client, res):
        harness.index(res, "t1", DOCS)
        assert res.gates is not None
        res.gates.put("t1", decision(enabled=True))
        body = client.post("/v1/search", json=QUERY, headers=AUTH).json()
        res.gates.put("t2", decision(enabled=True))  # another tenant's decision is not t1's
        info = client.get("/info", headers={"Authorization": "Bearer k2"}).json()
    assert len(reranker.calls) == 1 and reranker.calls[0][2] is None  # every candidate scored, for the fusion
    hits = body["hits"]
    assert body["rerank"]["applied"] is True and body["rerank"]["note"] == f"final score: {HALF.label}"
    assert body["gate"]["enabled"] is True and body["gate"]["fusion"] == HALF.label
    # the final score is 0.5 × min-max(stage 1) + 0.5 × min-max(rerank) over the candidates (all returned)
    assert len(hits) == body["candidates"] == 3
    by_stage1 = sorted(hits, key=lambda h: -h["stage1_score"])  # the order the fusion was given them in
    scaled = HALF.order(
        [h["stage1_score"] for h in by_stage1], {r: h["rerank_score"] for r, h in enumerate(by_stage1)}
    )
    fused = {by_stage1[r]["chunk_id"]: score for r, score in scaled}
    assert [h["score"] for h in hits] == pytest.approx([fused[h["chunk_id"]] for h in hits])
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert info["rerank_gate"]["tenant"] == "t2" and info["rerank_gate"]["enabled"] is True


def test_a_decision_for_another_reranker_revision_does_not_apply(ingest_settings: IngestSettings) -> None:
    reranker = FakeReranker()
    with harness.client(ingest_settings, reranker, rerank_gate="evaluated", cache_ttl_s=0) as (client, res):
        harness.index(res, "t1", DOCS)
        assert res.gates is not None
        res.gates.put("t1", decision(enabled=True, revision="an-older-revision"))
        body = client.post("/v1/search", json=QUERY, headers=AUTH).json()
    assert reranker.calls == [] and body["rerank"]["applied"] is False
    assert "an-older-revision" in body["rerank"]["note"] and "sieve eval --gate" in body["rerank"]["note"]


def test_always_is_the_rerank_order_and_off_is_stage_1(ingest_settings: IngestSettings) -> None:
    for mode, applied in (("always", True), ("off", False)):
        reranker = FakeReranker()
        with harness.client(ingest_settings, reranker, rerank_gate=mode, cache_ttl_s=0) as (client, res):
            harness.index(res, "t1", DOCS)
            body = client.post("/v1/search", json=QUERY, headers=AUTH).json()
        assert body["rerank"]["applied"] is applied and body["gate"]["mode"] == mode
        assert len(reranker.calls) == int(applied)
        if applied:  # today's behaviour: the reranker's order and score
            assert all(h["score"] == h["rerank_score"] for h in body["hits"])
            assert reranker.calls[0][2] is None  # stage 2 scores every candidate; compose cuts to top_k once
            scores = [h["score"] for h in body["hits"]]
            assert 0 < len(scores) <= 5 and scores == sorted(scores, reverse=True)


def test_applying_a_decision_invalidates_cached_results(ingest_settings: IngestSettings) -> None:
    reranker = FakeReranker()
    with harness.client(ingest_settings, reranker, rerank_gate="evaluated") as (client, res):
        harness.index(res, "t1", DOCS)
        first = client.post("/v1/search", json=QUERY, headers=AUTH).json()
        assert client.post("/v1/search", json=QUERY, headers=AUTH).json()["cached"] is True
        assert res.gates is not None
        res.gates.put("t1", decision(enabled=True))
        second = client.post("/v1/search", json=QUERY, headers=AUTH).json()
        res.gates.delete("t1")
        third = client.post("/v1/search", json=QUERY, headers=AUTH).json()
    assert first["rerank"]["applied"] is False
    assert second["cached"] is False and second["rerank"]["applied"] is True
    assert third["cached"] is False and third["rerank"]["applied"] is False


def learned_bm25(gate: GateDecision, *, adopted: bool = True) -> GateDecision:
    """``gate`` with a stage-1 decision that adopted bm25 (or kept the default)."""
    metrics = {"nDCG@10": 0.60, "R@50": 0.9, "MRR@10": 0.6}
    stage1 = Stage1Decision(
        adopted=adopted,
        reason="sieve eval on scifact showed nDCG@10 0.600 → 0.650 (+0.050, p=0.01, 60 held-out queries)",
        learned=Stage1(mode="bm25"),
        before=metrics,
        after={**metrics, "nDCG@10": 0.65},
        delta_ndcg10=0.05,
        p_value=0.01,
        min_gain=0.005,
        alpha=0.05,
        train_queries=100,
        heldout_queries=60,
    )
    return gate.model_copy(update={"stage1": stage1})


def test_a_learned_stage1_serves_default_searches_and_an_explicit_mode_is_honoured(
    ingest_settings: IngestSettings,
) -> None:
    reranker = FakeReranker()
    with harness.client(ingest_settings, reranker, rerank_gate="evaluated") as (client, res):
        harness.index(res, "t1", DOCS)
        before = client.post("/v1/search", json=QUERY, headers=AUTH).json()
        assert res.gates is not None
        res.gates.put("t1", learned_bm25(decision(enabled=False)))
        learned = client.post("/v1/search", json=QUERY, headers=AUTH).json()
        bm25 = client.post("/v1/search", json={**QUERY, "mode": "bm25"}, headers=AUTH).json()
        dense = client.post("/v1/search", json={**QUERY, "mode": "dense"}, headers=AUTH).json()
        fused = client.post("/v1/search", json={**QUERY, "fusion": "rrf"}, headers=AUTH).json()
        info = client.get("/info", headers=AUTH).json()
        res.gates.put("t1", learned_bm25(decision(enabled=False), adopted=False))
        kept = client.post("/v1/search", json=QUERY, headers=AUTH).json()
    assert before["mode"] == "hybrid" and before["fusion"] is None and before["stage1_fusion"] == "zscore"
    assert learned["cached"] is False and learned["mode"] == "bm25"  # not the answer cached before
    assert (
        learned["stage1_fusion"] is None and bm25["stage1_fusion"] is None and dense["stage1_fusion"] is None
    )
    assert fused["stage1_fusion"] == "rrf" and kept["stage1_fusion"] == "zscore"
    assert learned["fusion"].startswith("stage 1 bm25: learned by sieve eval --gate on ")
    assert "nDCG@10 0.600 → 0.650" in learned["fusion"]
    assert [(h["chunk_id"], h["stage1_score"]) for h in learned["hits"]] == [
        (h["chunk_id"], h["stage1_score"]) for h in bm25["hits"]
    ]
    assert bm25["fusion"] is None and (dense["mode"], dense["fusion"]) == ("dense", None)
    assert (fused["mode"], fused["fusion"]) == ("hybrid", None)  # naming the fusion sets the learned aside
    assert (
        info["rerank_gate"]["stage1"]["learned"] is True and info["rerank_gate"]["stage1"]["label"] == "bm25"
    )
    assert kept["cached"] is False and (kept["mode"], kept["fusion"]) == ("hybrid", None)


def test_eval_gate_learns_on_train_decides_on_heldout_and_scores_each_pair_once(tmp_path: Path) -> None:
    everything = load_beir(write_tiny_beir(tmp_path / "tiny"))
    held = replace(everything, queries={q: everything.queries[q] for q in ("q3", "q4")}, split="eval")
    held.qrels = {q: everything.qrels[q] for q in held.queries}
    train = replace(everything, queries={q: everything.queries[q] for q in ("q1", "q2")}, split="train")
    train.qrels = {q: everything.qrels[q] for q in train.queries}
    reranker = FakeReranker("shortest", name="test:counting", max_tokens=None)
    report = evaluate(
        held,
        tmp_path / "out",
        store=InMemoryStore(),
        embedder=HashEmbedder(),
        reranker=reranker,
        options=EvalOptions(modes=("bm25", "dense"), gate=True, gate_mode="bm25"),
        console=Console(quiet=True),
        train=train,
    )
    names = [c["name"] for c in report["configurations"]]
    assert names == [
        "bm25", "dense", "bm25+rerank", "dense+rerank", "bm25+rerank+fusion", "dense+rerank+fusion",
        "bm25+rerank+learned",
    ]  # fmt: skip
    assert len(reranker.pairs) == len(set(reranker.pairs))  # no (query, passage) scored twice
    assert len(reranker.calls) <= 2 * len(train.queries) + 2 * len(held.queries)
    saved = json.loads((tmp_path / "out" / "gate.json").read_text())
    gate = GateDecision.model_validate(saved)
    assert gate.train_queries == 2 and gate.heldout_queries == 2 and gate.stage1_mode == "bm25"
    assert gate.reranker == "test:counting" and gate.grid and report["gate"]["enabled"] == gate.enabled
    assert "## Rerank gate" in (tmp_path / "out" / "report.md").read_text()
    assert not gate.enabled  # two held-out queries cannot show a significant gain
    assert gate.stage1 is not None and not gate.stage1.adopted  # nor for the stage-1 configuration
    assert (
        gate.stage1.train_queries == 2
        and gate.stage1.heldout_queries == 2
        and len(gate.stage1.grid) == len(STAGE1_GRID)
    )
    assert "## Stage-1 gate" in (tmp_path / "out" / "report.md").read_text()


class Blind(HashEmbedder):
    """Queries land on vectors unrelated to their documents' (their words reversed): a useless dense leg."""

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        return self.embed_documents([" ".join(w[::-1] for w in t.split()) for t in texts])


@pytest.mark.parametrize("rerank", [True, False])
def test_eval_gate_adopts_bm25_over_a_useless_dense_leg_and_the_rerank_gate_learns_on_it(
    tmp_path: Path, rerank: bool
) -> None:
    held, train = gate_split(load_beir(write_keyword_beir(tmp_path / "kw")), heldout=None, train=100)
    reranker = FakeReranker() if rerank else None
    report = evaluate(
        held,
        tmp_path / "out",
        store=InMemoryStore(),
        embedder=Blind(),
        reranker=reranker,
        # the service configured for RRF (RETRIEVAL_FUSION=rrf): a useless leg halves bm25's reciprocal ranks
        options=EvalOptions(
            modes=("bm25", "dense", "hybrid"), rerank_modes=("hybrid",), gate=True, fusion="rrf"
        ),
        console=Console(quiet=True),
        train=train,
    )
    gate = GateDecision.model_validate_json((tmp_path / "out" / "gate.json").read_text())
    assert gate.stage1 is not None and gate.stage1.default == Stage1(mode="hybrid", fusion="rrf")
    assert gate.stage1.adopted and gate.stage1.serving == Stage1(mode="bm25")
    assert gate.stage1.p_value is not None and gate.stage1.p_value < 0.05 and gate.stage1.delta_ndcg10 > 0.5
    assert gate.stage1_mode == "bm25" and gate.stage1.train_queries == len(train.queries)
    rows = {c["name"]: c["metrics"]["nDCG@10"] for c in report["configurations"]}
    assert rows["tuned"] == pytest.approx(gate.stage1.after["nDCG@10"]) == pytest.approx(rows["bm25"])
    if rerank:  # the rerank gate learned and decided on the adopted order, not on hybrid's
        assert "tuned+rerank+learned" in rows and "hybrid+rerank+learned" not in rows
        assert gate.before["nDCG@10"] == pytest.approx(rows["tuned"]) and gate.reranker == "test:overlap"
    else:
        assert not gate.enabled and gate.reranker == "none" and "no rerank stage" in gate.reason
        assert not any("rerank" in name for name in rows)
