"""The rerank gate's pure part and its store: the fusion it learns, its decisions, where they live."""

from __future__ import annotations

import math
from typing import Any

import fakeredis
import pytest

pytest.importorskip("ir_measures")

from api.relevance.gate import (  # noqa: E402
    GRID,
    RERANK_ONLY,
    STAGE1_ONLY,
    Fusion,
    GateDecision,
    QueryRun,
    decide,
    learn_fusion,
)
from api.rerank_gate import NO_DECISION, GateStore, RerankerIdentity, RerankGate  # noqa: E402

CONTEXT: dict[str, Any] = {
    "dataset": "tiny",
    "reranker": "test:overlap",
    "embedder": "e",
    "stage1_mode": "hybrid",
}


def three(qid: str, stage1: list[float], rerank: list[float]) -> QueryRun:
    """Documents ``{qid}-0..2`` in stage-1 order; the relevant one is always ``{qid}-1``."""
    return QueryRun([f"{qid}-{i}" for i in range(3)], stage1, dict(enumerate(rerank)))


def qrels_for(runs: dict[str, QueryRun]) -> dict[str, dict[str, int]]:
    return {qid: {f"{qid}-1": 1} for qid in runs}


def test_learn_fusion_finds_the_only_weight_that_puts_the_relevant_document_first() -> None:
    # Min-max scaled, the middle document gets 0.55 whatever α; the others get 1 - α and α. Only α = 0.5 of
    # the grid puts it first: stage 1 alone, the rerank order and every RRF blend leave it lower.
    runs = {"q": three("q", [1.0, 0.55, 0.0], [0.0, 0.55, 1.0])}
    fusion, table = learn_fusion(runs, qrels_for(runs))
    assert fusion == Fusion(method="weighted", stage1_weight=0.5, rerank_weight=0.5)
    assert table[0]["nDCG@10"] == pytest.approx(1.0) and table[0]["label"] == fusion.label
    assert all(row["nDCG@10"] <= 1 / math.log2(3) + 1e-9 for row in table[1:])
    assert len(table) == len(GRID) and STAGE1_ONLY in GRID and RERANK_ONLY in GRID


def test_learn_fusion_keeps_stage_1_when_the_reranker_adds_nothing() -> None:
    runs = {"q": three("q", [1.0, 0.9, 0.0], [0.0, 0.0, 0.0])}
    runs["q"].docs = ["q-1", "q-0", "q-2"]  # the relevant document is already first
    fusion, _ = learn_fusion(runs, qrels_for(runs))
    assert fusion == STAGE1_ONLY


def heldout(helped: int, hurt: int, same: int = 0) -> dict[str, QueryRun]:
    """Queries where the reranker lifts the relevant document from 2nd to 1st, drops it from 1st to 2nd, or
    leaves it 1st."""
    runs = {}
    for i in range(helped):
        runs[f"up{i}"] = three(f"up{i}", [1.0, 0.5, 0.0], [0.2, 1.0, 0.0])
    for i in range(hurt):
        run = three(f"down{i}", [1.0, 0.5, 0.0], [0.2, 0.0, 1.0])
        run.docs = [run.docs[1], run.docs[0], run.docs[2]]  # relevant: 1st in stage 1, 2nd reranked
        runs[f"down{i}"] = run
    for i in range(same):
        run = three(f"same{i}", [1.0, 0.5, 0.0], [1.0, 0.5, 0.0])
        run.docs = [run.docs[1], run.docs[0], run.docs[2]]
        runs[f"same{i}"] = run
    return runs


def test_decide_refuses_a_reranker_that_hurts() -> None:
    runs = heldout(helped=2, hurt=18)
    decision = decide(runs, qrels_for(runs), RERANK_ONLY, rerank_depth=3, **CONTEXT)
    assert not decision.enabled and decision.delta_ndcg10 < -0.2
    assert decision.p_value is not None and decision.p_value < 0.05  # significantly worse
    assert decision.heldout_queries == 20 and decision.after["nDCG@10"] < decision.before["nDCG@10"]
    assert "sieve eval on tiny showed nDCG@10" in decision.reason and "20 held-out queries" in decision.reason
    assert "must gain at least 0.005" in decision.reason


