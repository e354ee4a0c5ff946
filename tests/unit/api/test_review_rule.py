"""The low-confidence rule: when a search is flagged, under each backend's thresholds."""

from __future__ import annotations

import pytest

from api.low_confidence import flag_if_low_confidence
from api.review import assess, rule_key
from api.review_memory import MemoryReviewSink
from api.search_models import Hit, RerankInfo, SearchRequest, SearchResponse
from api.settings import ApiSettings

RULES = ApiSettings().review_rules


@pytest.mark.parametrize(
    ("scores", "flagged"),
    [
        ([0.35, 0.33, 0.30], True),  # nothing good, nothing stands out
        ([0.2], True),  # one weak hit: no spread at all
        ([0.39, 0.20], False),  # low, but one stands out
        ([0.45, 0.44, 0.43], False),  # close together, but good enough
        ([0.95, 0.1], False),
        ([], False),  # no hits: nothing to label
    ],
)
def test_qwen3_probabilities(scores: list[float], flagged: bool) -> None:
    verdict = assess(scores, backend="qwen3-reranker", rules=RULES)
    assert (verdict is not None) is flagged
    if verdict:
        assert verdict.best == max(scores) and verdict.spread == pytest.approx(max(scores) - min(scores))
        assert verdict.rule == (0.4, 0.1) and verdict.backend == "qwen3-reranker"


def test_thresholds_are_per_backend() -> None:
    cosine = [0.35, 0.33, 0.32]  # middling for P(yes), a fair match for MiniLM's cosine
    assert assess(cosine, backend="qwen3-reranker", rules=RULES) is not None
    assert assess(cosine, backend="none", rules=RULES) is None
    assert assess([0.25, 0.24], backend="none", rules=RULES) is not None
    assert assess(cosine, backend="some-new-backend", rules=RULES) is not None  # "*" applies
    assert assess(cosine, backend="some-new-backend", rules={"none": (0.3, 0.05)}) is None  # no rule: never


def test_custom_rules_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_REVIEW_RULES", '{"cross-encoder": [0.9, 0.5]}')
    rules = ApiSettings().review_rules
    assert assess([0.8, 0.5], backend="cross-encoder", rules=rules) is not None


def test_the_backend_is_the_rerankers_kind_or_none_when_stage_one_order_was_served() -> None:
    assert rule_key("qwen3-reranker:Qwen/Qwen3-Reranker-0.6B", applied=True) == "qwen3-reranker"
    assert rule_key("cross-encoder:ms-marco", applied=True) == "cross-encoder"
    assert rule_key("qwen3-reranker:Qwen/Qwen3-Reranker-0.6B", applied=False) == "none"  # degraded
    assert rule_key("none", applied=False) == "none"


def _response(scores: list[tuple[float, float | None]], mode: str) -> SearchResponse:
    hits = [
        Hit(
            chunk_id=f"c{i}",
            document_id=f"d{i}",
            version="v",
            text="t",
            page=None,
            position=0,
            metadata={},
            stage1_score=score,
            dense_score=dense,
            rerank_score=None,
            score=score,
        )  # fmt: skip
        for i, (score, dense) in enumerate(scores)
    ]
    rerank = RerankInfo(backend="none", applied=False)
    return SearchResponse(query="q", hits=hits, candidates=len(hits), rerank=rerank, timings_ms={}, mode=mode)


@pytest.mark.parametrize(
    ("scores", "mode", "rules", "flagged"),
    [
        # hybrid in stage-1 order: RRF scores (~0.03) mean nothing on their own; the dense cosine decides
        ([(0.033, 0.62), (0.032, 0.55), (0.016, None)], "hybrid", RULES, False),
        ([(0.033, 0.22), (0.032, 0.21), (0.016, None)], "hybrid", RULES, True),
        ([(0.62, 0.62), (0.55, 0.55)], "dense", RULES, False),
        ([(0.25, 0.25), (0.24, 0.24)], "dense", RULES, True),
        ([(3.1, None), (2.9, None)], "bm25", RULES, False),  # BM25 alone: no scale, no rule, not flagged
        ([(3.1, None), (2.9, None)], "bm25", {**RULES, "bm25": (5.0, 1.0)}, True),
    ],
)
def test_stage_one_order_is_judged_on_a_score_with_a_scale(scores, mode, rules, flagged) -> None:
    sink = MemoryReviewSink()
    settings = ApiSettings(review_rules=rules)
    request = SearchRequest(query="q")
    got = flag_if_low_confidence(sink, settings, "t", request, _response(scores, mode), "e", degraded=False)
    assert (got is not None) is flagged
