"""Stage 1: the shared vocabulary (chunks, candidates), embedders and the vector store.

``retrieval`` imports nothing from ``ingestion``, ``reranking`` or ``api`` (only ``engine``). Backends and the
factories (``make_embedder``, ``make_store``: name → factory tables) live in ``retrieval.backends``.
"""

from retrieval.backends import make_embedder, make_store
from retrieval.embedder import Embedder
from retrieval.errors import (
    EmbedderInputError,
    EmbedderMismatchError,
    EmbedderOverloadedError,
    EmbedderUnavailableError,
    InvalidFilterError,
    ModelLoadError,
    RetrievalError,
    StoreUnavailableError,
    UnsupportedSearchError,
)
from retrieval.settings import RetrievalSettings
from retrieval.store import VectorStore
from retrieval.types import Candidate, Chunk

__all__ = [
    "Candidate",
    "Chunk",
    "Embedder",
    "EmbedderInputError",
    "EmbedderMismatchError",
    "EmbedderOverloadedError",
    "EmbedderUnavailableError",
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
