"""The ``Reranker`` protocol, the honest ``none`` backend and what every backend's ``rank`` shares.

Backends and the factory (``make_reranker``, a name → factory table) live in ``reranking/backends/``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reranking.errors import RerankInputError


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

    Score scales: Qwen3-Reranker P("yes") in [0, 1]; cross-encoders sigmoid in [0, 1]; ``maxsim``
    (1 + mean over query tokens of the best cosine) / 2 in [0, 1];
    ``none`` returns no score of its own (``None`` backends report ``reorders = False``).
    """

    @property
    def name(self) -> str: ...

    @property
    def reorders(self) -> bool:
        """False for the ``none`` backend: the order is stage 1's and the scores are not relevance."""

    @property
    def max_tokens(self) -> int | None:
        """The longest (query, document) input the model reads; None where the backend has no budget of its
        own (``none``, ``remote``) or uses its model's."""

    @property
    def revision(self) -> str | None:
        """The model's revision (a trained folder's card, a hub snapshot's commit); None when unknown."""

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
    max_tokens: int | None = None
    revision: str | None = None

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
