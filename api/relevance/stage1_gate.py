"""The stage-1 gate: learn a tenant's stage-1 mode and fusion weights, adopt them only when they beat the
default.

``sieve eval --gate`` runs every query's dense and bm25 legs once (``QueryLegs``: the store's chunks, each leg
as deep as a hybrid search's legs) and ranks them here in each configuration of ``STAGE1_GRID``:

    hybrid, standardised scores,      the default (``DEFAULT_STAGE1``), first so that ties keep it
      equal weights
    bm25, dense                       one leg alone
    hybrid, standardised scores       dense : bm25 0.25 : 0.75 and 0.75 : 0.25
    hybrid, RRF k 60                  dense weight 0.25, 0.5, 0.75 (bm25 the rest)
    hybrid, weighted min-max scores   dense weight 0.25, 0.5, 0.75

A query in a language the embedder does not read runs its hybrid configurations as bm25, as search does
(``retrieval.fusion.plan_legs``). Chunks become documents by their best chunk, as elsewhere in ``sieve eval``.

1. ``learn_stage1``: on TRAIN-split queries, the configuration with the best mean nDCG@10 (ties: the earlier
   entry, so the default, then the single legs, win).
2. ``decide_stage1``: on HELD-OUT queries, the learned configuration against the default with the rerank
   gate's rule (``api.relevance.gate``): adopted only when nDCG@10 gains at least ``min_gain`` AND a paired
   t-test gives p < ``alpha``. The ``Stage1Decision`` keeps the evidence either way and is stored in the
   ``GateDecision`` (``gate.json``); search then runs requests that name no ``mode`` in its ``serving``
   configuration.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from api.gate_decision import DEFAULT_STAGE1, GATE_MEASURES, Stage1, Stage1Decision
from api.relevance import eval_report
from api.relevance.gate import DEFAULT_ALPHA, DEFAULT_MIN_GAIN, check_held_out, short_of_the_rule
from retrieval.types import Candidate

__all__ = ["DEFAULT_STAGE1", "STAGE1_GRID", "QueryLegs", "decide_stage1", "learn_stage1"]

STAGE1_GRID: tuple[Stage1, ...] = (
    DEFAULT_STAGE1,
    Stage1(mode="bm25"),
    Stage1(mode="dense"),
    *(Stage1(mode="hybrid", dense_weight=w, bm25_weight=1 - w) for w in (0.25, 0.75)),
    *(Stage1(mode="hybrid", fusion="rrf", dense_weight=w, bm25_weight=1 - w) for w in (0.25, 0.5, 0.75)),
    *(Stage1(mode="hybrid", fusion="weighted", dense_weight=w, bm25_weight=1 - w) for w in (0.25, 0.5, 0.75)),
)


@dataclass
class QueryLegs:
    """One query's dense and bm25 chunks from the store (best first); ``reads`` False when the embedder does
    not read the query's language (its hybrid configurations then run as bm25)."""

    dense: list[Candidate]
    bm25: list[Candidate]
    reads: bool = True

    def chunks(self, config: Stage1) -> list[Candidate]:
        if config.mode == "hybrid" and not self.reads:
            return list(self.bm25)
        return config.rank(self.dense, self.bm25, limit=max(len(self.dense), len(self.bm25)))

    def ranking(self, config: Stage1, depth: int) -> list[str]:
        """Document ids by their best chunk, the first ``depth``."""
        best: dict[str, None] = {}
        for chunk in self.chunks(config):
            best.setdefault(chunk.document_id)
        return list(best)[:depth]


def _score(
    legs: Mapping[str, QueryLegs], qrels: Mapping[str, Mapping[str, int]], config: Stage1, depth: int
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    return eval_report.score_run(qrels, {qid: legs[qid].ranking(config, depth) for qid in qrels})


def _judged(legs: Mapping[str, QueryLegs], qrels: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    judged = {qid: qrels[qid] for qid in legs if qid in qrels}
    if not judged:
        raise ValueError("no judged queries to learn or decide the stage-1 configuration on")
    return judged


def learn_stage1(
    legs: Mapping[str, QueryLegs],
    qrels: Mapping[str, Mapping[str, int]],
    *,
    depth: int = 100,
    grid: Sequence[Stage1] = STAGE1_GRID,
) -> tuple[Stage1, list[dict[str, Any]]]:
    """The grid entry with the best mean nDCG@10 over the judged queries of ``legs`` (train queries only),
    and every entry's score, best first (the evidence)."""
    judged = _judged(legs, qrels)
    scored = [(config, _score(legs, judged, config, depth)[0]["nDCG@10"]) for config in grid]
    best = max(scored, key=lambda pair: pair[1])  # max keeps the first of equals: the grid's order
    ordered = sorted(scored, key=lambda pair: -pair[1])
    return best[0], [{"label": c.label, "nDCG@10": ndcg, **c.model_dump()} for c, ndcg in ordered]


def decide_stage1(
    legs: Mapping[str, QueryLegs],
    qrels: Mapping[str, Mapping[str, int]],
    learned: Stage1,
    *,
    dataset: str,
    default: Stage1 = DEFAULT_STAGE1,
    depth: int = 100,
    train_ids: Collection[str] = (),
    grid: Sequence[Mapping[str, Any]] = (),
    min_gain: float = DEFAULT_MIN_GAIN,
    alpha: float = DEFAULT_ALPHA,
) -> Stage1Decision:
    """The default vs ``learned`` on held-out queries (``legs``): adopted only on a significant gain."""
    judged = _judged(legs, qrels)
    check_held_out(judged, train_ids)
    before, before_q = _score(legs, judged, default, depth)
    after, after_q = _score(legs, judged, learned, depth)
    p = eval_report.paired_p(
        [after_q["nDCG@10"][q] for q in judged], [before_q["nDCG@10"][q] for q in judged]
    )
    delta = after["nDCG@10"] - before["nDCG@10"]
    shown = "p not defined" if p is None else f"p={p:.3g}"
    evidence = (
        f"sieve eval on {dataset} showed nDCG@10 {before['nDCG@10']:.3f} ({default.label}) → "
        f"{after['nDCG@10']:.3f} ({learned.label}) ({delta:+.3f}, {shown}, {len(judged)} held-out queries)"
    )
    if learned == default:
        adopted, reason = False, f"{evidence}: the default is the best configuration on the train queries"
    elif p is None and delta == 0:
        adopted, reason = False, f"{evidence}: the learned configuration does not change the result"
    elif p is None:
        adopted, reason = False, f"{evidence}: too few held-out queries for a paired t-test"
    elif refused := short_of_the_rule(delta, p, min_gain, alpha):
        adopted, reason = False, f"{evidence}: {refused}"
    else:
        adopted, reason = True, evidence
    return Stage1Decision(
        adopted=adopted,
        reason=reason,
        learned=learned,
        default=default,
        before={name: before[name] for name in GATE_MEASURES},
        after={name: after[name] for name in GATE_MEASURES},
        delta_ndcg10=delta,
        p_value=p,
        min_gain=min_gain,
        alpha=alpha,
        train_queries=len(train_ids),
        heldout_queries=len(judged),
        grid=[dict(row) for row in grid],
    )
