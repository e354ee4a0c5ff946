"""One inference engine for Qwen3-shaped models: the scheduler in front of ``runner.PackedQwen3``.

Callers tokenize in their own threads and ``submit`` token-id sequences, which are checked and turned into
one numpy array there; the request joins a bounded queue (``EngineOverloadedError`` when the queued tokens
would pass ``max_queued_tokens``; a request larger than the whole queue is an ``EngineInputError``). A worker
thread takes sequences first come, first served into batches of at most ``token_budget`` tokens (a request
may span batches), sorts each batch longest first, packs it without padding and launches the forward; a
second thread waits for each batch's results, copied to pinned host memory, and resolves the futures, so the
GPU already runs the next batch while the last one is handed back. At most two batches are in flight, and a
batch is taken only once a slot is free, so requests that arrive meanwhile fill it up to the budget. The
worker thread also runs the warm-up (cuDNN's attention plans are cached per thread), including two batches
of the full token budget. On CUDA the forward is bf16 with fused Triton kernels and replays CUDA graphs for
small batches; on CPU it is fp32 and eager, and matches the transformers backends to float rounding.

Users: ``reranking.backends.qwen3_engine.EngineReranker`` (``head="score"``) and
``retrieval.backends.qwen3_engine.EngineEmbedder`` (``head="embedding"``), which turn the errors of
``engine.errors`` into their stage's.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.errors import EngineInputError, EngineOverloadedError, EngineUnavailableError
from engine.hub import offline_kwargs
from engine.precision import Gate, PrecisionChoice, check_precision
from engine.qwen3_math import extract_weights
from engine.runner import GRAPH_SEQUENCES, GRAPH_TOKENS, PackedQwen3

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class _Request:
    ids: np.ndarray  # every sequence's token ids, concatenated (converted in the caller's thread)
    offsets: np.ndarray  # (n + 1,) where each sequence starts
    future: Future[np.ndarray]
    out: np.ndarray
    taken: int = 0  # sequences already put in a batch
    remaining: int = 0  # sequences not yet scored
    prefix: int = 0  # tokens every sequence starts with, computed once per batch (0: not shared)

    def seq(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]


@dataclass
class EngineStats:
    batches: int = 0
    sequences: int = 0
    tokens: int = 0
    recent_batch_tokens: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )
    served_tokens: int = 0  # tokens of the sequences as submitted (``tokens`` counts shared prefixes once)
    recent_batch_requests: collections.deque[int] = field(
        default_factory=lambda: collections.deque(maxlen=4096)
    )
    requests: int = 0  # request parts over all batches (a request split over two batches counts twice)
    # the device's time on batches: on CUDA from the moment a batch's work may start on the stream (the
    # previous batch's end, or when the batcher began it if the device was idle) to its results' copy, so
    # the gaps while Python launches a batch's kernels count as busy and the time between batches does not;
    # on CPU the forward's wall time
    device_seconds: float = 0.0


MIN_SHARED_PREFIX = 16  # shorter common prefixes are computed per sequence (not worth a segment)
MAX_SHARED_PREFIX = 2048  # a longer common prefix is shared this far (any common prefix is exact)


def common_prefix(ids: np.ndarray, offsets: np.ndarray) -> int:
    """Length of the longest token prefix all sequences share, leaving each at least one token of its own;
    0 when under ``MIN_SHARED_PREFIX`` or for a single sequence."""
    lens = np.diff(offsets)
    if len(lens) < 2:
        return 0
    m = min(int(lens.min()) - 1, MAX_SHARED_PREFIX)
    if m < MIN_SHARED_PREFIX:
        return 0
    # every sequence's first m tokens side by side, against the first sequence's
    heads = ids[offsets[1:-1, None] + np.arange(m)]
    same = (heads == ids[:m]).all(axis=0)
    differ = np.flatnonzero(~same)
    m = int(differ[0]) if len(differ) else m
    return m if m >= MIN_SHARED_PREFIX else 0


class _BatchClock:
    """A batch's time on the device. On CUDA: a timing event recorded on the stream before any of the
    batch's work, read against the batch's own completion event once that is done. On CPU the forward runs
    synchronously: the host's clock around ``run``."""

    def __init__(self, device: torch.device) -> None:
        self._event: Any = None
        self._host = time.perf_counter()
        self._seconds = 0.0
        if device.type == "cuda":
            self._event = torch.cuda.Event(enable_timing=True)
            self._event.record()

    def ran(self) -> None:
        """Mark ``run``'s return (the CPU batch's end)."""
        self._seconds = time.perf_counter() - self._host

    def seconds(self, done: Any) -> float:
        """The batch's seconds; ``done`` is its completion event (complete by now), None on CPU."""
        if self._event is not None and done is not None:
            return float(self._event.elapsed_time(done)) / 1e3
        return self._seconds


