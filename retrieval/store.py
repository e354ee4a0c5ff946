"""The ``VectorStore`` protocol and the filter check every store makes.

The stores are ``retrieval.memory_store`` and ``retrieval.milvus_store``; the factory (``make_store``, a
name → factory table) lives in ``retrieval.backends``.

Every read and write names a tenant; an implementation must never return another tenant's chunks.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from retrieval.errors import InvalidFilterError
from retrieval.fusion import DEFAULT_FUSION
from retrieval.types import Candidate, Chunk

FILTER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
FilterValue = str | int | float | bool


@runtime_checkable
class VectorStore(Protocol):
    def ensure_collection(self, *, embedder_name: str, dimension: int) -> None:
        """Create the collection, or check that an existing one was built by the same embedder.

        Raises ``EmbedderMismatchError`` when it was not, ``StoreUnavailableError`` when the store is down.
        """

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        """Insert or replace chunks by their deterministic ids; visible to ``search`` on return."""

    def delete_document(
        self,
        tenant: str,
        document_id: str,
        *,
        version: str | None = None,
        except_versions: Sequence[str] = (),
    ) -> None:
        """Remove a document's chunks: of one ``version`` when given, else of every version not in
        ``except_versions``."""

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
        """The ``limit`` best chunks of ``tenant``, best first; ``score`` is always higher-is-better.

        ``mode`` (see ``retrieval.fusion``): ``dense`` (needs ``vector``; score = cosine similarity),
        ``bm25`` (needs ``query_text``; score = BM25) or ``hybrid`` (needs both; each leg ``limit`` deep,
        fused by ``fusion`` = ``zscore``, ``rrf`` with ``rrf_k`` or ``weighted``, ``weights`` =
        ``(dense, bm25)``).
        Raises ``ValueError`` for arguments no store can honour, ``UnsupportedSearchError`` for a mode this
        store or collection cannot run (full text needs Milvus 2.5+ or Milvus Lite, and a collection built
        with the full-text field).
        """

    def count(self, tenant: str, document_id: str | None = None) -> int:
        """Chunks stored for a tenant (or one of its documents), all versions."""

    def ping(self) -> None:
        """Raise ``StoreUnavailableError`` if the store cannot be reached."""

    def drop(self) -> None:
        """Remove the collection and everything in it (an index that no longer serves); idempotent."""


def validate_filters(filters: Mapping[str, Any] | None) -> dict[str, FilterValue]:
    """Check metadata filters: identifier keys; finite, encodable scalar values; a text document id.
    Every store calls this first, so all refuse the same filters. Returns a plain dict."""
    if not filters:
        return {}
    clean: dict[str, FilterValue] = {}
    for key, value in filters.items():
        if not isinstance(key, str) or not FILTER_KEY.match(key):
            raise InvalidFilterError(
                f"filter key {key!r} is not allowed: use letters, digits and '_' (at most 64 characters)"
            )
        if not isinstance(value, str | int | float | bool) or value is None:
            raise InvalidFilterError(
                f"filter {key!r} must be a string, number or boolean, not {type(value).__name__}"
            )
        if key == "document_id" and not isinstance(value, str):
            raise InvalidFilterError("filter 'document_id' must be a string")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidFilterError(f"filter {key!r} must be a finite number")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InvalidFilterError(f"filter {key!r} is not valid Unicode text") from exc
        clean[key] = value
    return clean


def matches_filters(
    document_id: str, metadata: Mapping[str, Any], filters: Mapping[str, FilterValue]
) -> bool:
    """Whether a chunk of ``document_id`` with ``metadata`` passes validated ``filters``, as Milvus's filter
    expression would say (stores that filter in Python: the in-memory store, the embedded lexical index)."""
    for key, value in filters.items():
        if key == "document_id":
            if document_id != value:
                return False
        elif key not in metadata or not _same(metadata[key], value):
            return False
    return True


def _same(actual: Any, expected: FilterValue) -> bool:
    # A boolean never equals a number (as in Milvus' JSON filters), although Python says True == 1.
    if isinstance(actual, bool) or isinstance(expected, bool):
        return isinstance(actual, bool) and isinstance(expected, bool) and actual is expected
    return bool(actual == expected)
