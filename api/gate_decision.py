"""What a gate decision is: the learned ``Fusion`` of stage-1 and rerank scores, the stage-1 configuration
(``Stage1``: mode and fusion of the dense and bm25 legs) with its ``Stage1Decision``, and the ``GateDecision``
stored per tenant, which holds both. Shared by the runtime gate (``api.rerank_gate``), which reads
decisions, and gate learning (``api.relevance``), which makes them; it imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, Field

from retrieval.fusion import DEFAULT_FUSION, DEFAULT_RRF_K, fuse_candidates, fuse_rerank
from retrieval.types import Candidate

GATE_MEASURES = ("nDCG@10", "R@50", "MRR@10")


class Fusion(BaseModel):
    """How the final score is made from the stage-1 and rerank scores (``retrieval.fusion.fuse_rerank``)."""

    method: Literal["rrf", "weighted"]
    stage1_weight: float = Field(ge=0)
    rerank_weight: float = Field(ge=0)
    rrf_k: int = DEFAULT_RRF_K

    @property
    def label(self) -> str:
        if self.method == "weighted" and self.rerank_weight == 0:
            return "stage 1 only"
        if self.method == "weighted" and self.stage1_weight == 0:
            return "rerank order"
        if self.method == "weighted":
            return (
                f"weighted, α = {self.rerank_weight:g}: {self.stage1_weight:g} × stage 1 + "
                f"{self.rerank_weight:g} × rerank (min-max scaled scores)"
            )
        return (
            f"rrf, k = {self.rrf_k}: {self.stage1_weight:g} × stage-1 rank + "
            f"{self.rerank_weight:g} × rerank rank"
        )

    def order(
        self, stage1_scores: Sequence[float], rerank_scores: Mapping[int, float]
    ) -> list[tuple[int, float]]:
        """``(index, fused score)`` of every candidate, best first (candidates given in stage-1 order)."""
        return fuse_rerank(
            stage1_scores,
            rerank_scores,
            fusion=self.method,
            rrf_k=self.rrf_k,
            weights=(self.stage1_weight, self.rerank_weight),
        )


class Stage1(BaseModel):
    """How stage 1 ranks: a search mode and, for ``hybrid``, how its dense and bm25 legs are fused
    (``retrieval.fusion``: standardised scores, RRF with ``rrf_k``, or weighted min-max scores; weights
    ``(dense, bm25)``)."""

    mode: Literal["dense", "bm25", "hybrid"]
    fusion: Literal["zscore", "rrf", "weighted"] = DEFAULT_FUSION
    rrf_k: int = DEFAULT_RRF_K
    dense_weight: float = Field(default=1.0, ge=0)
    bm25_weight: float = Field(default=1.0, ge=0)

    @property
    def weights(self) -> tuple[float, float] | None:
        """``(dense, bm25)`` for the store, None for equal weights (the store's default)."""
        return None if self.dense_weight == self.bm25_weight else (self.dense_weight, self.bm25_weight)

    @property
    def label(self) -> str:
        if self.mode != "hybrid":
            return self.mode
        method = {
            "rrf": f"RRF k {self.rrf_k}",
            "weighted": "weighted min-max scores",
            "zscore": "standardised scores",
        }[self.fusion]
        if self.weights is None:
            return f"hybrid, {method}, equal weights"
        return f"hybrid, {method}, dense {self.dense_weight:g} : bm25 {self.bm25_weight:g}"

    def rank(self, dense: Sequence[Candidate], bm25: Sequence[Candidate], *, limit: int) -> list[Candidate]:
        """This configuration's chunks from the two legs (each best first), as the store would rank them."""
        if self.mode == "dense":
            return list(dense[:limit])
        if self.mode == "bm25":
            return list(bm25[:limit])
        return fuse_candidates(
            [dense, bm25], fusion=self.fusion, rrf_k=self.rrf_k, weights=self.weights, limit=limit
        )


DEFAULT_STAGE1 = Stage1(mode="hybrid")


class Stage1Decision(BaseModel):
    """The stage-1 configuration learned on train queries, and whether it replaces the default (hybrid,
    standardised scores, equal weights, unless configured otherwise): only when it beats the default on
    held-out queries by the rerank gate's rule."""

    adopted: bool
    reason: str = Field(description="The decision in a sentence, with the numbers behind it.")
    learned: Stage1 = Field(description="The best configuration on the train queries.")
    default: Stage1 = DEFAULT_STAGE1
    before: dict[str, float] = Field(description="The default on the held-out queries.")
    after: dict[str, float] = Field(description="The learned configuration, same queries.")
    delta_ndcg10: float
    p_value: float | None = Field(description="Two-sided paired t-test of per-query nDCG@10.")
    min_gain: float
    alpha: float
    train_queries: int
    heldout_queries: int
    grid: list[dict[str, Any]] = Field(
        default_factory=list, description="Train nDCG@10 of each configuration tried."
    )

    @property
    def serving(self) -> Stage1:
        return self.learned if self.adopted else self.default

    def markdown(self) -> str:
        rows = [
            f"| {name} | {self.before[name]:.4f} | {self.after[name]:.4f} | "
            f"{self.after[name] - self.before[name]:+.4f} |"
            for name in GATE_MEASURES
        ]
        grid = [f"| {row['label']} | {row['nDCG@10']:.4f} |" for row in self.grid]
        return "\n".join(
            [
                "## Stage-1 gate",
                "",
                f"**{'Adopted' if self.adopted else 'Default kept'}: {self.serving.label}.** {self.reason}",
                "",
                f"| {self.heldout_queries} held-out queries | default ({self.default.label}) | "
                f"learned ({self.learned.label}) | Δ |",
                "| --- | ---: | ---: | ---: |",
                *rows,
                "",
                f"Stage-1 configurations on the {self.train_queries} train queries (nDCG@10):",
                "",
                "| stage 1 | nDCG@10 |",
                "| --- | ---: |",
                *grid,
            ]
        )


class GateDecision(BaseModel):
    """Whether the rerank stage serves for a collection, why, and the evidence (stored per tenant)."""

    enabled: bool
    reason: str = Field(description="The decision in a sentence, with the numbers behind it.")
    dataset: str
    reranker: str = Field(description="The reranker's name; the decision applies to this one only.")
    reranker_model: str | None = None
    reranker_revision: str | None = None
    embedder: str
    stage1_mode: str
    rerank_depth: int
    fusion: Fusion
    before: dict[str, float] = Field(description="Stage 1 alone on the held-out queries.")
    after: dict[str, float] = Field(description="Stage 1 + rerank with the learned fusion, same queries.")
    delta_ndcg10: float
    p_value: float | None = Field(description="Two-sided paired t-test of per-query nDCG@10.")
    min_gain: float
    alpha: float
    train_queries: int
    heldout_queries: int
    grid: list[dict[str, Any]] = Field(
        default_factory=list, description="Train nDCG@10 of each fusion tried."
    )
    stage1: Stage1Decision | None = Field(
        default=None,
        description="The stage-1 gate (absent in decisions made before it): what default searches run.",
    )
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    sieve_version: str = Field(default_factory=lambda: _version())

    def markdown(self) -> str:
        rows = [
            f"| {name} | {self.before[name]:.4f} | {self.after[name]:.4f} | "
            f"{self.after[name] - self.before[name]:+.4f} |"
            for name in GATE_MEASURES
        ]
        grid = [f"| {row['label']} | {row['nDCG@10']:.4f} |" for row in self.grid[:5]]
        stage1 = [self.stage1.markdown(), ""] if self.stage1 is not None else []
        return "\n".join(
            [
                *stage1,
                "## Rerank gate",
                "",
                f"**{'Enabled' if self.enabled else 'Disabled'}.** {self.reason}",
                "",
                f"Reranker `{self.reranker}` (model `{self.reranker_model or '—'}`, revision "
                f"`{self.reranker_revision or '—'}`), embedder `{self.embedder}`, "
                f"stage 1 `{self.stage1_mode}`, "
                f"top {self.rerank_depth} reranked. Learned on {self.train_queries} train queries: "
                f"{self.fusion.label}. Rule: gain ≥ {self.min_gain:g} nDCG@10 and p < {self.alpha:g}.",
                "",
                f"| {self.heldout_queries} held-out queries | stage 1 | + rerank (learned) | Δ |",
                "| --- | ---: | ---: | ---: |",
                *rows,
                "",
                "Best fusions on the train queries (nDCG@10):",
                "",
                "| fusion | nDCG@10 |",
                "| --- | ---: |",
                *grid,
            ]
        )


def _version() -> str:
    try:
        return metadata.version("sieve")
    except metadata.PackageNotFoundError:
        return "unknown"
