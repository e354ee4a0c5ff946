"""The stage-1 gate's pure part and where its decision lives: the configuration it learns on train queries,
the held-out rule that adopts it, its round trip through the gate store, and old decisions without it."""

from __future__ import annotations

import json

import fakeredis
import pytest

pytest.importorskip("ir_measures")

from api.gate_decision import DEFAULT_STAGE1, GateDecision, Stage1  # noqa: E402
from api.relevance.gate import RERANK_ONLY, QueryRun, decide, without_rerank  # noqa: E402
from api.relevance.stage1_gate import STAGE1_GRID, QueryLegs, decide_stage1, learn_stage1  # noqa: E402
from api.rerank_gate import NO_STAGE1, GateStore, RerankerIdentity, RerankGate, gate_summary  # noqa: E402
from retrieval.types import Candidate  # noqa: E402

BM25 = Stage1(mode="bm25")


def chunks(qid: str, names: list[str]) -> list[Candidate]:
    """Chunks of documents ``{qid}-{name}`` best first, scores falling from 1 to 0."""
    top = max(len(names) - 1, 1)
    return [
        Candidate(
            id=f"{qid}-{n}#0", document_id=f"{qid}-{n}", version="v", position=0, text=n, score=1 - i / top
        )
        for i, n in enumerate(names)
    ]


def legs(qid: str, dense: list[str], bm25: list[str], reads: bool = True) -> QueryLegs:
    return QueryLegs(chunks(qid, dense), chunks(qid, bm25), reads)


def qrels_for(queries: dict[str, QueryLegs]) -> dict[str, dict[str, int]]:
    return {qid: {f"{qid}-r": 1} for qid in queries}  # the relevant document of every query is "r"


def both_help(qid: str) -> QueryLegs:
    """Each leg has its own wrong document first and the relevant one second (five each, evenly scored:
    standardised, r gets +0.71 from both legs, x and a +1.41 from theirs and the floor, -1.41, from the
    other)."""
    return legs(qid, ["x", "r", "y", "z", "w"], ["a", "r", "b", "c", "d"])


def useless_dense(n: int) -> dict[str, QueryLegs]:
    """bm25 finds the relevant document first; dense never finds it (an embedder that cannot read it)."""
    return {f"q{i}": legs(f"q{i}", ["x", "y", "z"], ["r", "a", "b"]) for i in range(n)}


def test_learning_picks_bm25_when_the_dense_leg_is_useless() -> None:
    queries = useless_dense(8)
    config, table = learn_stage1(queries, qrels_for(queries))
    assert config == BM25
    scores = {row["label"]: row["nDCG@10"] for row in table}
    assert scores["bm25"] == pytest.approx(1.0) and scores["dense"] == 0.0
    # equal-weight fusion ties the useless dense top with the relevant bm25 top; the dense one is seen first
    assert scores[DEFAULT_STAGE1.label] < 1.0
    assert len(table) == len(STAGE1_GRID) and table[0]["label"] == "bm25"


def test_learning_picks_hybrid_when_both_legs_help() -> None:
    # each leg puts its own wrong document first and the relevant one second: only fusion lifts it to first
    queries = {f"q{i}": both_help(f"q{i}") for i in range(8)}
    config, table = learn_stage1(queries, qrels_for(queries))
    assert config == DEFAULT_STAGE1  # ties with the other hybrids go to the default
    scores = {row["label"]: row["nDCG@10"] for row in table}
    assert scores[config.label] == pytest.approx(1.0) and scores["bm25"] < 1.0 and scores["dense"] < 1.0


def test_learning_finds_weights_when_one_leg_is_better() -> None:
    # 6 queries where only dense finds r (first) and bm25's top "a" is also dense's 40th: equal-weight RRF
    # puts "a" first (1/61 + 1/100 > 1/61); 2 where bm25 finds r first and dense 5th. Only RRF with dense
    # 0.75 : bm25 0.25 puts r first in both kinds (dense alone, bm25 alone, min-max and standardised score
    # fusion each miss one).
    dense = ["r", *(f"n{k}" for k in range(38)), "a"]
    queries = {f"d{i}": legs(f"d{i}", dense, ["a", "b"]) for i in range(6)}
    queries |= {f"b{i}": legs(f"b{i}", ["x", "y", "z", "w", "r"], ["r", "a"]) for i in range(2)}
    config, table = learn_stage1(queries, qrels_for(queries))
    assert config == Stage1(mode="hybrid", fusion="rrf", dense_weight=0.75, bm25_weight=0.25)
    assert table[0]["nDCG@10"] == pytest.approx(1.0) and all(row["nDCG@10"] < 1.0 for row in table[1:])


def test_hybrid_runs_as_bm25_for_a_query_the_embedder_cannot_read() -> None:
    query = legs("q", ["x", "r"], ["r", "a"], reads=False)
    assert query.ranking(DEFAULT_STAGE1, 10) == ["q-r", "q-a"]


def heldout(better: int, worse: int, same: int = 0) -> dict[str, QueryLegs]:
    """Queries where bm25 beats the default (dense useless), loses to it, or ties."""
    queries = useless_dense(better)
    for i in range(worse):  # both legs help: the default puts r first, bm25 alone second
        queries[f"w{i}"] = both_help(f"w{i}")
    for i in range(same):
        queries[f"s{i}"] = legs(f"s{i}", ["r", "x"], ["r", "a"])
    return queries


