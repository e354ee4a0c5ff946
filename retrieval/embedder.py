"""The ``Embedder`` protocol, used on both the document and the query side.

Backends and the factory (``make_embedder``, a name → factory table) live in ``retrieval/backends/`` (the
only modules here that import torch/transformers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np


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


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
