"""The rerank gate: learn how to fuse stage 1 with stage 2, and decide whether stage 2 may serve at all.

A second stage can make results worse (FACTS: a small cross-encoder trained here lowered SciFact's nDCG@10 by
0.13), so ``sieve eval --gate`` measures it on the collection's own labelled queries before it serves:

1. ``learn_fusion`` — on TRAIN-split queries (``api.relevance.beir.query_split``) pick the fusion of stage-1
   and rerank scores with the best mean nDCG@10 from ``GRID``: weighted min-max interpolation
   ``(1 - α) · stage 1 + α · rerank`` for α in 0, 0.1, …, 1 (α = 0 is stage 1 alone, α = 1 the rerank order),
   and RRF of the two rankings with rerank weight 0.2 … 0.8 and k 10 or 60. Ties go to the earlier grid
   entry, so a reranker that adds nothing on the train queries learns "stage 1 only".
2. ``decide`` — on HELD-OUT queries (the eval split, never used to learn) compare stage 1 alone with stage 1
   fused with the reranker as learned. Stage 2 is enabled only when mean nDCG@10 gains at least ``min_gain``
   (default 0.005) AND a two-sided paired t-test over the queries gives p < ``alpha`` (default 0.05).
3. The ``GateDecision`` (its evidence, the reranker's name and revision, the learned fusion) is stored per
   tenant by ``api.rerank_gate.GateStore`` and consulted by search (``API_RERANK_GATE=evaluated``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from api.gate_decision import GATE_MEASURES, Fusion, GateDecision, Stage1Decision
from api.relevance import eval_report

__all__ = [
    "GATE_MEASURES",
    "GRID",
    "Fusion",
    "GateDecision",
    "QueryRun",
    "decide",
    "learn_fusion",
    "without_rerank",
]
DEFAULT_MIN_GAIN = 0.005
DEFAULT_ALPHA = 0.05


def _weighted(alpha: float) -> Fusion:
    return Fusion(method="weighted", stage1_weight=round(1 - alpha, 4), rerank_weight=alpha)


STAGE1_ONLY = _weighted(0.0)
RERANK_ONLY = _weighted(1.0)
GRID: tuple[Fusion, ...] = (
    STAGE1_ONLY,
    RERANK_ONLY,
    *(_weighted(a / 10) for a in range(1, 10)),
    *(
        Fusion(method="rrf", stage1_weight=round(1 - w, 4), rerank_weight=w, rrf_k=k)
        for k in (60, 10)
        for w in (0.5, 0.35, 0.65, 0.2, 0.8)
    ),
)


@dataclass
class QueryRun:
    """One query's stage-1 documents (best first, with their scores) and the rerank scores of its head."""

    docs: list[str]
    stage1: list[float]
    rerank: dict[int, float] = field(default_factory=dict)  # index into docs -> rerank score

    def ranking(self, fusion: Fusion | None) -> list[str]:
        """Document ids: the reranked head ordered by ``fusion`` (None: stage 1), then the rest as stage 1."""
        if fusion is None or not self.rerank:
            return list(self.docs)
        depth = max(self.rerank) + 1
        fused = fusion.order(self.stage1[:depth], self.rerank)
        return [self.docs[i] for i, _ in fused] + self.docs[depth:]