def test_decide_refuses_a_gain_that_is_not_significant() -> None:
    runs = heldout(helped=6, hurt=4)
    decision = decide(runs, qrels_for(runs), RERANK_ONLY, rerank_depth=3, **CONTEXT)
    assert decision.delta_ndcg10 > 0.005 and decision.p_value is not None and decision.p_value > 0.05
    assert not decision.enabled and "not significant" in decision.reason


def test_decide_enables_a_reranker_that_helps_and_thresholds_are_settings() -> None:
    runs = heldout(helped=18, hurt=0, same=2)
    decision = decide(runs, qrels_for(runs), RERANK_ONLY, rerank_depth=3, train_ids=["t1", "t2"], **CONTEXT)
    assert decision.enabled and decision.delta_ndcg10 > 0.3 and decision.p_value < 1e-6  # type: ignore[operator]
    assert decision.train_queries == 2 and decision.fusion == RERANK_ONLY
    assert decision.after["MRR@10"] == pytest.approx(1.0) and set(decision.before) == {
        "nDCG@10",
        "R@50",
        "MRR@10",
    }
    strict = decide(runs, qrels_for(runs), RERANK_ONLY, rerank_depth=3, min_gain=0.5, **CONTEXT)
    assert not strict.enabled and "at least 0.5" in strict.reason
    stricter = decide(runs, qrels_for(runs), RERANK_ONLY, rerank_depth=3, alpha=1e-30, **CONTEXT)
    assert not stricter.enabled


def test_decide_never_uses_the_queries_it_learned_on() -> None:
    runs = heldout(helped=3, hurt=0)
    with pytest.raises(ValueError, match="also used to learn"):
        decide(runs, qrels_for(runs), RERANK_ONLY, rerank_depth=3, train_ids=["up0"], **CONTEXT)


def a_decision(enabled: bool = True, revision: str | None = "r1") -> GateDecision:
    runs = heldout(helped=18, hurt=0, same=2) if enabled else heldout(helped=2, hurt=18)
    return decide(runs, qrels_for(runs), RERANK_ONLY, rerank_depth=3, reranker_revision=revision, **CONTEXT)


def test_store_round_trip_and_every_write_invalidates_cached_results() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    store = GateStore(client)
    assert store.get("t1") is None and not store.delete("t1")
    decision = a_decision()
    store.put("t1", decision)
    assert store.get("t1") == decision and store.get("t2") is None
    assert client.get("sieve:index_version:t1") == "2"  # the delete above and the put each bumped it
    assert store.delete("t1") and store.get("t1") is None
    assert client.get("sieve:index_version:t1") == "3"


def test_a_decision_applies_only_to_the_reranker_and_revision_it_was_made_for() -> None:
    store = GateStore(fakeredis.FakeRedis(decode_responses=True))
    store.put("t1", a_decision(revision="r1"))
    same = RerankGate("evaluated", store, RerankerIdentity("test:overlap", revision="r1"))
    verdict = same.verdict("t1")
    assert verdict.run and verdict.fusion == RERANK_ONLY and verdict.info.fusion == "rerank order"
    swapped = RerankGate("evaluated", store, RerankerIdentity("test:overlap", revision="r2"))
    verdict = swapped.verdict("t1")
    assert not verdict.run and not verdict.info.enabled and "sieve eval --gate" in verdict.info.reason
    other = RerankGate("evaluated", store, RerankerIdentity("test:other", revision="r1"))
    assert not other.verdict("t1").run
    assert same.verdict("t2").info.reason == NO_DECISION and not same.verdict("t2").run


def test_gate_modes_always_and_off_ignore_decisions() -> None:
    store = GateStore(fakeredis.FakeRedis(decode_responses=True))
    store.put("t1", a_decision(enabled=False))
    identity = RerankerIdentity("test:overlap", revision="r1")
    assert RerankGate("always", store, identity).verdict("t1").run
    assert not RerankGate("off", store, identity).verdict("t1").run
    refused = RerankGate("evaluated", store, identity).verdict("t1")
    assert not refused.run and refused.info.reason.startswith("sieve eval on tiny showed nDCG@10")


def test_decision_markdown_names_the_numbers() -> None:
    text = a_decision().markdown()
    assert "## Rerank gate" in text and "**Enabled.**" in text and "| nDCG@10 |" in text
