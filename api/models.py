"""Which embedder a process loads: the one place that may choose between ``retrieval`` and ``reranking``.

``retrieval`` may not import ``reranking``, yet the GPU inference engine (``reranking.backends``) serves
Qwen3-Embedding too. ``build_embedder`` therefore lives here: ``RETRIEVAL_EMBEDDER=qwen3`` on a CUDA device
(``RETRIEVAL_EMBEDDER_DEVICE=cuda...``) or ``RETRIEVAL_EMBEDDER=qwen3-engine`` gets the engine's
``EngineEmbedder`` (the same name and vectors' recipe as ``Qwen3Embedder``, so a collection built by one
serves the other); everything else is ``retrieval.make_embedder``. The engine's load errors become
``ModelLoadError`` like every other embedder's; its runtime errors (overloaded, closed) stay ``reranking``'s,
which ``api.errors`` maps (429, 503) and the ingestion worker retries.

``ingestion`` may not import ``api`` either: GPU workers receive ``build_embedder`` as the
``embedder_factory`` of ``ingestion.worker.make_celery``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from reranking.errors import RerankUnavailableError
from retrieval import Embedder, ModelLoadError, RetrievalSettings, make_embedder

ENGINE_EMBEDDERS = {"qwen3-engine"}
QWEN3_EMBEDDERS = {"qwen3", "qwen3-embedding"}


def uses_engine(settings: RetrievalSettings) -> bool:
    """Whether ``build_embedder`` serves this configuration with the inference engine."""
    kind = settings.embedder.lower()
    on_gpu = settings.embedder_device.lower().startswith("cuda")
    return kind in ENGINE_EMBEDDERS or (kind in QWEN3_EMBEDDERS and on_gpu)


def build_embedder(settings: RetrievalSettings | None = None) -> Embedder:
    """The configured embedder, cheap to build (models load in ``warm_up``)."""
    settings = settings or RetrievalSettings()
    if not uses_engine(settings):
        return make_embedder(settings)
    from reranking.backends.engine_adapters import EngineEmbedder  # torch: only where it is used

    engine = EngineEmbedder(
        model=settings.embedder_model or "Qwen/Qwen3-Embedding-0.6B",
        device=settings.embedder_device,
        max_tokens=settings.embedder_max_tokens or None,
        dimension=settings.embedder_dimension or None,
        default_instruction=settings.query_instruction,
    )
    return LoadErrorsAsModelLoad(engine)


class LoadErrorsAsModelLoad:
    """An ``Embedder`` from ``reranking`` whose load errors (``RerankUnavailableError`` from ``warm_up``, and
    from the properties that load on first use) are ``retrieval``'s ``ModelLoadError``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def warm_up(self) -> None:
        try:
            self.inner.warm_up()
        except RerankUnavailableError as exc:
            raise ModelLoadError(
                f"{exc}: set RETRIEVAL_EMBEDDER_MODEL to a local Qwen3-Embedding folder or a reachable hub id"
            ) from exc

    @property
    def name(self) -> str:
        self.warm_up()
        return str(self.inner.name)

    @property
    def dimension(self) -> int:
        self.warm_up()
        return int(self.inner.dimension)

    @property
    def max_tokens(self) -> int:
        self.warm_up()
        return int(self.inner.max_tokens)

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return int(self.inner.count_tokens(text))

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.warm_up()
        return np.asarray(self.inner.embed_documents(texts))

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        self.warm_up()
        return np.asarray(self.inner.embed_queries(texts, instruction=instruction))
