"""Runs batches through the packed Qwen3 forward: the layer loop, the kernels' choice, graphs and warm-up.

Sequences are concatenated into one ``(tokens, hidden)`` tensor (``graphs.pack``), so no product ever sees
padding; attention runs within each sequence (``attention``). The last layer runs only for each sequence's
last token (the only row read out), which is then normalised and scored with the two LM-head rows or
L2-normalised.

Element-wise kernels (``kernels``): "triton" (CUDA default: ``triton_kernels``, checked against the torch
path at warm-up, "compile" if that check fails), "compile" (``torch.compile`` of the torch functions of
``qwen3_math``, dynamic token dimension), "eager" (CPU: fp32, exact per-sequence attention; what the fast
tests compare with the transformers backends). On the Triton path the residual adds happen in the
cuBLAS products' epilogues (``addmm_`` into the residual stream), and the gate/up product may be a Triton
product with SwiGLU in its epilogue where warm-up times it faster (``products``); either reads the one copy
of the gate/up weights, interleaved row by row (``qwen3_math``). Batches of equal lengths may run dense
cuDNN attention, which builds a plan on the first batch of each (sequences, length) shape (logged; up to
~1 s where its kernel is new). Large batches launch eagerly (the GPU stays busy while Python issues the
next layer); small ones replay CUDA graphs captured at warm-up (``graphs``). A batch's integer inputs reach
the device in one copy from a pinned staging buffer (``PinnedStagingRing``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from engine import fp8
from engine.attention import (
    VARLEN,
    attention,
    choose_attention,
    prefixed_attention,
    random_batch,
    time_ms,
    uniform_attention,
)
from engine.graphs import Graphs, pack
from engine.precision import Gate, PrecisionChoice, check_precision
from engine.qwen3_math import HEADS, Weights, head_out, layer_functions

logger = logging.getLogger(__name__)

KERNELS = ("auto", "triton", "compile", "eager")
# the reranker's attention is chosen on pairs after a shared head of this many tokens (Qwen3-Reranker's
# template head with a short query; its pairs share it, and the engine computes it once per batch)
TIMED_SHARED_HEAD = 72
GRAPH_TOKENS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
ROUND_TOKENS = 512
GRAPH_SEQUENCES = (1, 4, 16, 64)


def _triton_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


@dataclass(frozen=True)
class Shared:
    """Sequences that share a prefix packed once in the batch (``PackedQwen3.run`` with ``prefix_of``):
    per sequence the prefix's first row and length (0: none), on the device and on the host, and the
    Triton attention's work items for the last layer (the block of each output's last row)."""

    table: torch.Tensor  # (B, 2) int32
    host: list[tuple[int, int]]  # the exact loop's (empty with the Triton kernel)
    rows: list[int]  # per sequence: its last row if it is an output, else -1 (the exact loop's)
    last_items: torch.Tensor | None


class PinnedStagingRing:
    """A ring of pinned host staging buffers (one per batch that may still be copying) that brings a batch's
    integer inputs to the device in one copy: numpy arrays written into the ring's next buffer, each part on a
    16-byte boundary (Triton specialises a kernel on its pointers' alignment: a batch must not compile a new
    variant), then one host-to-device copy; the device views come back in order. On CPU: the arrays as
    tensors."""

    def __init__(self, device: torch.device, ring: int = 4) -> None:
        self.device = device
        self._buffers: list[torch.Tensor | None] = [None] * ring
        self._copied: list[Any] = [None] * ring
        self._next = 0

    def upload(self, parts: Sequence[np.ndarray]) -> list[torch.Tensor]:
        if self.device.type != "cuda":
            return [torch.from_numpy(np.ascontiguousarray(p)) for p in parts]
        starts, size = [], 0
        for part in parts:
            starts.append(size)
            size += -(-part.nbytes // 16) * 16
        slot = self._next
        self._next = (slot + 1) % len(self._buffers)
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # its previous batch's copy is done (long ago, in practice)
        staging = self._buffers[slot]
        if staging is None or staging.numel() < size:
            staging = self._buffers[slot] = torch.empty(
                max(size, 1 << 20), dtype=torch.uint8, pin_memory=True
            )
        host = staging.numpy()
        for part, start in zip(parts, starts, strict=True):
            host[start : start + part.nbytes] = np.ascontiguousarray(part).reshape(-1).view(np.uint8)
        dev = torch.empty(size, dtype=torch.uint8, device=self.device)
        dev.copy_(staging[:size], non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
        self._copied[slot] = copied
        return [
            dev[start : start + part.nbytes].view(_TORCH_INT[part.dtype]).view(part.shape)
            for part, start in zip(parts, starts, strict=True)
        ]


_TORCH_INT = {np.dtype(np.int64): torch.int64, np.dtype(np.int32): torch.int32}


def _to_host(out: torch.Tensor) -> tuple[torch.Tensor, torch.cuda.Event]:
    """A pinned host copy of a batch's outputs, on its way, and the event that marks it complete."""
    host_out = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
    host_out.copy_(out, non_blocking=True)
    event = torch.cuda.Event(enable_timing=True)  # the engine times batches from it
    event.record()
    return host_out, event


