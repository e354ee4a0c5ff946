"""An in-process ``VectorStore`` for unit tests only.

Exact cosine search with numpy over every stored chunk, so that the fast test tier can exercise code that
needs a store without a Milvus process. ``bm25`` mode scores the tenant's chunks with Okapi BM25 (Milvus's
formula and defaults: k1 1.2, b 0.75, idf ``log(1 + (N - n + 0.5) / (n + 0.5))``) over the terms of
``retrieval.lexical`` (the analysis Milvus indexes), from each chunk's context and text (statistics over the
tenant's chunks, where Milvus takes them over the collection); ``hybrid`` fuses both with
``retrieval.fusion``. Never a product default: ``make_store`` returns it only for a ``memory://`` URI. The
contract suite (``tests/contract/vector_store.py``) keeps it in step with ``MilvusStore``.
"""

from __future__ import annotations

import json
import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.errors import EmbedderMismatchError, StoreUnavailableError
from retrieval.fusion import DEFAULT_FUSION, check_search, fuse_candidates
from retrieval.lexical import terms as tokenize
from retrieval.store import FilterValue, matches_filters, validate_filters
from retrieval.types import Candidate, Chunk

BM25_K1, BM25_B = 1.2, 0.75


@dataclass(frozen=True)
class _Row:
    chunk: Chunk
    unit_vector: np.ndarray
    terms: Counter[str]


class InMemoryStore:
    """``VectorStore`` kept in a dict; for unit tests only (see the module docstring)."""

    def __init__(self) -> None:
        self._rows: dict[str, _Row] = {}
        self._embedder: tuple[str, int] | None = None
        self._lock = threading.Lock()

    def ensure_collection(self, *, embedder_name: str, dimension: int) -> None:
        with self._lock:
            if self._embedder is None:
                self._embedder = (embedder_name, dimension)
                return
            name, dim = self._embedder
            if (name, dim) != (embedder_name, dimension):
                raise EmbedderMismatchError(
                    f"the in-memory index was built by embedder {name!r} (dimension {dim}), not by "
                    f"{embedder_name!r} (dimension {dimension}): use another store or rebuild the index"
                )

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        dimension = self._require_collection()
        if not chunks:
            return
        matrix = _check_vectors(chunks, vectors, dimension)
        rows = {}
        for chunk, vector in zip(chunks, matrix, strict=True):
            stored = chunk.model_copy(update={"metadata": _json_roundtrip(chunk.metadata)})
            rows[chunk.id] = _Row(stored, _unit(vector), Counter(tokenize(chunk.indexed_text)))
        with self._lock:
            self._rows.update(rows)

    def delete_document(
        self,
        tenant: str,
        document_id: str,
        *,
        version: str | None = None,
        except_versions: Sequence[str] = (),
    ) -> None:
        self._require_collection()
        with self._lock:
            doomed = [
                key
                for key, row in self._rows.items()
                if row.chunk.tenant == tenant
                and row.chunk.document_id == document_id
                and (version is None or row.chunk.version == version)
                and row.chunk.version not in except_versions
            ]
            for key in doomed:
                del self._rows[key]

    def search(
        self,
        tenant: str,
        vector: np.ndarray | None,
        *,
        limit: int,
        filters: Mapping[str, FilterValue] | None = None,
        mode: str = "dense",
        query_text: str | None = None,
        fusion: str = DEFAULT_FUSION,
        rrf_k: int = 60,
        weights: Sequence[float] | None = None,
    ) -> list[Candidate]:
        check_search(
            mode,
            has_vector=vector is not None,
            query_text=query_text,
            fusion=fusion,
            rrf_k=rrf_k,
            weights=weights,
        )
        clean = validate_filters(filters)
        dimension = self._require_collection()
        query = None
        if vector is not None and mode != "bm25":
            query = np.asarray(vector, dtype=np.float32).reshape(-1)
            if query.shape[0] != dimension:
                raise ValueError(f"query vector has dimension {query.shape[0]}, the collection {dimension}")
        if limit <= 0:
            return []
        with self._lock:
            everyone = [row for row in self._rows.values() if row.chunk.tenant == tenant]
        rows = [row for row in everyone if _matches(row, clean)]
        legs = []
        if query is not None:
            legs.append(_dense(rows, query, limit))
        if mode != "dense" and query_text is not None:
            legs.append(_bm25(rows, everyone, query_text, limit))
        if mode == "hybrid":
            return fuse_candidates(legs, fusion=fusion, rrf_k=rrf_k, weights=weights, limit=limit)
        return legs[0]

    def count(self, tenant: str, document_id: str | None = None) -> int:
        self._require_collection()
        with self._lock:
            return sum(
                1
                for row in self._rows.values()
                if row.chunk.tenant == tenant
                and (document_id is None or row.chunk.document_id == document_id)
            )

    def ping(self) -> None:
        return None

    def drop(self) -> None:
        with self._lock:
            self._rows.clear()
            self._embedder = None

    def _require_collection(self) -> int:
        if self._embedder is None:
            raise StoreUnavailableError(
                "the in-memory collection does not exist: call ensure_collection first"
            )
        return self._embedder[1]