def _on_device(device: torch.device) -> Any:
    """The thread's current CUDA device set to ``device`` (Triton launches on the current device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


class Engine:
    """Batched packed inference for one Qwen3 model. ``head="score"`` gives logit_yes - logit_no per sequence
    (``head_token_ids=(no_id, yes_id)``, which may be set until ``warm_up``), ``head="embedding"`` the
    L2-normalised last hidden state. ``kernels``/``attention``/``products`` (the gate/up product: "auto",
    "cublas" or a ``triton_kernels.GEMM_CONFIGS`` name): see ``runner``; "auto" picks at warm-up.
    ``precision`` "fp8": e4m3 products where the GPU has them and they pass their accuracy gate against bf16
    on a probe of ``fp8_probe`` (groups, sequences) at warm-up (``engine.fp8``, ``engine.precision``);
    ``precision`` says what serves and why."""

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
        share_prefix: bool = True,
        max_queued_tokens: int | None = None,
        kernels: str = "auto",
        cuda_graphs: bool | None = None,
        attention: str = "auto",
        graph_tokens: Sequence[int] = GRAPH_TOKENS,
        graph_sequences: Sequence[int] = GRAPH_SEQUENCES,
        inductor_options: dict[str, Any] | None = None,
        products: str = "auto",
        precision: str = "bf16",
        fp8_probe: tuple[int, int] = (8, 50),
        fp8_gate: Gate | None = None,
        fp8_emulate: bool = False,
    ) -> None:
        if token_budget < 1 or max_batch_sequences < 1:
            raise ValueError("token_budget and max_batch_sequences must be positive")
        cuda = str(device).startswith("cuda")
        self._model = model
        self._head = head
        self.head_token_ids = head_token_ids
        self._device = device
        self._dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
        self.token_budget = token_budget
        self._max_batch_sequences = max_batch_sequences
        self.share_prefix = share_prefix
        self.max_queued_tokens = max_queued_tokens or 16 * token_budget
        self._kernels = kernels
        self._graphs = cuda if cuda_graphs is None else cuda_graphs
        self._attention = attention
        self._graph_tokens, self._graph_sequences = graph_tokens, graph_sequences
        self._inductor_options = inductor_options
        self._products = products
        self._precision = check_precision(precision)
        self._fp8_options: dict[str, Any] = {
            "fp8_probe": fp8_probe, "fp8_gate": fp8_gate, "fp8_emulate": fp8_emulate,
        }  # fmt: skip
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
    def precision(self) -> PrecisionChoice:
        """The products' number format in use (decided at warm-up), the one asked for, and why."""
        if self._runner is None:
            return PrecisionChoice(self._precision, "bf16", "not warmed up yet")
        return self._runner.precision

    @property
    def max_sequence_tokens(self) -> int:
        return min(self.token_budget, self.runner.w.max_positions)

    def warm_up(self) -> None:
        """Load the weights, start the threads and warm up on the batcher thread: compile, capture graphs.
        Idempotent. The batcher warms up because cuDNN keeps its attention plans per thread: plans built
        on another thread would be built again, for about a second, by the first batch that needs them."""
        if self._runner is not None:
            return
        with self._lock:
            if self._runner is not None:
                return
            model = self._load() if isinstance(self._model, str) else self._model
            with torch.inference_mode():
                weights = extract_weights(
                    model,
                    head=self._head,
                    device=self._device,
                    dtype=self._dtype,
                    head_ids=self.head_token_ids,
                )
            runner = PackedQwen3(
                weights,
                head=self._head,
                kernels=self._kernels,
                cuda_graphs=self._graphs,
                attention=self._attention,
                graph_tokens=self._graph_tokens,
                graph_sequences=self._graph_sequences,
                inductor_options=self._inductor_options,
                products=self._products,
                precision=self._precision,
                **self._fp8_options,
            )
            warmed: Future[None] = Future()
            threads = (
                threading.Thread(
                    target=self._work, args=(runner, warmed), name="engine-batcher", daemon=True
                ),
                threading.Thread(target=self._complete, name="engine-completer", daemon=True),
            )
            threads[0].start()
            warmed.result()  # the warm-up's own error, if any (the batcher has then stopped)
            self._model = None  # the engine keeps only its own copy of the weights
            threads[1].start()
            self._threads.extend(threads)
            self._runner = runner

    def _load(self) -> Any:
        from transformers import AutoModel, AutoModelForCausalLM

        cls = AutoModelForCausalLM if self._head == "score" else AutoModel
        try:
            return cls.from_pretrained(self._model, dtype=self._dtype, **offline_kwargs(self._model)).eval()
        except Exception as exc:  # noqa: BLE001 - every load failure becomes one error
            raise EngineUnavailableError(
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
                request.future.set_exception(EngineUnavailableError("the engine was closed"))
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
        lens = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        if lens.min() < 1 or lens.max() > limit:
            raise EngineInputError(f"a sequence has {lens.max()} tokens; the engine takes 1 to {limit}")
        ids = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lens.sum()))
        if ids.min() < 0 or ids.max() >= vocab:
            raise EngineInputError(f"token ids must lie in [0, {vocab})")
        offsets = np.zeros(len(lens) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        tokens = int(offsets[-1])
        if tokens > self.max_queued_tokens:
            raise EngineInputError(
                f"a request of {tokens} tokens exceeds the queue ({self.max_queued_tokens})"
            )
        prefix = common_prefix(ids, offsets) if self.share_prefix and runner.shares_prefix else 0
        request = _Request(ids, offsets, future, out, remaining=len(sequences), prefix=prefix)
        with self._cond:
            if self._closed:
                raise EngineUnavailableError("the engine was closed")
            if self._queued_tokens + tokens > self.max_queued_tokens:
                raise EngineOverloadedError(
                    f"the engine queue holds {self._queued_tokens} tokens (limit {self.max_queued_tokens})"
                )
            self._pending.append(request)
            self._queued_tokens += tokens
            self._cond.notify()
        return future

    def run(self, sequences: Sequence[Sequence[int]], timeout: float | None = None) -> np.ndarray:
        """``submit(...).result()``: a timeout becomes ``EngineUnavailableError``."""
        return self.wait(self.submit(sequences), timeout)

    @staticmethod
    def wait(future: Future[np.ndarray], timeout: float | None = None) -> np.ndarray:
        """A submitted request's result; a timeout becomes ``EngineUnavailableError``."""
        try:
            return future.result(timeout=timeout)
        except TimeoutError as exc:
            raise EngineUnavailableError(f"the engine did not answer within {timeout}s") from exc

    def run_many(self, sequences: Sequence[Sequence[int]], timeout: float | None = None) -> np.ndarray:
        """Any number of sequences: submitted in slices of at most a quarter of the queue, two in flight, so a
        large job neither overflows the queue nor shuts out other callers; results in input order."""
        limit = max(1, self.max_queued_tokens // 4)
        slices, start, tokens = [], 0, 0
        for i, seq in enumerate(sequences):
            if tokens + len(seq) > limit and i > start:
                slices.append((start, i))
                start, tokens = i, 0
            tokens += len(seq)
        slices.append((start, len(sequences)))
        outs: list[np.ndarray] = []
        pending: collections.deque[Future[np.ndarray]] = collections.deque()
        for a, b in slices:
            pending.append(self.submit(sequences[a:b]))
            if len(pending) == 2:
                outs.append(self.wait(pending.popleft(), timeout))
        outs.extend(self.wait(f, timeout) for f in pending)
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    # -- worker threads --------------------------------------------------------------------------------------
    def _take_batch(self) -> list[tuple[_Request, int, int]]:
        """Sequences first come, first served, up to the token budget (a request's shared prefix counts
        once per batch: it is computed once). Caller holds ``_cond``."""
        parts: list[tuple[_Request, int, int]] = []
        tokens = count = taken = 0
        while self._pending:
            request = self._pending[0]
            start = stop = request.taken
            size = len(request.offsets) - 1
            p = request.prefix
            while stop < size and count + (stop == start and p > 0) < self._max_batch_sequences:
                n = int(request.offsets[stop + 1] - request.offsets[stop])
                cost = n if stop == start else n - p  # the first sequence of a part brings the prefix
                if tokens + cost > self.token_budget:
                    break
                tokens += cost
                taken += n
                count += 1 + (stop == start and p > 0)
                stop += 1
            if stop > start:
                parts.append((request, start, stop))
                request.taken = stop
            if stop < size:
                break
            self._pending.popleft()
        self._queued_tokens -= taken
        return parts

    def _segments(
        self, parts: list[tuple[_Request, int, int]]
    ) -> tuple[list[np.ndarray], np.ndarray | None, list[int]]:
        """The batch's sequences, which of them is a shared prefix of which (None: no sharing), and for each
        output row the index of its sequence in the parts' order."""
        seqs = [request.seq(i) for request, start, stop in parts for i in range(start, stop)]
        plain = [int(i) for i in sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))]  # longest first
        runner = self._runner
        assert runner is not None
        shared = [(r, a, b) for r, a, b in parts if r.prefix and b - a > 1]
        if not shared or runner.graphs_take(sum(map(len, seqs)), len(seqs)):
            return [seqs[i] for i in plain], None, plain
        segments: list[np.ndarray] = []
        prefix_of: list[int] = []
        order: list[int] = []
        flat = 0
        for request, start, stop in parts:
            p = request.prefix if stop - start > 1 else 0
            parent = -1
            if p:
                parent = len(segments)
                segments.append(request.seq(start)[:p])
                prefix_of.append(-1)
            for i in range(start, stop):
                segments.append(request.seq(i)[p:])
                prefix_of.append(parent)
                order.append(flat)
                flat += 1
        return segments, np.asarray(prefix_of, dtype=np.int64), order

    def _work(self, runner: PackedQwen3, warmed: Future[None]) -> None:
        with torch.inference_mode(), _on_device(runner.device):
            try:
                runner.warm_up(self.token_budget)
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for the warm-up
                warmed.set_exception(exc)
                return
            warmed.set_result(None)
            while True:
                # a slot for the batch first, then the batch: what arrives while both slots are busy joins
                # the next batch (up to the token budget) instead of waiting behind a batch taken too early
                self._inflight.acquire()
                with self._cond:
                    while (self._paused or not self._pending) and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        self._inflight.release()
                        return
                    parts = self._take_batch()
                try:
                    seqs, prefix_of, order = self._segments(parts)
                    clock = _BatchClock(runner.device)
                    out, event = runner.run(seqs, prefix_of)
                    clock.ran()
                except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the engine
                    logger.exception("engine batch of %d requests failed", len(parts))
                    self._inflight.release()
                    self._fail(parts, exc)
                    continue
                served = sum(int(r.offsets[b] - r.offsets[a]) for r, a, b in parts)
                self._done.put((parts, order, out, (clock, event), (sum(len(s) for s in seqs), served)))

    def _complete(self) -> None:
        while True:  # (waits on events and copies host memory only: any current device will do)
            item = self._done.get()
            if item is None:
                return
            parts, order, out, (clock, event), (tokens, served) = item
            try:
                if event is not None:
                    event.synchronize()
                seconds = clock.seconds(event)
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
            stats.served_tokens += served
            stats.recent_batch_tokens.append(tokens)
            stats.recent_batch_requests.append(len(parts))
            stats.requests += len(parts)
            stats.device_seconds += seconds

    def _fail(self, parts: list[tuple[_Request, int, int]], exc: Exception) -> None:
        error = (
            exc
            if isinstance(exc, EngineUnavailableError)
            else EngineUnavailableError(f"engine failure: {exc}")
        )
        for request, _, _ in parts:
            if not request.future.done():
                request.future.set_exception(error)
