"""Search modes and rank fusion: one definition, used by every ``VectorStore`` and by the rerank stage.

Modes of ``VectorStore.search``:

    dense    nearest vectors; score = cosine similarity
    bm25     full text (BM25 over the analysed chunk text); score = BM25, >= 0, higher is better
    hybrid   both legs, each ``limit`` deep, fused here; score = the fused score below

Fusion methods (``fusion=``):

    rrf        reciprocal rank fusion: sum over lists of ``w_i / (k + rank_i)`` (rank from 1; ``k`` is
               ``rrf_k``, 60 by default as in Cormack et al. 2009). An item missing from a list gets nothing.
    zscore     sum over lists of ``w_i * z_i`` where ``z_i`` is the item's score standardised within list i
               (minus the list's mean, over its standard deviation). An item missing from a list ranked
               below everything the list holds, so it gets the list's lowest ``z``; a list whose scores
               are all equal (one item, say) gives its items 0 and what it lacks -1. The default of hybrid
               (``RetrievalSettings.fusion``): it keeps how far apart the scores are, which ranks throw
               away, and needs no constant. CombSUM over z-scores (Montague & Aslam 2001); convex score
               fusion beats RRF in Bruch et al. 2023 ("An Analysis of Fusion Functions for Hybrid
               Retrieval"). Measured on SciFact with the bundled MiniLM, equal weights, nothing tuned:
               +0.014 nDCG@10 over RRF k 60 on the train queries and on the held-out ones (README).
    weighted   sum over lists of ``w_i * s_i`` where ``s_i`` is the item's score min-max scaled to [0, 1]
               within list i (1.0 when every score of the list is equal); missing items get 0.

Weights default to 1 for every list. For ``hybrid`` they are ``(dense, bm25)``. Ties keep the order in which
items were first seen (first list first), so the result is deterministic.

Per-query legs (``plan_legs``): a hybrid search whose query is in a language the embedder does not read
(``retrieval.lexical.detect_language`` of the query, outside ``retrieval.embedder.reads(embedder)``: a Chinese
query and the English-only MiniLM) gives its dense leg weight 0, that is, runs as ``bm25`` (and needs no
query vector); the plan's ``note`` says so. Measured on DRCD with MiniLM, hybrid RRF with the useless dense
leg halves BM25's nDCG@10, so a default install never answers a language worse than BM25 alone.

Fusion happens in the client, not in Milvus's ``hybrid_search``: the same function then serves the in-memory
store, every server version, and the fusion of stage-1 and rerank ranks (``fuse_rerank``).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, get_args

from retrieval.lexical import detect_language
from retrieval.types import Candidate

SearchMode = Literal["dense", "bm25", "hybrid"]
FusionMethod = Literal["zscore", "rrf", "weighted"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
FUSION_METHODS: tuple[str, ...] = get_args(FusionMethod)
DEFAULT_RRF_K = 60
DEFAULT_FUSION: FusionMethod = "zscore"

K = TypeVar("K", bound=Hashable)


def _weights(weights: Sequence[float] | None, lists: int) -> list[float]:
    if weights is None:
        return [1.0] * lists
    values = [float(w) for w in weights]
    if len(values) != lists:
        raise ValueError(f"expected {lists} fusion weights, got {len(values)}")
    if any(not math.isfinite(w) or w < 0 for w in values) or not any(values):
        raise ValueError(f"fusion weights must be finite, >= 0 and not all 0, got {values}")
    return values


def rrf(
    rankings: Sequence[Sequence[K]], *, k: int = DEFAULT_RRF_K, weights: Sequence[float] | None = None
) -> dict[K, float]:
    """Reciprocal-rank-fused scores of the items of ``rankings`` (each best first), in first-seen order."""
    if k < 0:
        raise ValueError(f"rrf_k must be >= 0, got {k}")
    scores: dict[K, float] = {}
    for weight, ranking in zip(_weights(weights, len(rankings)), rankings, strict=True):
        for rank, item in enumerate(ranking, start=1):
            scores[item] = scores.get(item, 0.0) + weight / (k + rank)
    return scores


def weighted(
    scored: Sequence[Mapping[K, float]], *, weights: Sequence[float] | None = None
) -> dict[K, float]:
    """Weighted sum of min-max scaled scores (see the module docstring), in first-seen order."""
    fused: dict[K, float] = {}
    for weight, scores in zip(_weights(weights, len(scored)), scored, strict=True):
        if not scores:
            continue
        low, high = min(scores.values()), max(scores.values())
        for item, score in scores.items():
            scaled = 1.0 if high == low else (score - low) / (high - low)
            fused[item] = fused.get(item, 0.0) + weight * scaled
    return fused


def zscores(scored: Sequence[Mapping[K, float]], *, weights: Sequence[float] | None = None) -> dict[K, float]:
    """Weighted sum of standardised scores (see the module docstring), in first-seen order."""
    fused: dict[K, float] = {item: 0.0 for scores in scored for item in scores}
    for weight, scores in zip(_weights(weights, len(scored)), scored, strict=True):
        if not scores:
            continue  # a list that found nothing says nothing about any item
        values = [float(v) for v in scores.values()]
        mean = math.fsum(values) / len(values)
        spread = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
        if spread > 0 and math.isfinite(spread):
            standard = {item: (float(score) - mean) / spread for item, score in scores.items()}
            floor = min(standard.values())
        else:
            standard, floor = dict.fromkeys(scores, 0.0), -1.0
        for item in fused:
            fused[item] += weight * standard.get(item, floor)
    return fused


def ranked(scores: Mapping[K, float]) -> list[tuple[K, float]]:
    """Items by score, best first; ties keep the mapping's order."""
    return sorted(scores.items(), key=lambda pair: -pair[1])


