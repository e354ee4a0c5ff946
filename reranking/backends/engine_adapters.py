"""The inference engine behind the product's two model protocols.

``EngineReranker`` is ``Qwen3Reranker`` served by an ``Engine``: the same template and windows (its
``prepare``), the same ``name``, and the same score, P("yes") = sigmoid(logit_yes - logit_no) in [0, 1], so
results and caches are comparable between the two. ``EngineEmbedder`` satisfies the ``retrieval`` Embedder
protocol structurally (``reranking`` must not import ``retrieval``): the Qwen3-Embedding recipe (text tokens,
``<|endoftext|>``, last-token pooling, L2 norm, MRL prefix) and the same ``name`` as ``Qwen3Embedder``. Both
load errors are ``RerankUnavailableError``; a caller on the retrieval side maps them to its own error.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

import numpy as np

from reranking.backends.base import model_identity
from reranking.backends.engine import Engine, offline_kwargs
from reranking.backends.qwen3 import DEFAULT_INSTRUCTION, Qwen3Reranker
from reranking.errors import RerankUnavailableError
from reranking.reranker import RankedHit, best_first, check_rank_request


class EngineReranker:
    """Qwen3-Reranker served by an ``Engine``: ``Qwen3Reranker``'s exact input, scores P("yes") in [0, 1]."""

    reorders = True

    def __init__(
        self,
        model: str,
        device: str = "cuda",
        max_tokens: int | None = None,
        default_instruction: str = DEFAULT_INSTRUCTION,
        token_budget: int = 32768,
        timeout_s: float | None = 60.0,
        setting_name: str = "RERANK_MODEL",
        **engine_options: Any,
    ) -> None:
        self._template = Qwen3Reranker(
            model, max_tokens=max_tokens, default_instruction=default_instruction, setting_name=setting_name
        )  # its template and windows only: the engine holds the model
        if self._template.max_tokens > token_budget:
            raise ValueError(
                f"max_tokens {self._template.max_tokens} exceeds the token budget {token_budget}"
            )
        self._timeout = timeout_s
        self.engine = Engine(model, head="score", device=device, token_budget=token_budget, **engine_options)

    @property
    def name(self) -> str:
        return self._template.name

    @property
    def max_tokens(self) -> int:
        return self._template.max_tokens

    def warm_up(self) -> None:
        self._template.load_template()
        if self.engine.head_token_ids is None:
            self.engine.head_token_ids = self._template.head_token_ids
        self.engine.warm_up()

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
    ) -> list[RankedHit]:
        check_rank_request(query, top_k)
        if not documents:
            return []
        self.warm_up()
        windows = self._template.prepare(query, documents, instruction=instruction)
        margins = self.engine.run([seq for doc in windows for seq in doc], timeout=self._timeout)
        scores = 1.0 / (1.0 + np.exp(-margins.astype(np.float64)))  # softmax over (no, yes) = sigmoid
        best, offset = [], 0
        for doc in windows:
            best.append(float(scores[offset : offset + len(doc)].max()))
            offset += len(doc)
        return best_first(best, top_k)


def format_query(query: str, instruction: str) -> str:
    """Qwen3-Embedding's query template (a copy of ``retrieval``'s: ``reranking`` does not import it)."""
    return f"Instruct: {instruction}\nQuery:{query}"


class EngineEmbedder:
    """Qwen3-Embedding served by an ``Engine``; satisfies ``retrieval.embedder.Embedder`` structurally.

    ``embed_documents`` takes any number of texts: the engine packs them into batches of its token budget."""

    def __init__(
        self,
        model: str,
        device: str = "cuda",
        max_tokens: int | None = None,
        dimension: int | None = None,
        default_instruction: str = DEFAULT_INSTRUCTION,
        token_budget: int = 32768,
        timeout_s: float | None = 60.0,
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

    def warm_up(self) -> None:
        if self._tokenizer is not None:
            return
        with self._lock:
            if self._tokenizer is not None:
                return
            from transformers import AutoTokenizer

            try:
                tokenizer: Any = AutoTokenizer.from_pretrained(
                    self._model_ref, truncation_side="right", **offline_kwargs(self._model_ref)
                )
            except Exception as exc:  # noqa: BLE001
                raise RerankUnavailableError(
                    f"cannot load the tokenizer of {self._model_ref!r}: {exc}"
                ) from exc
            eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
            if eos is None or eos == tokenizer.unk_token_id:
                raise RerankUnavailableError(
                    f"{self._model_ref!r} has no <|endoftext|> token: not a Qwen3 model?"
                )
            self.engine.warm_up()
            w = self.engine.runner.w
            if self._dimension_setting is not None and self._dimension_setting > w.hidden:
                raise RerankUnavailableError(
                    f"dimension {self._dimension_setting} exceeds the width {w.hidden}"
                )
            limit = min(8192, w.max_positions, self.engine.token_budget)
            if self._max_tokens_setting is not None:
                limit = min(self._max_tokens_setting + 1, w.max_positions)
            self._eos_id, self._max_tokens = int(eos), limit - 1
            self._dimension = self._dimension_setting or w.hidden
            self._tokenizer = tokenizer

    def count_tokens(self, text: str) -> int:
        self.warm_up()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._embed(list(texts))

    def embed_queries(self, texts: Sequence[str], *, instruction: str | None = None) -> np.ndarray:
        task = self._default_instruction if instruction is None else instruction
        return self._embed([format_query(t, task) if task else t for t in texts])

    def _embed(self, texts: list[str]) -> np.ndarray:
        self.warm_up()
        if not texts:
            return np.zeros((0, self._dimension), dtype=np.float32)
        encoded = self._tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=self._max_tokens
        )
        vectors = self._run([[*ids, self._eos_id] for ids in encoded["input_ids"]])
        if self._dimension < vectors.shape[1]:  # MRL: a prefix, renormalised
            vectors = vectors[:, : self._dimension]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _run(self, seqs: list[list[int]]) -> np.ndarray:
        """Any number of sequences: slices of at most a quarter of the engine's queue, two in flight."""
        limit = max(1, self.engine.max_queued_tokens // 4)
        slices, start, tokens = [], 0, 0
        for i, seq in enumerate(seqs):
            if tokens + len(seq) > limit and i > start:
                slices.append((start, i))
                start, tokens = i, 0
            tokens += len(seq)
        slices.append((start, len(seqs)))
        outs: list[np.ndarray] = []
        pending: collections.deque[Future[np.ndarray]] = collections.deque()
        for a, b in slices:
            pending.append(self.engine.submit(seqs[a:b]))
            if len(pending) == 2:
                outs.append(self.engine.wait(pending.popleft(), self._timeout))
        outs.extend(self.engine.wait(f, self._timeout) for f in pending)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)
