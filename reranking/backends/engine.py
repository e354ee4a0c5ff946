"""One inference engine for Qwen3-shaped models, shared by reranking (``EngineReranker``) and embedding
(``EngineEmbedder``).

Callers tokenize in their own threads and ``submit`` token-id sequences; the request joins a bounded queue
(``RerankOverloadedError`` when the queued tokens would pass ``max_queued_tokens``). A worker thread takes
sequences first come, first served into batches of at most ``token_budget`` tokens (a request may span
batches), sorts each batch longest first, packs it without padding and launches the forward
(``packed_qwen3``); a second thread waits for each batch's results, copied to pinned host memory, and resolves
the futures, so the GPU already runs the next batch while the last one is handed back. At most two batches are
in flight. On CUDA the forward is bf16, compiled, and replays CUDA graphs for small batches; on CPU it is fp32
and eager, and matches the transformers backends to float rounding.

``EngineReranker`` keeps the exact template and windows of ``Qwen3Reranker`` (its ``prepare``); scores are
P("yes") = sigmoid(logit_yes - logit_no) in [0, 1]. ``EngineEmbedder`` satisfies the ``retrieval`` Embedder
protocol structurally (``reranking`` must not import ``retrieval``): the Qwen3-Embedding recipe (text tokens,
``<|endoftext|>``, last-token pooling, L2 norm, MRL prefix) and the same ``name`` as ``Qwen3Embedder``.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reranking.backends.packed_qwen3 import GRAPH_SEQUENCES, GRAPH_TOKENS, PackedQwen3, extract_weights
from reranking.backends.qwen3 import DEFAULT_INSTRUCTION, PREFIX, SUFFIX, Qwen3Reranker
from reranking.errors import RerankInputError, RerankOverloadedError, RerankUnavailableError
from reranking.reranker import RankedHit

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    seqs: Sequence[Sequence[int]]
    future: Future[np.ndarray]
    out: np.ndarray
    taken: int = 0  # sequences already put in a batch
    remaining: int = 0  # sequences not yet scored


@dataclass
class EngineStats:
    batches: int = 0
    sequences: int = 0
    tokens: int = 0
    recent_batch_tokens: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )
    recent_batch_requests: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )


def _offline_kwargs(model: str) -> dict[str, Any]:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    offline = any(v.strip().upper() in {"1", "ON", "YES", "TRUE"} for v in flags)
    return {"local_files_only": True} if offline and not os.path.isdir(model) else {}


class Engine:
    """Batched packed inference for one Qwen3 model. ``head="score"`` gives logit_yes - logit_no per sequence
    (``head_token_ids=(no_id, yes_id)``), ``head="embedding"`` the L2-normalised last hidden state."""

    def __init__(
        self,
        model: Any,
        *,
        head: str = "score",
        head_token_ids: tuple[int, int] | None = None,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        token_budget: int = 32768,
        max_batch_sequences: int = 512,
        max_queued_tokens: int | None = None,
        compile: bool | None = None,
        cuda_graphs: bool | None = None,
        attention: str = "auto",
        graph_tokens: Sequence[int] = GRAPH_TOKENS,
        graph_sequences: Sequence[int] = GRAPH_SEQUENCES,
        inductor_options: dict[str, Any] | None = None,
    ) -> None:
        if token_budget < 1 or max_batch_sequences < 1:
            raise ValueError("token_budget and max_batch_sequences must be positive")
        cuda = str(device).startswith("cuda")
        self._model = model
        self._head = head
        self._head_ids = head_token_ids
        self._device = device
        self._dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
        self.token_budget = token_budget
        self._max_batch_sequences = max_batch_sequences
        self.max_queued_tokens = max_queued_tokens or 16 * token_budget
        self._compile = cuda if compile is None else compile
        self._graphs = cuda if cuda_graphs is None else cuda_graphs
        self._attention = attention
        self._graph_tokens, self._graph_sequences = graph_tokens, graph_sequences
        self._inductor_options = inductor_options
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._pending: collections.deque[_Request] = collections.deque()
        self._queued_tokens = 0
        self._paused = False
        self._closed = False
        self._inflight = threading.Semaphore(2)
        self._done: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._runner: PackedQwen3 | None = None
        self._threads: list[threading.Thread] = []
        self.stats = EngineStats()

    # -- lifecycle -------------------------------------------------------------------------------------------
    @property
    def runner(self) -> PackedQwen3:
        self.warm_up()
        assert self._runner is not None
        return self._runner

    @property
    def max_sequence_tokens(self) -> int:
        return min(self.token_budget, self.runner.w.max_positions)

    def warm_up(self) -> None:
        """Load the weights, compile, capture graphs and start the threads. Idempotent."""
        if self._runner is not None:
            return
        with self._lock:
            if self._runner is not None:
                return
            model = self._load() if isinstance(self._model, str) else self._model
            with torch.inference_mode():
                weights = extract_weights(
                    model, head=self._head, device=self._device, dtype=self._dtype, head_ids=self._head_ids
                )
                runner = PackedQwen3(
                    weights,
                    head=self._head,
                    compiled=self._compile,
                    cuda_graphs=self._graphs,
                    attention=self._attention,
                    graph_tokens=self._graph_tokens,
                    graph_sequences=self._graph_sequences,
                    inductor_options=self._inductor_options,
                )
                runner.warm_up()
            self._model = None  # the engine keeps only its own copy of the weights
            for target, name in ((self._work, "engine-batcher"), (self._complete, "engine-completer")):
                thread = threading.Thread(target=target, name=name, daemon=True)
                thread.start()
                self._threads.append(thread)
            self._runner = runner

    def _load(self) -> Any:
        from transformers import AutoModel, AutoModelForCausalLM

        cls = AutoModelForCausalLM if self._head == "score" else AutoModel
        try:
            return cls.from_pretrained(self._model, dtype=self._dtype, **_offline_kwargs(self._model)).eval()
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one error
            raise RerankUnavailableError(
                f"cannot load the Qwen3 model {self._model!r} ({type(exc).__name__}: {exc})"
            ) from exc

    def pause(self) -> None:
        """Stop forming batches (queued work waits); for maintenance and tests."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            pending, self._pending = list(self._pending), collections.deque()
            self._cond.notify_all()
        for request in pending:
            if not request.future.done():
                request.future.set_exception(RerankUnavailableError("the engine was closed"))
        self._done.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    # -- requests --------------------------------------------------------------------------------------------
    def submit(self, sequences: Sequence[Sequence[int]]) -> Future[np.ndarray]:
        """Queue token-id sequences; the future gives (n,) float32 scores or (n, hidden) vectors."""
        runner = self.runner
        width = runner.out_width
        out = np.zeros((len(sequences),) if width == 1 else (len(sequences), width), dtype=np.float32)
        future: Future[np.ndarray] = Future()
        if not sequences:
            future.set_result(out)
            return future
        limit, vocab = self.max_sequence_tokens, runner.w.vocab
        tokens = 0
        for seq in sequences:
            if not 0 < len(seq) <= limit:
                raise RerankInputError(f"a sequence has {len(seq)} tokens; the engine takes 1 to {limit}")
            if min(seq) < 0 or max(seq) >= vocab:
                raise RerankInputError(f"token ids must lie in [0, {vocab})")
            tokens += len(seq)
        if tokens > self.max_queued_tokens:
            raise RerankInputError(
                f"a request of {tokens} tokens exceeds the queue ({self.max_queued_tokens})"
            )
        request = _Request(sequences, future, out, remaining=len(sequences))
        with self._cond:
            if self._closed:
                raise RerankUnavailableError("the engine was closed")
            if self._queued_tokens + tokens > self.max_queued_tokens:
                raise RerankOverloadedError(
                    f"the engine queue holds {self._queued_tokens} tokens (limit {self.max_queued_tokens})"
                )
            self._pending.append(request)
            self._queued_tokens += tokens
            self._cond.notify()
        return future

    def run(self, sequences: Sequence[Sequence[int]], timeout: float | None = None) -> np.ndarray:
        """``submit(...).result()``: a timeout becomes ``RerankUnavailableError``."""
        try:
            return self.submit(sequences).result(timeout=timeout)
        except TimeoutError as exc:
            raise RerankUnavailableError(f"the engine did not answer within {timeout}s") from exc

    # -- worker threads --------------------------------------------------------------------------------------
    def _take_batch(self) -> list[tuple[_Request, int, int]]:
        """Sequences first come, first served, up to the token budget. Caller holds ``_cond``."""
        parts: list[tuple[_Request, int, int]] = []
        tokens = count = 0
        while self._pending:
            request = self._pending[0]
            start = stop = request.taken
            while stop < len(request.seqs) and count < self._max_batch_sequences:
                n = len(request.seqs[stop])
                if tokens + n > self.token_budget:
                    break
                tokens += n
                count += 1
                stop += 1
            if stop > start:
                parts.append((request, start, stop))
                request.taken = stop
            if stop < len(request.seqs):
                break
            self._pending.popleft()
        self._queued_tokens -= tokens
        return parts

    def _work(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cond:
                    while (self._paused or not self._pending) and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    parts = self._take_batch()
                seqs = [s for request, start, stop in parts for s in request.seqs[start:stop]]
                order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))  # longest first
                self._inflight.acquire()
                try:
                    assert self._runner is not None
                    out, event = self._runner.run([seqs[i] for i in order])
                except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the engine
                    logger.exception("engine batch of %d sequences failed", len(seqs))
                    self._inflight.release()
                    self._fail(parts, exc)
                    continue
                self._done.put((parts, order, out, event, sum(len(s) for s in seqs)))

    def _complete(self) -> None:
        while True:
            item = self._done.get()
            if item is None:
                return
            parts, order, out, event, tokens = item
            try:
                if event is not None:
                    event.synchronize()
                values = np.empty((len(order), *out.shape[1:]), dtype=np.float32)
                values[np.asarray(order)] = out[: len(order)].numpy()
            except Exception as exc:  # noqa: BLE001
                logger.exception("engine batch failed on the device")
                self._fail(parts, exc)
                continue
            finally:
                self._inflight.release()
            offset = 0
            for request, start, stop in parts:
                request.out[start:stop] = values[offset : offset + stop - start]
                offset += stop - start
                request.remaining -= stop - start
                if request.remaining == 0 and not request.future.done():
                    request.future.set_result(request.out)
            stats = self.stats
            stats.batches += 1
            stats.sequences += len(order)
            stats.tokens += tokens
            stats.recent_batch_tokens.append(tokens)
            stats.recent_batch_requests.append(len(parts))

    def _fail(self, parts: list[tuple[_Request, int, int]], exc: Exception) -> None:
        error = (
            exc
            if isinstance(exc, RerankUnavailableError)
            else RerankUnavailableError(f"engine failure: {exc}")
        )
        for request, _, _ in parts:
            if not request.future.done():
                request.future.set_exception(error)