def check_search(
    mode: str,
    *,
    has_vector: bool,
    query_text: str | None,
    fusion: str,
    rrf_k: int,
    weights: Sequence[float] | None,
) -> None:
    """``ValueError`` for arguments no store can honour (the caller's mistake, whatever the store)."""
    if mode not in SEARCH_MODES:
        raise ValueError(f"unknown search mode {mode!r}: use one of {', '.join(SEARCH_MODES)}")
    if mode in ("dense", "hybrid") and not has_vector:
        raise ValueError(f"search mode {mode!r} needs a query vector")
    if mode in ("bm25", "hybrid") and query_text is None:
        raise ValueError(f"search mode {mode!r} needs query_text")
    if mode == "hybrid":
        if fusion not in FUSION_METHODS:
            raise ValueError(f"unknown fusion {fusion!r}: use one of {', '.join(FUSION_METHODS)}")
        if rrf_k < 0:
            raise ValueError(f"rrf_k must be >= 0, got {rrf_k}")
        _weights(weights, 2)


def fuse_candidates(
    legs: Sequence[Sequence[Candidate]],
    *,
    fusion: str = DEFAULT_FUSION,
    rrf_k: int = DEFAULT_RRF_K,
    weights: Sequence[float] | None = None,
    limit: int,
) -> list[Candidate]:
    """The union of ``legs`` (each best first), ranked by fused score, at most ``limit``; score = fused."""
    by_id: dict[str, Candidate] = {}
    for leg in legs:
        for candidate in leg:
            by_id.setdefault(candidate.id, candidate)
    if fusion == "rrf":
        scores = rrf([[c.id for c in leg] for leg in legs], k=rrf_k, weights=weights)
    elif fusion == "weighted":
        scores = weighted([{c.id: c.score for c in leg} for leg in legs], weights=weights)
    elif fusion == "zscore":
        scores = zscores([{c.id: c.score for c in leg} for leg in legs], weights=weights)
    else:
        raise ValueError(f"unknown fusion {fusion!r}: use one of {', '.join(FUSION_METHODS)}")
    return [by_id[key].model_copy(update={"score": score}) for key, score in ranked(scores)[:limit]]


def fuse_rerank(
    stage1_scores: Sequence[float],
    rerank_scores: Mapping[int, float],
    *,
    fusion: str = "rrf",
    rrf_k: int = DEFAULT_RRF_K,
    weights: Sequence[float] | None = None,
) -> list[tuple[int, float]]:
    """Fuse stage 1 with a reranker: ``(index, fused score)`` for every index, best first.

    ``stage1_scores[i]`` is the stage-1 score of candidate ``i``, candidates in stage-1 order (index =
    rank - 1). ``rerank_scores`` maps the indices the reranker scored to its scores (higher is better);
    indices it did not score keep their stage-1 contribution only. ``weights`` are ``(stage1, rerank)``.
    With ``rrf`` the ranks are fused; with ``weighted`` the min-max scaled scores are interpolated, with
    ``zscore`` the standardised ones.
    """
    stage1 = {i: float(s) for i, s in enumerate(stage1_scores)}
    unknown = set(rerank_scores) - stage1.keys()
    if unknown:
        raise ValueError(f"rerank scores for indices outside stage 1: {sorted(unknown)[:5]}")
    if fusion == "rrf":
        reranked = [i for i, _ in ranked(dict(rerank_scores))]
        scores = rrf([list(stage1), reranked], k=rrf_k, weights=weights)
    elif fusion == "weighted":
        scores = weighted([stage1, dict(rerank_scores)], weights=weights)
    elif fusion == "zscore":
        scores = zscores([stage1, dict(rerank_scores)], weights=weights)
    else:
        raise ValueError(f"unknown fusion {fusion!r}: use one of {', '.join(FUSION_METHODS)}")
    return ranked(scores)


@dataclass(frozen=True)
class LegPlan:
    """How one query runs stage 1: the ``mode`` to search in, and a ``note`` when it differs from the asked
    mode (None otherwise); ``language`` is the query's detected language."""

    mode: str
    language: str
    note: str | None = None

    @property
    def needs_vector(self) -> bool:
        return self.mode != "bm25"


def plan_legs(mode: str, query: str, languages: Collection[str]) -> LegPlan:
    """The legs of ``query`` in ``mode`` for an embedder that reads ``languages`` (see the module docstring):
    hybrid becomes bm25 for a query in a language outside ``languages``; any other mode runs as asked."""
    language = detect_language(query)
    if mode == "hybrid" and language not in languages:
        note = (
            f"dense leg weight 0: the query's language ({language}) is not one the embedder reads "
            f"({', '.join(sorted(languages)) or 'none'}); ranked by bm25 alone"
        )
        return LegPlan("bm25", language, note)
    return LegPlan(mode, language)
