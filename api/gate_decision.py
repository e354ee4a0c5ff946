"""What a rerank-gate decision is: the learned ``Fusion`` of stage-1 and rerank scores and the
``GateDecision`` stored per tenant. Shared by the runtime gate (``api.rerank_gate``), which reads
decisions, and gate learning (``api.relevance``), which makes them; it imports neither.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel, Field

from retrieval.fusion import DEFAULT_RRF_K, fuse_rerank

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
    decided_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    sieve_version: str = Field(default_factory=lambda: _version())

    def markdown(self) -> str:
        rows = [
            f"| {name} | {self.before[name]:.4f} | {self.after[name]:.4f} | "
            f"{self.after[name] - self.before[name]:+.4f} |"
            for name in GATE_MEASURES
        ]
        grid = [f"| {row['label']} | {row['nDCG@10']:.4f} |" for row in self.grid[:5]]
        return "\n".join(
            [
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