class _Template(Qwen3Reranker):
    """``Qwen3Reranker``'s template and windows without its model: ``_load`` reads only the tokenizer."""

    def _load(self) -> None:
        from transformers import AutoTokenizer

        try:
            tokenizer: Any = AutoTokenizer.from_pretrained(
                self._model_ref, **_offline_kwargs(self._model_ref)
            )
        except Exception as exc:  # noqa: BLE001
            raise RerankUnavailableError(f"cannot load the tokenizer of {self._model_ref!r}: {exc}") from exc
        self.no_id, self.yes_id = (int(tokenizer.convert_tokens_to_ids(t)) for t in ("no", "yes"))
        self._tokenizer = tokenizer
        self._prefix_ids = tokenizer.encode(PREFIX, add_special_tokens=False)
        self._suffix_ids = tokenizer.encode(SUFFIX, add_special_tokens=False)
        self._model = "template-only"  # marks the template as loaded for ``warm_up``


def _identity(model: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(model))) if os.path.isdir(model) else model


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
        **engine_options: Any,
    ) -> None:
        self._template = _Template(model, max_tokens=max_tokens, default_instruction=default_instruction)
        if self._template.max_tokens > token_budget:
            raise ValueError(
                f"max_tokens {self._template.max_tokens} exceeds the token budget {token_budget}"
            )
        self._model_ref = model
        self._timeout = timeout_s
        self.engine = Engine(model, head="score", device=device, token_budget=token_budget, **engine_options)

    @property
    def name(self) -> str:
        return f"qwen3-reranker-engine:{_identity(self._model_ref)}"

    @property
    def max_tokens(self) -> int:
        return self._template.max_tokens

    def warm_up(self) -> None:
        self._template.warm_up()
        if self.engine._head_ids is None:
            self.engine._head_ids = (self._template.no_id, self._template.yes_id)
        self.engine.warm_up()

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        *,
        top_k: int | None = None,
        instruction: str | None = None,
    ) -> list[RankedHit]:
        if not query or not query.strip():
            raise RerankInputError("the query is empty")
        if top_k is not None and top_k < 0:
            raise RerankInputError(f"top_k must be >= 0, got {top_k}")
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
        hits = sorted((RankedHit(i, s) for i, s in enumerate(best)), key=lambda h: (-h.score, h.index))
        return hits if top_k is None else hits[:top_k]


def format_query(query: str, instruction: str) -> str:
    """Qwen3-Embedding's query template (a copy of ``retrieval``'s: ``reranking`` does not import it)."""
    return f"Instruct: {instruction}\nQuery:{query}"


class EngineEmbedder:
    """Qwen3-Embedding served by an ``Engine``; satisfies ``retrieval.embedder.Embedder`` structurally."""

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
        return f"qwen3-embedding:{_identity(self._model_ref)}:{self.dimension}"

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
                    self._model_ref, truncation_side="right", **_offline_kwargs(self._model_ref)
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
        vectors = self.engine.run(
            [[*ids, self._eos_id] for ids in encoded["input_ids"]], timeout=self._timeout
        )
        if self._dimension < vectors.shape[1]:  # MRL: a prefix, renormalised
            vectors = vectors[:, : self._dimension]
            vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(vectors, dtype=np.float32)
