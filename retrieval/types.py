"""Records that cross stage boundaries: a ``Chunk`` going in, a ``Candidate`` coming out."""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import BaseModel, Field


def chunk_id(tenant: str, document_id: str, version: str, position: int) -> str:
    """Deterministic primary key of a chunk: the same document version always yields the same ids.

    The tenant is part of the key so that two tenants using the same client document id never collide.
    """
    raw = "\x1f".join((tenant, document_id, version, str(position)))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]


class Chunk(BaseModel):
    """One piece of a document, as stored in the vector store.

    ``text`` is the passage as shown; ``context`` (the document's title and the headings above the passage,
    e.g. "Brewing tea > Steps") is not shown but is embedded and indexed with it: see ``indexed_text``."""

    tenant: str
    document_id: str
    version: str
    position: int = Field(ge=0)
    text: str
    page: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    context: str = ""

    @property
    def id(self) -> str:
        return chunk_id(self.tenant, self.document_id, self.version, self.position)

    @property
    def indexed_text(self) -> str:
        """What is embedded and lexically indexed: the context, a blank line, the passage."""
        return f"{self.context}\n\n{self.text}" if self.context else self.text


class Candidate(BaseModel):
    """A stage-1 hit: a chunk and its first-stage score, higher is better: cosine similarity (dense), BM25
    (bm25) or the fused score (hybrid: RRF or weighted, see ``retrieval.fusion``)."""

    id: str
    document_id: str
    version: str
    position: int
    text: str
    page: int | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    score: float
    # cosine similarity to the query where the chunk came from the dense leg (dense and hybrid), else None:
    # the one stage-1 score with a fixed scale (the review rule's; a fused score depends on the lists)
    dense_score: float | None = None
