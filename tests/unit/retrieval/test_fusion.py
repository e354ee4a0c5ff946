"""Rank fusion: standardised scores, RRF and weighted fusion of result lists, and of stage 1 with a
reranker."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from retrieval.fusion import DEFAULT_FUSION, fuse_candidates, fuse_rerank, rrf, weighted, zscores
from retrieval.settings import RetrievalSettings
from retrieval.types import Candidate


def candidate(key: str, score: float) -> Candidate:
    return Candidate(id=key, document_id=key, version="v1", position=0, text=key, score=score)


def test_rrf_sums_weighted_reciprocal_ranks() -> None:
    scores = rrf([["a", "b", "c"], ["c", "a"]], k=60, weights=[1.0, 2.0])
    assert scores == pytest.approx({"a": 1 / 61 + 2 / 62, "b": 1 / 62, "c": 1 / 63 + 2 / 61})


def test_weighted_scales_each_list_to_unit_range() -> None:
    scores = weighted([{"a": 10.0, "b": 5.0, "c": 0.0}, {"b": 0.9, "d": 0.7}], weights=[1.0, 0.5])
    assert scores == pytest.approx({"a": 1.0, "b": 0.5 + 0.5, "c": 0.0, "d": 0.0})
    assert weighted([{"a": 3.0, "b": 3.0}]) == {"a": 1.0, "b": 1.0}  # one score for all: all at the top


def test_zscores_standardise_each_list_and_give_what_it_lacks_its_lowest() -> None:
    # dense: mean 0.6, sd 0.2 -> a +1.22, b 0, c -1.22; bm25: b +1, d -1 (two items: always +-1)
    dense = {"a": 0.9, "b": 0.6, "c": 0.3}
    bm25 = {"b": 12.0, "d": 2.0}
    z = 0.3 / (0.06**0.5)  # |score - mean| / sd for a and c

    scores = zscores([dense, bm25])

    assert list(scores) == ["a", "b", "c", "d"]  # first-seen order
    assert scores == pytest.approx({"a": z - 1, "b": 0 + 1, "c": -z - 1, "d": -z - 1})
    assert zscores([dense, bm25], weights=[1.0, 0.0]) == pytest.approx({"a": z, "b": 0, "c": -z, "d": -z})
    # the scale of a list does not matter, only how far apart its scores are
    assert zscores([dense, {k: 1000 * v for k, v in bm25.items()}]) == pytest.approx(scores)


def test_zscores_of_a_list_without_spread_or_without_items() -> None:
    # one bm25 hit: it says "this one matched", so it counts one unit above everything the list lacks
    assert zscores([{"a": 0.9, "b": 0.1}, {"b": 7.0}]) == pytest.approx({"a": 1 - 1, "b": -1 + 0})
    assert zscores([{"a": 0.9, "b": 0.1}, {}]) == pytest.approx(
        {"a": 1.0, "b": -1.0}
    )  # found nothing: no say


def test_fuse_candidates_ranks_the_union_and_keeps_first_seen_order_on_ties() -> None:
    dense = [candidate("a", 0.9), candidate("b", 0.8)]
    bm25 = [candidate("b", 12.0), candidate("c", 3.0)]

    fused = fuse_candidates([dense, bm25], fusion="rrf", limit=10)

    assert [c.id for c in fused] == ["b", "a", "c"]
    assert [c.score for c in fused] == pytest.approx([1 / 62 + 1 / 61, 1 / 61, 1 / 62])
    assert [c.id for c in fuse_candidates([dense, bm25], fusion="rrf", limit=1)] == ["b"]
    tie = fuse_candidates([[candidate("x", 1.0)], [candidate("y", 1.0)]], fusion="rrf", limit=2)
    assert [c.id for c in tie] == ["x", "y"]


def test_standardised_scores_are_the_default_and_weigh_how_far_apart_the_scores_are() -> None:
    # bm25 barely separates a, b and c; dense puts a far ahead. RRF sees only ranks: b is 2nd and 1st.
    dense = {"a": 0.9, "b": 0.35, "c": 0.3, "d": 0.29}
    bm25 = {"b": 10.0, "c": 9.9, "a": 9.8, "d": 1.0}
    legs = [[candidate(k, v) for k, v in leg.items()] for leg in (dense, bm25)]
    assert DEFAULT_FUSION == "zscore"

    assert [c.id for c in fuse_candidates(legs, fusion="rrf", limit=4)] == ["b", "a", "c", "d"]
    fused = fuse_candidates(legs, limit=4)
    assert [c.id for c in fused] == ["a", "b", "c", "d"]
    assert [c.score for c in fused] == pytest.approx([zscores([dense, bm25])[c.id] for c in fused])


def test_fuse_rerank_by_rank_and_by_interpolation() -> None:
    stage1 = [0.9, 0.8, 0.7]  # candidates 0, 1, 2 in stage-1 order
    rerank = {2: 0.99, 0: 0.5, 1: 0.1}

    assert [i for i, _ in fuse_rerank(stage1, rerank)] == [0, 2, 1]  # 1/61 + 1/62 beats 1/63 + 1/61
    by_weight = fuse_rerank(stage1, rerank, fusion="weighted", weights=(0.2, 0.8))
    assert [i for i, _ in by_weight] == [2, 0, 1]
    assert dict(by_weight)[2] == pytest.approx(0.8)
    only_stage1 = fuse_rerank(stage1, {}, fusion="rrf")
    assert [i for i, _ in only_stage1] == [0, 1, 2]
    standardised = fuse_rerank(stage1, rerank, fusion="zscore")  # stage 1: +1.22, 0, -1.22
    assert [i for i, _ in standardised] == [0, 2, 1]
    assert dict(standardised) == pytest.approx(zscores([dict(enumerate(stage1)), rerank]))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rrf([["a"]], k=-1), "rrf_k"),
        (lambda: rrf([["a"], ["b"]], weights=[1.0]), "2 fusion weights"),
        (lambda: weighted([{"a": 1.0}], weights=[-1.0]), ">= 0"),
        (lambda: fuse_rerank([0.5], {3: 1.0}), "outside stage 1"),
        (lambda: fuse_rerank([0.5], {}, fusion="max"), "unknown fusion"),
    ],
)
def test_bad_fusion_arguments_are_refused(call, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize(
    ("variable", "value"), [("RETRIEVAL_FUSION", "max"), ("RETRIEVAL_SEARCH_MODE", "sparse")]
)
def test_settings_refuse_an_unknown_fusion_or_mode_at_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=f"{variable}='{value}': use one of"):
        RetrievalSettings()
    monkeypatch.setenv("RETRIEVAL_FUSION", "rrf")
    monkeypatch.delenv("RETRIEVAL_SEARCH_MODE", raising=False)
    assert RetrievalSettings().fusion == "rrf"