def test_the_heldout_rule_adopts_a_significant_gain_and_keeps_the_evidence() -> None:
    queries = heldout(better=18, worse=0, same=2)
    decision = decide_stage1(queries, qrels_for(queries), BM25, dataset="tiny", train_ids=["t1"])
    assert decision.adopted and decision.serving == BM25 and decision.delta_ndcg10 > 0.3
    assert decision.p_value is not None and decision.p_value < 0.05 and decision.heldout_queries == 20
    assert decision.before["nDCG@10"] < decision.after["nDCG@10"] and decision.train_queries == 1
    assert "sieve eval on tiny showed nDCG@10" in decision.reason and "(bm25)" in decision.reason


def test_the_heldout_rule_refuses_what_does_not_beat_the_default_significantly() -> None:
    queries = heldout(better=6, worse=4)
    noisy = decide_stage1(queries, qrels_for(queries), BM25, dataset="tiny")
    assert noisy.delta_ndcg10 > 0.005 and noisy.p_value is not None and noisy.p_value > 0.05
    assert not noisy.adopted and noisy.serving == DEFAULT_STAGE1 and "not significant" in noisy.reason
    queries = heldout(better=2, worse=18)
    worse = decide_stage1(queries, qrels_for(queries), BM25, dataset="tiny")
    assert not worse.adopted and worse.delta_ndcg10 < 0 and "must gain at least" in worse.reason
    queries = heldout(better=18, worse=0)
    same = decide_stage1(queries, qrels_for(queries), DEFAULT_STAGE1, dataset="tiny")
    assert not same.adopted and "the default is the best" in same.reason
    with pytest.raises(ValueError, match="also used to learn"):
        decide_stage1(queries, qrels_for(queries), BM25, dataset="tiny", train_ids=["q0"])


def a_decision(*, adopted: bool = True, embedder: str = "e") -> GateDecision:
    queries = heldout(better=18, worse=0, same=2) if adopted else heldout(better=6, worse=4)
    stage1 = decide_stage1(queries, qrels_for(queries), BM25, dataset="tiny")
    runs = {"q": QueryRun(["q-0", "q-1"], [1.0, 0.0], {0: 0.0, 1: 1.0})}
    rerank = decide(
        runs | {"p": QueryRun(["p-1", "p-0"], [1.0, 0.0], {0: 1.0, 1: 0.0})},
        {"q": {"q-1": 1}, "p": {"p-1": 1}},
        RERANK_ONLY,
        dataset="tiny",
        reranker="test:overlap",
        embedder=embedder,
        stage1_mode=stage1.serving.label,
        rerank_depth=2,
    )
    return rerank.model_copy(update={"stage1": stage1})


def test_a_stage1_decision_round_trips_through_the_store_and_applies_to_its_embedder_only() -> None:
    store = GateStore(fakeredis.FakeRedis(decode_responses=True))
    decision = a_decision()
    store.put("t1", decision)
    stored = store.get("t1")
    assert stored == decision and stored.stage1 is not None and stored.stage1.learned == BM25
    gate = RerankGate("off", store, RerankerIdentity("test:overlap"))  # the stage-1 gate serves in every mode
    choice = gate.stage1(gate.read("t1"), "e")
    assert choice.config == BM25 and "learned by sieve eval --gate on" in choice.reason
    other = gate.stage1(gate.read("t1"), "another-embedder")
    assert other.config is None and "run `sieve eval --gate` again" in other.reason
    assert gate.stage1(gate.read("t2"), "e").reason == NO_STAGE1
    store.put("t3", a_decision(adopted=False))
    kept = gate.stage1(gate.read("t3"), "e")
    assert kept.config is None and kept.reason.startswith("default kept: ")
    summary = gate_summary(gate, "t1", "e")
    assert summary["stage1"]["learned"] is True and summary["stage1"]["label"] == "bm25"


def test_a_decision_stored_before_the_stage1_gate_still_loads() -> None:
    client = fakeredis.FakeRedis(decode_responses=True)
    old = json.loads(a_decision().model_dump_json(exclude={"stage1"}))  # what the previous release wrote
    assert "stage1" not in old
    client.set("sieve:gate:t1", json.dumps(old))
    gate = RerankGate("evaluated", GateStore(client), RerankerIdentity("test:overlap"))
    stored = gate.read("t1")
    assert stored.decision is not None and stored.decision.stage1 is None
    assert gate.stage1(stored, "e") == gate.stage1(gate.read("t2"), "e")  # as if nothing were stored
    assert gate.verdict("t1", stored).info.reason == stored.decision.reason  # the rerank part is read


def test_a_run_without_a_rerank_stage_stores_the_stage1_decision_and_a_rerank_gate_that_is_off() -> None:
    queries = heldout(better=18, worse=0, same=2)
    stage1 = decide_stage1(queries, qrels_for(queries), BM25, dataset="tiny")
    decision = without_rerank(stage1, dataset="tiny", reranker="none", embedder="e", rerank_depth=50)
    assert not decision.enabled and decision.stage1 == stage1 and decision.stage1_mode == "bm25"
    assert "## Stage-1 gate" in decision.markdown() and "**Adopted: bm25.**" in decision.markdown()
    gate = RerankGate("evaluated", None, RerankerIdentity("test:overlap"))
    assert not gate.verdict("t1", type(gate.read("t1"))(decision)).run  # made for reranker "none"
