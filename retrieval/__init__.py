"""Stage 1: the shared vocabulary (chunks, candidates), embedders and the vector store.

``retrieval`` is a leaf package: it imports nothing from ``ingestion``, ``reranking`` or ``api``.
"""

from retrieval.embedder import Embedder, make_embedder
from retrieval.errors import (
    EmbedderMismatchError,
    InvalidFilterError,
    ModelLoadError,
    RetrievalError,
    StoreUnavailableError,
    UnsupportedSearchError,
)
from retrieval.settings import RetrievalSettings
from retrieval.store import VectorStore, make_store
from retrieval.types import Candidate, Chunk

__all__ = [
    "Candidate",
    "Chunk",
    "Embedder",
    "EmbedderMismatchError",
    "InvalidFilterError",
    "ModelLoadError",
    "RetrievalError",
    "RetrievalSettings",
    "StoreUnavailableError",
    "UnsupportedSearchError",
    "VectorStore",
    "make_embedder",
    "make_store",
]