class PackedQwen3:
    """Runs batches of sequences through the packed forward, one batch at a time (not thread-safe)."""

    def __init__(
        self,
        weights: Weights,
        *,
        head: str,
        cuda_graphs: bool,
        kernels: str = "auto",
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
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        if kernels not in KERNELS:
            raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")
        if products not in ("auto", "cublas"):
            if not _triton_available():
                raise ValueError(f"products={products!r} is a Triton product, and Triton is not installed")
            from engine.triton_kernels import GEMM_CONFIGS

            if products not in GEMM_CONFIGS:
                raise ValueError(f"products must be auto, cublas or one of {sorted(GEMM_CONFIGS)}")
        self.w = weights
        self.head = head
        self.device = weights.embed.device
        self.dtype = weights.embed.dtype
        self.cuda = self.device.type == "cuda"
        if kernels == "auto":
            kernels = "eager" if not self.cuda else ("triton" if _triton_available() else "compile")
        self.kernels = kernels
        self.products = products
        self.mlp_gemm: str | None = None  # the gate/up product with SwiGLU in its epilogue (see warm_up)
        self._rope: tuple[torch.Tensor, torch.Tensor] | None = None  # cos/sin by position (Triton path)
        self.product_timings: dict[str, float] = {}
        self.attention = attention if attention != "auto" else ("auto" if self.cuda else "loop")
        self.last_attention = "loop"  # one query per sequence (the last layer); set at warm-up on CUDA
        self.attention_timings: dict[str, float] = {}
        self.uniform: str | None = None  # dense SDPA kernel for batches of equal lengths (set at warm-up)
        self._uniform_shapes: set[tuple[int, int]] = set()
        # tunes the block sizes of the fused element-wise kernels of torch.compile
        self._inductor_options = (
            {"coordinate_descent_tuning": True} if inductor_options is None else inductor_options
        )
        self._use_graphs = cuda_graphs and self.cuda
        self._staging_ring = PinnedStagingRing(self.device)
        self.graphs = Graphs(graph_tokens, graph_sequences)
        # eager batches on CUDA: tokens rounded up to a multiple (``_rounded``; 1: as they come)
        self.round_tokens = ROUND_TOKENS if self.cuda else 1
        # the products' number format: asked for here, decided at warm-up (``fp8.choose``); ``fp8_emulate``
        # runs FP8 arithmetic on CPU (tests only)
        asked = check_precision(precision)
        self.precision = PrecisionChoice(asked, "bf16", "not warmed up yet")
        self.fp8: fp8.Fp8State | None = None
        self._fp8_options = (fp8_probe, fp8_gate or Gate(), fp8_emulate)

    @property
    def out_width(self) -> int:
        return 1 if self.head == "score" else self.w.hidden

    @property
    def shares_prefix(self) -> bool:
        """Whether ``run`` takes ``prefix_of`` (the attention kernels that read a shared prefix)."""
        return self.attention.startswith("triton") or self.attention == "loop"

    def graphs_take(self, tokens: int, seqs: int) -> bool:
        """Whether a batch of this size replays a CUDA graph (then launch costs nothing to speak of)."""
        return self.cuda and self.graphs.find(tokens, seqs) is not None

    # -- forward -------------------------------------------------------------------------------------------
    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        cu: torch.Tensor,
        last: torch.Tensor,
        max_len: int,
        items: torch.Tensor | None = None,
        shared: Shared | None = None,
    ) -> torch.Tensor:
        """(B,) logit_yes - logit_no or (B, hidden) unit vectors, fp32, for the sequences ``cu`` packs.
        ``items``: the Triton attention's work items (built here from ``cu`` when not given). ``shared``:
        prefixes packed once (see ``Shared``); ``last`` then lists only the rows read out."""
        if items is None and self.attention.startswith("triton"):
            items = self._items(cu.cpu().numpy()).to(cu.device)
        w = self.w
        x = F.embedding(ids, w.embed)
        b = len(last)
        uniform = shared is None and self.uniform is not None and b > 1 and ids.shape[0] == b * max_len
        if uniform and (b, max_len) not in self._uniform_shapes:
            self._uniform_shapes.add((b, max_len))
            logger.info(
                "%d sequences of %d tokens: cuDNN builds an attention plan (once per shape)", b, max_len
            )
        if self.kernels == "triton" and self.fp8 is not None:
            x = fp8.layers_fused(self, x, positions, cu, last, max_len, items, uniform, shared)
        elif self.kernels == "triton":
            x = self._layers_fused(x, positions, cu, last, max_len, items, uniform, shared)
        else:
            freqs = positions.float()[:, None] * w.inv_freq  # RoPE angles, once for all layers
            cos, sin = freqs.cos()[:, None], freqs.sin()[:, None]
            x = self._layers_torch(x, cos, sin, cu, last, max_len, items, uniform, shared)
        return head_out(w, self.head, x)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor, max_len: int,
                items: torch.Tensor | None, b: int, uniform: bool,
                shared: Shared | None = None) -> torch.Tensor:  # fmt: skip
        if shared is not None:
            return self._attend_shared(q, k, v, cu, items, shared)
        if uniform and self.uniform is not None:
            try:
                return uniform_attention(q, k, v, b, max_len, self.uniform)
            except Exception as exc:  # noqa: BLE001 - e.g. a shape cuDNN refuses: fall back for good
                logger.warning("dense attention for equal lengths failed (%s); using %s", exc, self.attention)
                self.uniform = None
        return attention(q, k, v, cu, cu, max_len, max_len, self.attention, items)

    def _attend_shared(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor,
                       items: torch.Tensor | None, shared: Shared,
                       last: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Attention after a shared prefix; with ``last``: only those rows (the outputs', in order)."""
        if self.attention.startswith("triton"):
            from engine.triton_kernels import ATTENTION_CONFIGS, varlen_attention

            work = items if last is None else shared.last_items
            assert work is not None
            out = varlen_attention(q, k, v, cu, work, ATTENTION_CONFIGS[self.attention], shared.table)
            return out if last is None else out[last]
        host_cu = cu.tolist()
        if last is None:
            return prefixed_attention(q, k, v, host_cu, shared.host)
        out = prefixed_attention(q, k, v, host_cu, shared.host, rows=shared.rows)
        return out[[i for i, r in enumerate(shared.rows) if r >= 0]]

    def _layers_torch(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, cu: torch.Tensor,
                      last: torch.Tensor, max_len: int, items: torch.Tensor | None,
                      uniform: bool, shared: Shared | None = None) -> torch.Tensor:  # fmt: skip
        compiled = self.kernels == "compile"
        pre, step, post = layer_functions(self.w, compiled, self._inductor_options if compiled else {})
        mark = torch._dynamo.maybe_mark_dynamic if compiled else (lambda t, d: None)
        for t in (x, cos, sin):  # one compiled graph for every token count
            mark(t, 0)
        w, b = self.w, len(last)
        first = w.layers[0]
        # the products' weights: bf16 tensors, or e4m3 ones (eager only: ``qwen3_math.linear``)
        p: Sequence[Any] = self.fp8.layers if self.fp8 is not None else w.layers
        q, k, v = pre(x, cos, sin, first.ln1, p[0].wqkv, first.q_norm, first.k_norm)
        for i, (layer, nxt) in enumerate(zip(w.layers[:-1], w.layers[1:], strict=True)):
            a = self._attend(q, k, v, cu, max_len, items, b, uniform, shared)
            mark(a, 0)
            x, q, k, v = step(
                x, a, cos, sin, p[i].wo, layer.ln2, p[i].wgu, p[i].wdown,
                nxt.ln1, p[i + 1].wqkv, nxt.q_norm, nxt.k_norm,
            )  # fmt: skip
        # Only the last token of each sequence is read out: the last layer attends and runs its MLP for
        # those rows alone (exact: every other row's output would be discarded).
        if shared is not None:
            a = self._attend_shared(q, k, v, cu, items, shared, last)
        else:
            one_each = torch.arange(b + 1, dtype=torch.int32, device=cu.device)
            a = attention(q[last], k, v, one_each, cu, 1, max_len, self.last_attention)
        x = x[last]
        mark(x, 0)
        mark(a, 0)
        layer, products = w.layers[-1], p[-1]
        return post(x, a, products.wo, layer.ln2, products.wgu, products.wdown)

    def _layers_fused(self, x: torch.Tensor, positions: torch.Tensor, cu: torch.Tensor, last: torch.Tensor,
                      max_len: int, items: torch.Tensor | None, uniform: bool,
                      shared: Shared | None = None) -> torch.Tensor:  # fmt: skip
        """The Triton path. Residual adds happen in the products' epilogues (``addmm_`` into the residual
        stream), so each norm reads one tensor; q/k norm + RoPE read cos/sin by position."""
        from engine import triton_kernels as tk

        w, b = self.w, len(last)
        heads, kv, dim, eps = w.heads, w.kv_heads, w.head_dim, w.eps
        if self._rope is None:
            self._rope = tk.rope_tables(w.inv_freq, w.max_positions)
        cos, sin = self._rope
        mlp_gemm = tk.GEMM_CONFIGS[self.mlp_gemm] if self.mlp_gemm else None
        h = tk.rms_norm(x, w.layers[0].ln1, eps, self.dtype)
        for i, layer in enumerate(w.layers):
            qkv = F.linear(h, layer.wqkv)
            tk.qk_norm_rope_(qkv, positions, cos, sin, layer.q_norm, layer.k_norm, heads, kv, eps)
            q = qkv[:, : heads * dim].unflatten(1, (heads, dim))
            k = qkv[:, heads * dim : (heads + kv) * dim].unflatten(1, (kv, dim))
            v = qkv[:, (heads + kv) * dim :].unflatten(1, (kv, dim))
            if i + 1 < len(w.layers):
                a = self._attend(q, k, v, cu, max_len, items, b, uniform, shared)
            elif shared is not None:  # the last layer, after shared prefixes: the rows read out only
                a = self._attend_shared(q, k, v, cu, items, shared, last)
                x = x[last]
            else:  # the last layer: each sequence's last token only (see ``_layers_torch``)
                one_each = torch.arange(b + 1, dtype=torch.int32, device=cu.device)
                a = attention(q[last], k, v, one_each, cu, 1, max_len, self.last_attention)
                x = x[last]
            x.addmm_(a.reshape(a.shape[0], -1), layer.wo.t())
            h = tk.rms_norm(x, layer.ln2, eps, self.dtype)
            if mlp_gemm is not None:
                x.addmm_(tk.swiglu_gemm(h, layer.wgu, mlp_gemm), layer.wdown.t())
            else:
                x.addmm_(tk.silu_mul(F.linear(h, layer.wgu)), layer.wdown.t())
            if i + 1 < len(w.layers):
                h = tk.rms_norm(x, w.layers[i + 1].ln1, eps, self.dtype)
        return x

    def _items(self, cu: np.ndarray, capacity: int | None = None) -> torch.Tensor:
        from engine.triton_kernels import ATTENTION_CONFIGS, attention_items

        return torch.from_numpy(attention_items(cu, ATTENTION_CONFIGS[self.attention].block_m, capacity))

    def _capacity(self, tokens: int, slots: int) -> int:
        if not self.attention.startswith("triton"):
            return 0
        from engine.triton_kernels import ATTENTION_CONFIGS, items_capacity

        return items_capacity(tokens, slots, ATTENTION_CONFIGS[self.attention].block_m)

    # -- one batch -------------------------------------------------------------------------------------------
    def run(
        self, seqs: Sequence[Sequence[int] | np.ndarray], prefix_of: np.ndarray | None = None
    ) -> tuple[torch.Tensor, Any]:
        """``_launch`` (below) of the batch, on CUDA with its token count rounded up (``_rounded``)."""
        padded, padded_prefix_of = self._rounded(seqs, prefix_of)
        out, event = self._launch(padded, padded_prefix_of)
        fillers = len(padded) - len(seqs)
        return (out[: len(out) - fillers] if fillers else out), event

    def _rounded(
        self, seqs: Sequence[Sequence[int] | np.ndarray], prefix_of: np.ndarray | None
    ) -> tuple[Sequence[Sequence[int] | np.ndarray], np.ndarray | None]:
        """A batch over the CUDA graphs' largest bucket (4,096 tokens: it runs eagerly) with filler sequences
        after it (token 0, each no longer than the batch's longest, nobody's prefix: their output rows come
        last and are dropped) that bring its tokens to a multiple of ``round_tokens``. cuBLAS chooses a
        kernel per product shape the first time it sees it, and every new query brings a new token count:
        rounded, a few dozen shapes serve every large batch, and the first requests after warm-up meet no
        shape warm-up left out (``bench_first_request.py`` times it), for at most ``round_tokens - 1`` rows
        of work (~2 % at one query x 50 pairs); warm-up runs each rounded count up to the token budget once.
        Smaller batches keep their shape: a graph pads them to its bucket, and without graphs the filler
        would be a large share of their work."""
        multiple = self.round_tokens
        if multiple <= 1 or not seqs:
            return seqs, prefix_of
        lens = [len(s) for s in seqs]
        tokens = sum(lens)
        short = -tokens % multiple
        if not short or tokens <= self.graphs.tokens[-1]:
            return seqs, prefix_of
        longest = max(lens)
        fillers = [np.zeros(min(longest, short - done), dtype=np.int64) for done in range(0, short, longest)]
        if prefix_of is not None:
            prefix_of = np.concatenate([prefix_of, np.full(len(fillers), -1, dtype=prefix_of.dtype)])
        return [*seqs, *fillers], prefix_of

    def _launch(
        self, seqs: Sequence[Sequence[int] | np.ndarray], prefix_of: np.ndarray | None = None
    ) -> tuple[torch.Tensor, Any]:
        """Launch one batch. Returns a host tensor whose first ``len(seqs)`` rows hold the outputs once the
        event (None on CPU) has completed.

        ``prefix_of`` (needs ``shares_prefix``): per sequence the index of another sequence of the batch that
        is its prefix, or -1. A prefix is computed once; the sequences after it are only their own tokens
        (positions continue from the prefix; attention sees the prefix's keys first). Exact: causal attention
        makes a prefix's rows independent of what follows. Only sequences that are no one's prefix give an
        output row, in their order."""
        if prefix_of is not None and bool((prefix_of >= 0).any()):
            return self._run_shared(seqs, prefix_of)
        ids, positions, cu, max_len = pack(seqs)
        n, b = len(ids), len(seqs)
        triton_attention = self.attention.startswith("triton")
        if not self.cuda:
            last = torch.from_numpy(cu[1:].astype(np.int64) - 1)
            items = self._items(cu) if triton_attention else None
            args = (torch.from_numpy(ids), torch.from_numpy(positions), torch.from_numpy(cu), last)
            return self.forward(*args, max_len, items), None
        graph = self.graphs.find(n, b)
        if graph is None:
            parts = [ids, positions, cu[1:].astype(np.int64) - 1, cu]
            if triton_attention:
                from engine.triton_kernels import ATTENTION_CONFIGS, attention_items

                parts.append(attention_items(cu, ATTENTION_CONFIGS[self.attention].block_m))
            dev = self._staging_ring.upload(parts)
            items = dev[4] if triton_attention else None
            out = self.forward(dev[0], dev[1], dev[3], dev[2], max_len, items)
        else:
            out = self.graphs.replay(graph, ids, cu, self._items if triton_attention else None)
        return _to_host(out)

    def _run_shared(
        self, seqs: Sequence[Sequence[int] | np.ndarray], prefix_of: np.ndarray
    ) -> tuple[torch.Tensor, Any]:
        if not self.shares_prefix:
            raise ValueError(f"attention {self.attention!r} cannot read shared prefixes")
        ids, positions, cu, max_len = pack(seqs)
        b = len(seqs)
        lens = np.diff(cu).astype(np.int64)
        has = prefix_of >= 0
        parent = np.where(has, prefix_of, 0)
        pre_len = np.where(has, lens[parent], 0)
        pre_start = np.where(has, cu[parent], 0)
        positions += np.repeat(pre_len, lens)
        is_prefix = np.zeros(b, dtype=bool)
        is_prefix[prefix_of[has]] = True
        outputs = np.flatnonzero(~is_prefix)
        last_rows = cu[outputs + 1].astype(np.int64) - 1
        rows = np.full(b, -1, dtype=np.int64)
        rows[outputs] = last_rows
        table = np.stack([pre_start, pre_len], axis=1).astype(np.int32)
        parts = [ids, positions, last_rows, cu, table]
        if self.attention.startswith("triton"):
            from engine.triton_kernels import ATTENTION_CONFIGS, attention_items, last_items

            block_m = ATTENTION_CONFIGS[self.attention].block_m
            parts += [attention_items(cu, block_m), last_items(cu, outputs, block_m)]
        dev = self._staging_ring.upload(parts)
        dev_cu, dev_table = dev[3], dev[4]
        items = work_last = None
        if self.attention.startswith("triton"):
            items, work_last = dev[5], dev[6]
        if work_last is None:  # the exact loop reads the prefixes on the host
            shared = Shared(dev_table, [(int(s), int(n)) for s, n in table], rows.tolist(), None)
        else:
            shared = Shared(dev_table, [], [], work_last)
        out = self.forward(dev[0], dev[1], dev_cu, dev[2], max_len, items, shared)
        if not self.cuda:
            return out, None
        return _to_host(out)

    # -- warm-up ---------------------------------------------------------------------------------------------
    def warm_up(self, batch_tokens: int = 0) -> None:
        """Pick the attention kernel, check the Triton kernels, compile, capture CUDA graphs (CPU: none).
        ``batch_tokens``: the largest batch the caller forms; two of that size run too (mixed lengths), so
        the first full batches served compile no Triton kernel and find their memory reserved (a dense cuDNN
        shape still builds its plan on first use). FP8 is decided after the kernels' check, before graphs."""
        if not self.cuda:
            self._choose_precision(batch_tokens)
            return
        started = time.perf_counter()
        if self.attention != "loop":
            candidates: tuple[str, ...] = (self.attention,)
            if self.attention == "auto":
                candidates = VARLEN
                if self.kernels == "triton":  # Triton is there: its attention kernels are candidates too
                    from engine.triton_kernels import ATTENTION_CONFIGS

                    candidates = (*ATTENTION_CONFIGS, *VARLEN)
            w = self.w
            choice = choose_attention(
                candidates,
                lambda lens: random_batch(lens, w.heads, w.kv_heads, w.head_dim, self.device, self.dtype),
                self._check_items,
                shared_head=TIMED_SHARED_HEAD if self.head == "score" else 0,
            )
            self.attention, self.last_attention = choice.varlen, choice.last
            self.uniform, self.attention_timings = choice.uniform, choice.timings
        if self.kernels == "triton":
            self._choose_products()
            self._check_kernels()
        self._choose_precision(batch_tokens)
        big = self.graphs.tokens[-1] + 17  # eager sizes: compile (one sequence is a special case)
        plain = [[big // 7] * 6 + [big - 6 * (big // 7)], [big + 1024], [big + 1041 - 99 * 8] + [8] * 99]
        plain.append([600] * 8)
        shared = [(40, 150), (41, 150)]  # a 72-token prefix and (count, length) pairs after it
        if batch_tokens > big:  # the largest batches, twice (of mixed lengths: no dense cuDNN plan)
            n = batch_tokens // 509 - 1
            plain += [[509] * n + [batch_tokens - 509 * n]] * 2
            shared += [((batch_tokens - 72) // 300, 300)] * 2
        for lens in plain:
            self._run_sync([[1] * n for n in lens])
        multiple = self.round_tokens
        if multiple > 1:  # each rounded token count up to the budget once: cuBLAS has picked its kernels
            first = (self.graphs.tokens[-1] // multiple + 1) * multiple  # the first count ``_rounded`` makes
            for tokens in range(first, batch_tokens + 1, multiple):
                lens = [509] * (tokens // 509) + ([tokens % 509] if tokens % 509 else [])
                self._run_sync([[1] * n for n in lens])
        if self.shares_prefix:  # pairs after a shared prefix (one query's candidates)
            for count, n in shared:
                self._run_sync([[1] * 72] + [[1] * n] * count, np.array([-1] + [0] * count))
        torch.cuda.synchronize()
        compiled = time.perf_counter()
        if self._use_graphs and "loop" not in (self.attention, self.last_attention):
            triton_attention = self.attention.startswith("triton")
            items = self._items if triton_attention else None
            self.graphs.capture_all(self.forward, items, self._capacity, self.device)
        torch.cuda.synchronize()
        logger.info(
            "engine warm-up: %s products, kernels %s, gate/up product %s, attention %s (last layer %s, "
            "equal lengths %s), compile %.1fs, %d CUDA graphs %.1fs",
            self.precision.used, self.kernels, self.mlp_gemm or "cublas", self.attention,
            self.last_attention, self.uniform or "same",
            compiled - started, len(self.graphs), time.perf_counter() - compiled,
        )  # fmt: skip

    def _choose_precision(self, batch_tokens: int) -> None:
        probe, gate, emulate = self._fp8_options
        with torch.inference_mode():
            choice = fp8.choose(self, self.precision.asked, gate, probe, batch_tokens, emulate)
        self.precision = choice
        if self.fp8 is not None:  # FP8 serves: one copy of each product, the e4m3 one
            self.w = fp8.keep_only_fp8_products(self.w, self.fp8)
            if self.cuda:
                torch.cuda.empty_cache()
        if choice.asked != choice.used:
            logger.warning(
                "engine precision: %s asked, serving %s: %s", choice.asked, choice.used, choice.reason
            )
        elif choice.used == "fp8":
            logger.info("engine precision: fp8: %s", choice.reason)

    def _check_items(self, name: str, cu: torch.Tensor) -> torch.Tensor | None:
        if not name.startswith("triton"):
            return None
        from engine.triton_kernels import ATTENTION_CONFIGS, attention_items

        block_m = ATTENTION_CONFIGS[name].block_m
        return torch.from_numpy(attention_items(cu.cpu().numpy(), block_m)).to(cu.device)

    def _choose_products(self) -> None:
        """The gate/up product: SwiGLU in a Triton product's epilogue, or cuBLAS then ``silu_mul``, whichever
        is faster here on 4096 + 16384 rows (``products`` forces one)."""
        from engine import triton_kernels as tk

        if self.products == "cublas":
            return
        if self.products != "auto":
            self.mlp_gemm = self.products  # forced (the correctness check after this still applies)
            return
        names = list(tk.GEMM_CONFIGS)
        gen = torch.Generator(device=self.device).manual_seed(0)
        rows = [torch.randn(n, self.w.hidden, device=self.device, generator=gen).to(self.dtype)
                for n in (4096, 16384)]  # fmt: skip
        wgu = self.w.layers[0].wgu  # interleaved: what both candidates read, no copy

        def run(config: tk.GemmConfig | None) -> Callable[[], None]:
            def go() -> None:
                for h in rows:
                    if config is None:
                        tk.silu_mul(F.linear(h, wgu))
                    else:
                        tk.swiglu_gemm(h, wgu, config)

            return go

        best = self.product_timings["cublas"] = time_ms(run(None))
        for name in names:
            try:
                ms = self.product_timings[name] = time_ms(run(tk.GEMM_CONFIGS[name]))
            except Exception as exc:  # noqa: BLE001 - a config this GPU cannot run is not a candidate
                logger.warning("fused gate/up product %s unusable here (%s)", name, exc)
                continue
            if ms < best:
                best, self.mlp_gemm = ms, name

    def _check_kernels(self) -> None:
        """The Triton path against the torch path on one small batch: without the fused products if they
        disagree, "compile" if the element-wise kernels do."""
        gen = np.random.default_rng(0)
        seqs = [gen.integers(0, self.w.vocab, n) for n in (1, 37, 300, 129)]
        if self.mlp_gemm:
            try:
                self._compare(seqs)
                return
            except Exception as exc:  # noqa: BLE001 - a broken kernel costs speed, not results
                logger.warning("the fused gate/up product is unusable here (%s): using cuBLAS", exc)
                self.mlp_gemm = None
        try:
            self._compare(seqs)
        except Exception as exc:  # noqa: BLE001
            logger.warning("Triton element-wise kernels unusable here (%s): using torch.compile", exc)
            self.kernels = "compile"

    def _compare(self, seqs: Sequence[np.ndarray]) -> None:
        """Raises unless the Triton path and the eager torch path agree on ``seqs``."""
        try:
            fused = self._run_sync(seqs)
            self.kernels = "eager"
            plain = self._run_sync(seqs)
        finally:
            self.kernels = "triton"
        if self.head == "score":
            gap = float((fused - plain).abs().max())
            ok = gap <= 0.25
        else:
            gap = float(1 - (fused * plain).sum(-1).min())
            ok = gap <= 5e-3
        if not ok:
            raise RuntimeError(f"Triton and torch paths differ by {gap:.3g}")

    def _run_sync(
        self, seqs: Sequence[Sequence[int] | np.ndarray], prefix_of: np.ndarray | None = None
    ) -> torch.Tensor:
        out, event = self.run(seqs, prefix_of)
        if event is not None:
            event.synchronize()
        return out[: len(seqs)].clone()
