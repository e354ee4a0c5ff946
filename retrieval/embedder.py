"""The ``Embedder`` protocol, used on both the document and the query side.

Backends and the factory (``make_embedder``, a name → factory table) live in ``retrieval/backends/`` (the
only modules here that import torch/transformers).

An embedder may declare the languages it reads (``languages``: a set of ``retrieval.lexical`` languages,
``en``, ``zh``, ``other``), as every backend does; ``reads(embedder)`` is that set, or every language for an
embedder that declares none (a custom model is assumed multilingual). Hybrid search drops the dense leg of a
query in a language its embedder does not read (``retrieval.fusion.plan_legs``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from retrieval.lexical import LANGUAGES

ALL_LANGUAGES: frozenset[str] = frozenset(LANGUAGES)
ENGLISH: frozenset[str] = frozenset({"en"})


@runtime_checkable
class Embedder(Protocol):
    """Turns text into L2-normalised vectors.

    ``name`` identifies the model and its output space (an index built with one name refuses another).
    ``max_tokens`` is the longest input the model reads; chunking sizes chunks with ``count_tokens``.
    An optional ``languages`` attribute (not part of the protocol, so any embedder qualifies) names the
    languages it reads; see ``reads``.
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


def reads(embedder: object) -> frozenset[str]:
    """The languages ``embedder`` declares (its ``languages``); every language if it declares none."""
    declared = getattr(embedder, "languages", None)
    if declared is None:
        return ALL_LANGUAGES
    languages = frozenset(str(language) for language in declared)
    unknown = languages - ALL_LANGUAGES
    if unknown:
        raise ValueError(f"unknown embedder languages {sorted(unknown)}: use some of {', '.join(LANGUAGES)}")
    return languages


def parse_languages(value: str) -> frozenset[str] | None:
    """``RETRIEVAL_EMBEDDER_LANGUAGES``: empty → None (the backend's declaration), ``all`` → every language,
    else a comma-separated list of ``en``, ``zh``, ``other``."""
    value = value.strip().lower()
    if not value:
        return None
    if value == "all":
        return ALL_LANGUAGES
    languages = frozenset(part.strip() for part in value.split(",") if part.strip())
    unknown = languages - ALL_LANGUAGES
    if unknown or not languages:
        raise ValueError(
            f"RETRIEVAL_EMBEDDER_LANGUAGES={value!r}: use 'all' or a comma-separated list of "
            f"{', '.join(LANGUAGES)}"
        )
    return languages


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)
