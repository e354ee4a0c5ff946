"""What ``sieve eval`` measures: the options of a run (``EvalOptions``) and the configurations it compares
(``EvalConfig``: a stage-1 mode, with or without the reranker, ordered by its score or fused)."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.gate_decision import Stage1
from api.relevance.gate import DEFAULT_ALPHA, DEFAULT_MIN_GAIN
from retrieval.fusion import DEFAULT_FUSION

AGGREGATIONS = ("best", "sum")


@dataclass(frozen=True)
class EvalConfig:
    name: str
    mode: str  # dense | bm25 | hybrid
    rerank: bool = False
    fuse: bool = False  # fuse stage-1 and rerank ranks instead of taking the rerank order
    learned: bool = False  # fuse them as the rerank gate learned on train queries
    aggregate: str = "best"  # a document's score: its best chunk's, or the sum of its top chunks' (stage 1)


@dataclass
class EvalOptions:
    modes: tuple[str, ...] = ("bm25", "dense", "hybrid")
    rerank_modes: tuple[str, ...] | None = None  # the modes with +rerank configurations (None: every mode)
    depth: int = 100
    rerank_depth: int = 50
    fusion: str = DEFAULT_FUSION  # of the hybrid legs
    rrf_k: int = 60
    weights: tuple[float, float] | None = None  # (dense, bm25)
    language_fusion: bool = True  # hybrid: bm25 alone for a query the embedder cannot read (plan_legs)
    rerank_fusion: str = "rrf"  # of stage 1 and rerank
    rerank_weights: tuple[float, float] | None = None  # (stage1, rerank)
    chunk_tokens: int = 256
    chunk_overlap: int = 32
    batch: int = 64
    context: bool = True  # the title is each chunk's context (else the start of the first chunk's text)
    aggregations: tuple[str, ...] = ("best",)  # per stage-1 mode; "sum" adds {mode}+sum configurations
    aggregate_chunks: int = 3  # "sum": the document's top chunks that are summed
    gate: bool = False  # learn a fusion on train queries and decide the rerank gate (api.relevance.gate)
    gate_mode: str | None = None  # the stage-1 mode the gate decides for (default: the first rerank mode)
    min_gain: float = DEFAULT_MIN_GAIN
    gate_alpha: float = DEFAULT_ALPHA
    notes: list[str] = field(default_factory=list)

    @property
    def default_stage1(self) -> Stage1:
        """Hybrid as configured here (``fusion``, ``rrf_k``, ``weights``): what a tenant without a stage-1
        decision is served, so what the stage-1 gate must beat."""
        dense, bm25 = self.weights or (1.0, 1.0)
        return Stage1(
            mode="hybrid",
            fusion=self.fusion,  # type: ignore[arg-type]  # checked by the store like any search's
            rrf_k=self.rrf_k,
            dense_weight=dense,
            bm25_weight=bm25,
        )

    @property
    def needs_vectors(self) -> bool:
        """Whether a mode searches vectors (a bm25-only run writes placeholder vectors, embeds nothing)."""
        return any(mode != "bm25" for mode in self.modes)

    @property
    def reranked_modes(self) -> tuple[str, ...]:
        return self.modes if self.rerank_modes is None else self.rerank_modes

    @property
    def decided_mode(self) -> str:
        return self.gate_mode or self.reranked_modes[0]
