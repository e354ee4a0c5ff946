"""An in-process ``VectorStore`` for unit tests only.

Exact cosine search with numpy over every stored chunk, so that the fast test tier can exercise code that
needs a store without a Milvus process. Never a product default: ``make_store`` returns it only for a
``memory://`` URI. The contract suite (``tests/unit/retrieval/store_contract.py``) keeps it in step with
``MilvusStore``.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrieval.errors import EmbedderMismatchError, InvalidFilterError, StoreUnavailableError
from retrieval.store import FilterValue, validate_filters
from retrieval.types import Candidate, Chunk


@dataclass(frozen=True)
class _Row:
    chunk: Chunk
    unit_vector: np.ndarray


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
            rows[chunk.id] = _Row(stored, _unit(vector))
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
        vector: np.ndarray,
        *,
        limit: int,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[Candidate]:
        clean = validate_filters(filters)
        for key, value in clean.items():
            _check_filter_value(key, value)
        dimension = self._require_collection()
        query = np.asarray(vector, dtype=np.float32).reshape(-1)
        if query.shape[0] != dimension:
            raise ValueError(f"query vector has dimension {query.shape[0]}, the collection {dimension}")
        if limit <= 0:
            return []
        with self._lock:
            rows = [row for row in self._rows.values() if row.chunk.tenant == tenant and _matches(row, clean)]
        if not rows:
            return []
        scores = np.stack([row.unit_vector for row in rows]) @ _unit(query)
        order = np.argsort(-scores, kind="stable")[:limit]
        return [_candidate(rows[i].chunk, float(scores[i])) for i in order]

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

    def _require_collection(self) -> int:
        if self._embedder is None:
            raise StoreUnavailableError(
                "the in-memory collection does not exist: call ensure_collection first"
            )
        return self._embedder[1]


def _check_vectors(chunks: Sequence[Chunk], vectors: np.ndarray, dimension: int) -> np.ndarray:
    """The vectors as a float32 matrix, one row per chunk; ``ValueError`` if the shapes disagree."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(chunks):
        raise ValueError(f"expected {len(chunks)} vectors in a 2-D array, got shape {matrix.shape}")
    if matrix.shape[1] != dimension:
        raise ValueError(f"vectors have dimension {matrix.shape[1]}, the collection {dimension}")
    return matrix


def _check_filter_value(key: str, value: FilterValue) -> None:
    """Reject what ``MilvusStore`` cannot express: NaN, infinity, unencodable text, a non-text document id."""
    if key == "document_id" and not isinstance(value, str):
        raise InvalidFilterError("filter 'document_id' must be a string")
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidFilterError(f"filter {key!r} must be a finite number")
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidFilterError(f"filter {key!r} is not valid Unicode text") from exc


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


def _same(actual: Any, expected: FilterValue) -> bool:
    # A boolean never equals a number (as in Milvus' JSON filters), although Python says True == 1.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual is expected
    return bool(actual == expected)


def _matches(row: _Row, filters: Mapping[str, FilterValue]) -> bool:
    for key, value in filters.items():
        if key == "document_id":
            if row.chunk.document_id != value:
                return False
        elif key not in row.chunk.metadata or not _same(row.chunk.metadata[key], value):
            return False
    return True


def _candidate(chunk: Chunk, score: float) -> Candidate:
    return Candidate(
        id=chunk.id,
        document_id=chunk.document_id,
        version=chunk.version,
        position=chunk.position,
        text=chunk.text,
        page=chunk.page,
        metadata=_json_roundtrip(chunk.metadata),
        score=score,
    )