def _dense(rows: Sequence[_Row], query: np.ndarray, limit: int) -> list[Candidate]:
    if not rows:
        return []
    scores = np.stack([row.unit_vector for row in rows]) @ _unit(query)
    order = np.argsort(-scores, kind="stable")[:limit]
    return [_candidate(rows[i].chunk, float(scores[i]), dense=True) for i in order]


def _bm25(rows: Sequence[_Row], corpus: Sequence[_Row], query_text: str, limit: int) -> list[Candidate]:
    """Okapi BM25 of ``rows`` for the query terms, statistics over ``corpus``; only chunks with a match."""
    terms = set(tokenize(query_text))
    if not rows or not terms:
        return []
    n = len(corpus)
    avgdl = sum(row.terms.total() for row in corpus) / n or 1.0
    idf = {t: math.log(1 + (n - df + 0.5) / (df + 0.5)) for t in terms for df in [_df(corpus, t)]}
    scored = []
    for row in rows:
        length = row.terms.total()
        score = 0.0
        for term in terms & row.terms.keys():
            tf = row.terms[term]
            score += idf[term] * tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * length / avgdl))
        if score > 0:
            scored.append((score, row))
    scored.sort(key=lambda pair: -pair[0])
    return [_candidate(row.chunk, score) for score, row in scored[:limit]]


def _df(corpus: Sequence[_Row], term: str) -> int:
    return sum(1 for row in corpus if term in row.terms)


def _check_vectors(chunks: Sequence[Chunk], vectors: np.ndarray, dimension: int) -> np.ndarray:
    """The vectors as a float32 matrix, one row per chunk; ``ValueError`` if the shapes disagree."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(chunks):
        raise ValueError(f"expected {len(chunks)} vectors in a 2-D array, got shape {matrix.shape}")
    if matrix.shape[1] != dimension:
        raise ValueError(f"vectors have dimension {matrix.shape[1]}, the collection {dimension}")
    return matrix


def _json_roundtrip(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of ``metadata`` as JSON stores it; ``ValueError`` if it is not JSON."""
    try:
        return dict(json.loads(json.dumps(metadata, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"chunk metadata must be JSON (strings, numbers, booleans, lists, dicts): {exc}"
        ) from exc


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


def _matches(row: _Row, filters: Mapping[str, FilterValue]) -> bool:
    return matches_filters(row.chunk.document_id, row.chunk.metadata, filters)


def _candidate(chunk: Chunk, score: float, dense: bool = False) -> Candidate:
    """``dense``: the score is the query's cosine, which the candidate also carries as ``dense_score``."""
    return Candidate(
        id=chunk.id,
        document_id=chunk.document_id,
        version=chunk.version,
        position=chunk.position,
        text=chunk.text,
        page=chunk.page,
        metadata=_json_roundtrip(chunk.metadata),
        score=score,
        dense_score=score if dense else None,
    )