def _judged(runs: Mapping[str, QueryRun], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    judged = {qid: qrels[qid] for qid in runs if qid in qrels}
    if not judged:
        raise ValueError("no judged queries to learn or decide on")
    return judged


def _score(
    runs: Mapping[str, QueryRun], qrels: Mapping[str, Mapping[str, int]], fusion: Fusion | None
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    return eval_report.score_run(qrels, {qid: runs[qid].ranking(fusion) for qid in qrels})


def learn_fusion(
    runs: Mapping[str, QueryRun],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    grid: Sequence[Fusion] = GRID,
) -> tuple[Fusion, list[dict[str, Any]]]:
    """The grid entry with the best mean nDCG@10 over the judged queries of ``runs`` (train queries only),
    and every entry's score, best first (the evidence)."""
    judged = _judged(runs, qrels)
    scored = [(fusion, _score(runs, judged, fusion)[0]["nDCG@10"]) for fusion in grid]
    best = max(scored, key=lambda pair: pair[1])  # max keeps the first of equals: the grid's order
    ordered = sorted(scored, key=lambda pair: -pair[1])
    return best[0], [{"label": f.label, "nDCG@10": ndcg, **f.model_dump()} for f, ndcg in ordered]


def _reason(
    dataset: str,
    before: float,
    after: float,
    p: float | None,
    n: int,
    fusion: Fusion,
    min_gain: float,
    alpha: float,
) -> tuple[bool, str]:
    delta = after - before
    shown = "p not defined" if p is None else f"p={p:.3g}"
    evidence = (
        f"sieve eval on {dataset} showed nDCG@10 {before:.3f} → {after:.3f} "
        f"({delta:+.3f}, {shown}, {n} held-out queries)"
    )
    if fusion.rerank_weight == 0:
        return False, f"{evidence}: the best fusion on the train queries gives the reranker no weight"
    if p is None:
        return False, f"{evidence}: the rerank stage does not change the result"
    refused = short_of_the_rule(delta, p, min_gain, alpha)
    if refused:
        return False, f"{evidence}: {refused}"
    return True, f"{evidence} with {fusion.label}"


def check_held_out(judged: Collection[str], train_ids: Collection[str]) -> None:
    """``ValueError`` when a held-out query was also used to learn (the gates decide on unseen queries)."""
    leaked = set(judged) & set(train_ids)
    if leaked:
        raise ValueError(f"{len(leaked)} held-out queries were also used to learn, e.g. {sorted(leaked)[:3]}")


def short_of_the_rule(delta: float, p: float, min_gain: float, alpha: float) -> str | None:
    """Why a gain of ``delta`` nDCG@10 with paired-test ``p`` does not pass the gates' rule (at least
    ``min_gain``, p below ``alpha``); None when it passes."""
    if delta < min_gain:
        return f"it must gain at least {min_gain:g}"
    if p >= alpha:
        return f"the gain is not significant (p must be below {alpha:g})"
    return None


def decide(
    runs: Mapping[str, QueryRun],
    qrels: Mapping[str, Mapping[str, int]],
    fusion: Fusion,
    *,
    dataset: str,
    reranker: str,
    embedder: str,
    stage1_mode: str,
    rerank_depth: int,
    reranker_model: str | None = None,
    reranker_revision: str | None = None,
    train_ids: Collection[str] = (),
    grid: Sequence[Mapping[str, Any]] = (),
    min_gain: float = DEFAULT_MIN_GAIN,
    alpha: float = DEFAULT_ALPHA,
) -> GateDecision:
    """Stage 1 alone vs stage 1 fused with the reranker by ``fusion``, on held-out queries (``runs``)."""
    judged = _judged(runs, qrels)
    check_held_out(judged, train_ids)
    before, before_q = _score(runs, judged, None)
    after, after_q = _score(runs, judged, fusion)
    ndcg_before = [before_q["nDCG@10"][q] for q in judged]
    p = eval_report.paired_p([after_q["nDCG@10"][q] for q in judged], ndcg_before)
    enabled, reason = _reason(
        dataset, before["nDCG@10"], after["nDCG@10"], p, len(judged), fusion, min_gain, alpha
    )
    return GateDecision(
        enabled=enabled,
        reason=reason,
        dataset=dataset,
        reranker=reranker,
        reranker_model=reranker_model,
        reranker_revision=reranker_revision,
        embedder=embedder,
        stage1_mode=stage1_mode,
        rerank_depth=rerank_depth,
        fusion=fusion,
        before={name: before[name] for name in GATE_MEASURES},
        after={name: after[name] for name in GATE_MEASURES},
        delta_ndcg10=after["nDCG@10"] - before["nDCG@10"],
        p_value=p,
        min_gain=min_gain,
        alpha=alpha,
        train_queries=len(train_ids),
        heldout_queries=len(judged),
        grid=[dict(row) for row in grid],
    )


def without_rerank(
    stage1: Stage1Decision, *, dataset: str, reranker: str, embedder: str, rerank_depth: int
) -> GateDecision:
    """The decision of a run without a rerank stage: the stage-1 gate's, and a rerank gate that is off (it
    applies to no serving reranker, so a reranker configured later needs ``sieve eval --gate`` again)."""
    metrics = stage1.after if stage1.adopted else stage1.before
    return GateDecision(
        enabled=False,
        reason=f"no rerank stage was evaluated (reranker {reranker}): stage 1 only",
        dataset=dataset,
        reranker=reranker,
        embedder=embedder,
        stage1_mode=stage1.serving.label,
        rerank_depth=rerank_depth,
        fusion=STAGE1_ONLY,
        before=dict(metrics),
        after=dict(metrics),
        delta_ndcg10=0.0,
        p_value=None,
        min_gain=stage1.min_gain,
        alpha=stage1.alpha,
        train_queries=stage1.train_queries,
        heldout_queries=stage1.heldout_queries,
        stage1=stage1,
    )
