"""Qwen3-Embedding served by the inference engine (``engine.engine.Engine``, ``head="embedding"``).

The recipe of ``Qwen3Embedder`` (text tokens, ``<|endoftext|>``, last-token pooling, L2 norm, MRL prefix)
and the same ``name``, so a collection built by one serves the other. ``embed_documents`` takes any number of
texts: the engine packs them into batches of its token budget (``Engine.run_many``).

The engine's errors become the retrieval stage's: a failed load (``warm_up``, and the properties that load on
first use) is ``ModelLoadError``; at run time ``EngineOverloadedError`` → ``EmbedderOverloadedError`` (429),
``EngineUnavailableError`` (closed, failed, timed out) → ``EmbedderUnavailableError`` (503),
``EngineInputError`` → ``EmbedderInputError`` (400). The ingestion worker retries the runtime ones.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from engine.engine import Engine, EngineStats
from engine.errors import EngineError, EngineInputError, EngineOverloadedError
from engine.hub import model_identity, offline_kwargs
from engine.prompts import QWEN3_EMBEDDING_INSTRUCTION, format_query
from engine.tokens import batch_ids, rust_backend
from retrieval.errors import (
    EmbedderInputError,
    EmbedderOverloadedError,
    EmbedderUnavailableError,
    ModelLoadError,
)


@contextmanager
def embedder_errors() -> Iterator[None]:
    """The engine's runtime errors as the retrieval stage's (same message, with the engine's as cause)."""
    try:
        yield
    except EngineInputError as exc:
        raise EmbedderInputError(str(exc)) from exc
    except EngineOverloadedError as exc:
        raise EmbedderOverloadedError(str(exc)) from exc
    except EngineError as exc:
        raise EmbedderUnavailableError(str(exc)) from exc


class EngineEmbedder:
    """Qwen3-Embedding served by an ``Engine``; an ``Embedder``. Cheap to build; ``warm_up`` loads."""

    def __init__(
        self,
        model: str,
        device: str = "cuda",
        max_tokens: int | None = None,
        dimension: int | None = None,
        default_instruction: str = QWEN3_EMBEDDING_INSTRUCTION,
        token_budget: int = 32768,
        timeout_s: float | None = 60.0,
        setting_name: str = "RETRIEVAL_EMBEDDER_MODEL",
        **engine_options: Any,
    ) -> None:
        if max_tokens is not None and not 0 < max_tokens < token_budget:
            raise ValueError(f"max_tokens must lie in [1, {token_budget - 1}], got {max_tokens}")
        if dimension is not None and dimension < 1:
            raise ValueError(f"dimension must be positive, got {dimension}")
        self._model_ref = model
        self._max_tokens_setting = max_tokens
        self._dimension_setting = dimension
        self._default_instruction = default_instruction
        self._timeout = timeout_s
        self._setting_name = setting_name
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._eos_id = 0
        self._dimension = 0
        self._max_tokens = 0
        self.engine = Engine(
            model, head="embedding", device=device, token_budget=token_budget, **engine_options
        )

    @property
    def name(self) -> str:
        return f"qwen3-embedding:{model_identity(self._model_ref)}:{self.dimension}"

    @property
    def dimension(self) -> int:
        self.warm_up()
        return self._dimension

    @property
    def max_tokens(self) -> int:
        self.warm_up()
        return self._max_tokens

    @property
    def precision(self) -> str:
        """The engine's products: "bf16" or "fp8" (decided at warm-up; "bf16" before)."""
        return self.engine.precision.used

    @property
    def precision_reason(self) -> str:
        """Why ``precision`` is what it is (FP8's gate figures, or why it fell back to bf16)."""
        return self.engine.precision.reason

    @property
    def engine_stats(self) -> EngineStats:
        """The engine's counters (batches, requests, tokens, device time), exported by ``GET /metrics``."""
        return self.engine.stats

    def warm_up(self) -> None:
        if self._tokenizer is not None:
            return
        with self._lock:
            if self._tokenizer is not None:
                return
            try:
                self._load()
            except EngineError as exc:
                raise self._load_error(str(exc)) from exc

    def _load_error(self, why: str) -> ModelLoadError:
        return ModelLoadError(
            f"{why}: set {self._setting_name} to a local Qwen3-Embedding folder or a reachable hub id"
        )

    def _load(self) -> None:
        from transformers import AutoTokenizer

        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(
                self._model_ref, truncation_side="right", **offline_kwargs(self._model_ref)
            )
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one error naming the setting
            raise self._load_error(f"cannot load the tokenizer of {self._model_ref!r}: {exc}") from exc
        eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        if eos is None or eos == tokenizer.unk_token_id:
            raise self._load_error(f"{self._model_ref!r} has no <|endoftext|> token: not a Qwen3 model?")
        self.engine.warm_up()
        w = self.engine.runner.w
        if self._dimension_setting is not None and self._dimension_setting > w.hidden:
            raise self._load_error(f"dimension {self._dimension_setting} exceeds the width {w.hidden}")
        limit = min(8192, w.max_positions, self.engine.token_budget)
        if self._max_tokens_setting is not None:
            limit = min(self._max_tokens_setting + 1, w.max_positions)
        self._eos_id, self._max_tokens = int(eos), limit - 1
        self._dimension = self._dimension_setting or w.hidden
        self._tokenizer = tokenizer

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _encode(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids (no special tokens), cut at ``max_tokens`` (what the wrapper's
        ``truncation=True`` does to one sequence), through the Rust backend where it can be called
        (``engine.tokens``)."""
        backend = rust_backend(self._tokenizer)
        if backend is None:
            encoded = self._tokenizer(
                texts, add_special_tokens=False, truncation=True, max_length=self._max_tokens
            )
            return [list(ids) for ids in encoded["input_ids"]]
        return [ids[: self._max_tokens] for ids in batch_ids(backend, texts)]

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(list(texts))

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        task = self._default_instruction if instruction is None else instruction
        return self._embed([format_query(t, task) if task else t for t in texts])

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        with embedder_errors():
            vectors = self.engine.run_many(
                [[*ids, self._eos_id] for ids in self._encode(texts)], timeout=self._timeout
            )
        if self._dimension < vectors.shape[1]:  # MRL: a prefix, renormalised
            vectors = vectors[:, : self._dimension]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)
