"""The ``Reranker`` protocol, the honest ``none`` backend and what every backend's ``rank`` shares.

Backends and the factory (``make_reranker``, a name → factory table) live in ``reranking/backends/``.

Long documents: ``rank(..., windows=True)`` scores a document longer than the model's budget per
(query, document) pair by its best overlapping window (all windows of all documents in the same batches) and
gives every hit the ``Window`` that won, in character offsets into the document as given (``count`` 1 and
the whole document for one that fits). ``windows=False`` (the default) is each backend's own way, with no
window on the hits: Qwen3 scores by the best window too, a cross-encoder reads the start up to its budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from reranking.errors import RerankInputError


@dataclass(frozen=True, slots=True)
class Window:
    """The part of a document that gave its score: window ``index`` of ``count`` (0-based), characters
    ``start:end`` of the document as given to ``rank``."""

    index: int
    count: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class RankedHit:
    """``index`` into the documents given to ``rank``; ``score`` on the backend's documented scale;
    ``window``: the part that won, when ``rank`` was asked for windows (else None)."""

    index: int
    score: float
    window: Window | None = None


MIN_WINDOW_TOKENS = 16  # fewer document tokens than this per window: the query itself is too long
WINDOW_OVERLAP = 8  # consecutive windows share 1/WINDOW_OVERLAP of a window


def window_starts(length: int, window: int) -> list[int]:
    """Starts of overlapping ``window``-token windows over ``length`` tokens, the last flush with the end."""
    if length <= window:
        return [0]
    stride = max(1, window - window // WINDOW_OVERLAP)
    starts = list(range(0, length - window, stride))
    return [*starts, length - window]


def check_rank_request(query: str, top_k: int | None) -> None:
    """The checks every backend's ``rank`` makes before scoring (``RerankInputError`` when they fail)."""
    if not query or not query.strip():
        raise RerankInputError("the query is empty")
    if top_k is not None and top_k < 0:
        raise RerankInputError(f"top_k must be >= 0, got {top_k}")


def best_first(scores: Iterable[float], top_k: int | None = None) -> list[RankedHit]:
    """Hits sorted by score, ties by index, cut to ``top_k``."""
    return sorted_hits([RankedHit(i, float(s)) for i, s in enumerate(scores)], top_k)


def sorted_hits(hits: Iterable[RankedHit], top_k: int | None = None) -> list[RankedHit]:
    """``hits`` sorted by score, ties by index, cut to ``top_k``."""
    ordered = sorted(hits, key=lambda h: (-h.score, h.index))
    return ordered if top_k is None else ordered[:top_k]


def window_spans(doc: str, offsets: Sequence[tuple[int, int]], window: int) -> list[tuple[int, int]]:
    """The character spans of ``doc``'s ``window``-token windows (``window_starts``), from its tokens'
    character ``offsets``: ``[(0, len(doc))]`` when it fits; together they cover the document (leading and
    trailing blanks belong to the first and last window)."""
    if len(offsets) <= window:
        return [(0, len(doc))]
    spans = [
        (offsets[start][0], offsets[min(start + window, len(offsets)) - 1][1])
        for start in window_starts(len(offsets), window)
    ]
    spans[0] = (0, spans[0][1])
    spans[-1] = (spans[-1][0], len(doc))
    return spans


def best_windows(
    scores: Sequence[float],
    spans: Sequence[Sequence[tuple[int, int]]],
    top_k: int | None = None,
    *,
    report: bool = False,
) -> list[RankedHit]:
    """Each document scored by its best window, sorted best first.

    ``scores`` holds every window's score, document after document; ``spans[d]`` the character spans of
    document ``d``'s windows, in order (one per window). The first of equal best windows wins; ``report``
    puts the winner on each hit as a ``Window``."""
    if len(scores) != sum(len(s) for s in spans):
        raise ValueError(f"{len(scores)} window scores for {sum(len(s) for s in spans)} windows")
    hits: list[RankedHit] = []
    offset = 0
    for doc, doc_spans in enumerate(spans):
        own = [float(s) for s in scores[offset : offset + len(doc_spans)]]
        offset += len(doc_spans)
        best = max(range(len(own)), key=lambda i: (own[i], -i))
        window = Window(best, len(own), *doc_spans[best]) if report else None
        hits.append(RankedHit(doc, own[best], window))
    return sorted_hits(hits, top_k)


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
        windows: bool = False,
    ) -> list[RankedHit]:
        """``windows``: score a document over the budget by its best window and report each hit's
        ``Window`` (see the module); False: the backend's own way, hits without a window."""


class NoneReranker:
    """Keeps stage-1 order. Scores are ``1 / (1 + rank)`` so that the order is preserved and visible,
    and ``reorders`` is False so callers can say that no second stage ran. With ``windows`` each hit's window
    is its whole document (nothing is read, nothing is cut)."""

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
        windows: bool = False,
    ) -> list[RankedHit]:
        hits = [
            RankedHit(i, 1.0 / (1 + i), Window(0, 1, 0, len(doc)) if windows else None)
            for i, doc in enumerate(documents)
        ]
        return hits if top_k is None else hits[:top_k]
