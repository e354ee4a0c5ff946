"""The ``Reranker`` protocol, the honest ``none`` backend and the factory."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reranking.errors import RerankError, RerankInputError
from reranking.settings import RerankSettings


@dataclass(frozen=True, slots=True)
class RankedHit:
    """``index`` into the documents given to ``rank``; ``score`` on the backend's documented scale."""

    index: int
    score: float


def check_rank_request(query: str, top_k: int | None) -> None:
    """The checks every backend's ``rank`` makes before scoring (``RerankInputError`` when they fail)."""
    if not query or not query.strip():
        raise RerankInputError("the query is empty")
    if top_k is not None and top_k < 0:
        raise RerankInputError(f"top_k must be >= 0, got {top_k}")


def best_first(scores: Iterable[float], top_k: int | None = None) -> list[RankedHit]:
    """Hits sorted by score, ties by index, cut to ``top_k``."""
    hits = sorted((RankedHit(i, float(s)) for i, s in enumerate(scores)), key=lambda h: (-h.score, h.index))
    return hits if top_k is None else hits[:top_k]


@runtime_checkable
class Reranker(Protocol):
    """Scores (query, document) pairs and returns hits sorted by score, best first.

    Score scales: Qwen3-Reranker P("yes") in [0, 1]; cross-encoders sigmoid in [0, 1];
    ``none`` returns no score of its own (``None`` backends report ``reorders = False``).
    """

    @property
    def name(self) -> str: ...

    @property
    def reorders(self) -> bool:
        """False for the ``none`` backend: the order is stage 1's and the scores are not relevance."""

    def warm_up(self) -> None: ...

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
    ) -> list[RankedHit]: ...


class NoneReranker:
    """Keeps stage-1 order. Scores are ``1 / (1 + rank)`` so that the order is preserved and visible,
    and ``reorders`` is False so callers can say that no second stage ran."""

    name = "none"
    reorders = False

    def warm_up(self) -> None:
        return None

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
    ) -> list[RankedHit]:
        hits = [RankedHit(i, 1.0 / (1 + i)) for i in range(len(documents))]
        return hits if top_k is None else hits[:top_k]


def make_reranker(settings: RerankSettings | None = None) -> Reranker:
    settings = settings or RerankSettings()
    backend = settings.backend.lower()
    if backend == "none":
        return NoneReranker()
    if backend in {"cross-encoder", "crossencoder"}:
        from reranking.backends.cross_encoder import CrossEncoderReranker

        if not settings.model:
            raise RerankError(
                "RERANK_MODEL must name a cross-encoder folder or hub id for backend=cross-encoder"
            )
        return CrossEncoderReranker(
            model=settings.model,
            device=settings.device,
            max_tokens=settings.max_tokens or None,
            batch_size=settings.batch_size,
        )
    on_gpu = settings.device.lower().startswith("cuda")
    if backend == "qwen3-transformers" or (backend in {"qwen3", "qwen3-reranker"} and not on_gpu):
        from reranking.backends.qwen3 import Qwen3Reranker

        return Qwen3Reranker(
            model=settings.model or "Qwen/Qwen3-Reranker-0.6B",
            device=settings.device,
            max_tokens=settings.max_tokens or None,
            batch_size=settings.batch_size,
            default_instruction=settings.instruction,
        )
    # On a GPU, qwen3 is served by the inference engine: same input, name and score scale as Qwen3Reranker.
    if backend in {"qwen3", "qwen3-reranker", "engine", "qwen3-engine"}:
        from reranking.backends.engine_adapters import EngineReranker

        return EngineReranker(
            model=settings.model or "Qwen/Qwen3-Reranker-0.6B",
            device=settings.device,
            max_tokens=settings.max_tokens or None,
            default_instruction=settings.instruction,
        )
    if backend == "remote":
        from reranking.backends.remote import RemoteReranker

        if not settings.url:
            raise RerankError("RERANK_URL must name the rerank server (http://host:port) for backend=remote")
        return RemoteReranker(settings.url, timeout_s=settings.timeout_s)
    raise RerankError(
        f"unknown rerank backend {settings.backend!r}: "
        "set RERANK_BACKEND to none, cross-encoder, qwen3, qwen3-engine, qwen3-transformers or remote"
    )
