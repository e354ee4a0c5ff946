"""A packed-sequence Qwen3 forward over Hugging Face weights: the model math of the inference engine.

Sequences are concatenated into one ``(tokens, hidden)`` tensor, so the matrix products never see padding;
attention runs over the packed rows with cumulative sequence offsets (``cu``) through PyTorch's variable-length
kernels (``aten._flash_attention_forward``, ``_efficient_attention_forward`` or ``_cudnn_attention_forward``;
the fastest that passes a self-check is picked at warm-up), each row attending causally within its sequence.
Per layer: RMSNorm, one fused q/k/v product, per-head q/k RMSNorm, RoPE, attention, o_proj, residual,
RMSNorm, one fused gate/up product, SwiGLU, down_proj, residual. After the last layer only the last token of
each sequence is normalised and either scored with the two LM-head rows ("score": logit_yes - logit_no) or
L2-normalised ("embedding"). Norms, RoPE and SwiGLU are computed in fp32 and rounded once.

On CUDA the two element-wise stretches between attention calls are ``torch.compile``d once with a dynamic
token dimension, large batches run eagerly (the GPU stays busy while Python issues the next layer) and small
ones replay CUDA graphs captured at warm-up for (token, sequence-count) buckets. On CPU everything runs
eagerly in fp32 with an exact per-sequence attention loop, which is what the fast tests compare against the
transformers reference.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

HEADS = ("score", "embedding")
AUTO_ATTENTION = ("flash", "efficient")
GRAPH_TOKENS = (64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
GRAPH_SEQUENCES = (1, 4, 16, 64)


@dataclass(frozen=True)
class Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor  # (q + k + v, hidden)
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: torch.Tensor  # (2 * intermediate, hidden): gate rows, then up rows
    wdown: torch.Tensor


@dataclass(frozen=True)
class Weights:
    embed: torch.Tensor
    layers: tuple[Layer, ...]
    norm: torch.Tensor
    head: torch.Tensor | None  # (2, hidden) fp32, rows of "no" and "yes"; None for embeddings
    inv_freq: torch.Tensor  # (head_dim / 2,) fp32
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    max_positions: int

    @property
    def hidden(self) -> int:
        return int(self.embed.shape[1])

    @property
    def vocab(self) -> int:
        return int(self.embed.shape[0])


def extract_weights(
    model: Any, *, head: str, device: str | torch.device, dtype: torch.dtype, head_ids: tuple[int, int] | None
) -> Weights:
    """Weights of a ``Qwen3ForCausalLM`` or ``Qwen3Model`` laid out for the packed forward."""
    base = model.model if hasattr(model, "lm_head") else model
    config = base.config
    if getattr(config, "model_type", "") != "qwen3":
        raise ValueError(
            f"the engine runs Qwen3 models, got model_type={getattr(config, 'model_type', None)!r}"
        )
    if getattr(config, "attention_bias", False) or getattr(config, "use_sliding_window", False):
        raise ValueError("attention biases and sliding windows are not supported by the engine")
    rope = getattr(base, "rotary_emb", None)
    if rope is None or getattr(rope, "rope_type", "default") != "default" or rope.attention_scaling != 1.0:
        raise ValueError("only the default RoPE of Qwen3 is supported by the engine")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ValueError(f"unsupported activation {config.hidden_act!r}")

    def put(t: torch.Tensor, kind: torch.dtype = dtype) -> torch.Tensor:
        return t.detach().to(device=device, dtype=kind).contiguous()

    layers = []
    for block in base.layers:
        att, mlp = block.self_attn, block.mlp
        layers.append(
            Layer(
                ln1=put(block.input_layernorm.weight, torch.float32),
                wqkv=put(torch.cat([att.q_proj.weight, att.k_proj.weight, att.v_proj.weight])),
                q_norm=put(att.q_norm.weight, torch.float32),
                k_norm=put(att.k_norm.weight, torch.float32),
                wo=put(att.o_proj.weight),
                ln2=put(block.post_attention_layernorm.weight, torch.float32),
                wgu=put(torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight])),
                wdown=put(mlp.down_proj.weight),
            )
        )
    rows = None
    if head == "score":
        if (
            head_ids is None
            or not hasattr(model, "get_output_embeddings")
            or model.get_output_embeddings() is None
        ):
            raise ValueError(
                "the score head needs a causal LM (with its LM head) and the (no, yes) token ids"
            )
        lm_head = model.get_output_embeddings()
        if getattr(lm_head, "bias", None) is not None:
            raise ValueError("an LM head with a bias is not a Qwen3 reranker")
        rows = put(lm_head.weight[list(head_ids)], torch.float32)
    heads, kv_heads = int(config.num_attention_heads), int(config.num_key_value_heads)
    return Weights(
        embed=put(base.embed_tokens.weight),
        layers=tuple(layers),
        norm=put(base.norm.weight, torch.float32),
        head=rows,
        inv_freq=put(rope.inv_freq, torch.float32),
        heads=heads,
        kv_heads=kv_heads,
        head_dim=int(getattr(config, "head_dim", None) or config.hidden_size // heads),
        eps=float(config.rms_norm_eps),
        max_positions=int(config.max_position_embeddings),
    )


# -- the math --------------------------------------------------------------------------------------------
def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _norm_rope(
    t: torch.Tensor, w: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> torch.Tensor:
    t = _rms(t, w, eps)
    half = t.shape[-1] // 2
    t1, t2 = t[..., :half], t[..., half:]
    return torch.cat((t1 * cos - t2 * sin, t2 * cos + t1 * sin), dim=-1)


def _make_pre(heads: int, kv_heads: int, head_dim: int, eps: float) -> Callable[..., Any]:
    def pre(x, cos, sin, ln1, wqkv, q_norm, k_norm):  # type: ignore[no-untyped-def]
        n = x.shape[0]
        qkv = F.linear(_rms(x, ln1, eps).to(wqkv.dtype), wqkv)
        q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
        q = _norm_rope(q.view(n, heads, head_dim), q_norm, cos, sin, eps).to(wqkv.dtype)
        k = _norm_rope(k.view(n, kv_heads, head_dim), k_norm, cos, sin, eps).to(wqkv.dtype)
        return q, k, v.reshape(n, kv_heads, head_dim)

    return pre


def _make_post(eps: float) -> Callable[..., Any]:
    def post(x, attn, wo, ln2, wgu, wdown):  # type: ignore[no-untyped-def]
        x = x + F.linear(attn.reshape(x.shape[0], -1), wo).to(x.dtype)
        gate, up = F.linear(_rms(x, ln2, eps).to(wgu.dtype), wgu).chunk(2, dim=-1)
        return x + F.linear((F.silu(gate.float()) * up.float()).to(wgu.dtype), wdown).to(x.dtype)

    return post


def _make_step(pre: Callable[..., Any], post: Callable[..., Any]) -> Callable[..., Any]:
    def step(x, attn, cos, sin, wo, ln2, wgu, wdown, ln1, wqkv, q_norm, k_norm):  # type: ignore[no-untyped-def]
        x = post(x, attn, wo, ln2, wgu, wdown)
        return (x, *pre(x, cos, sin, ln1, wqkv, q_norm, k_norm))

    return step


_COMPILED: dict[tuple[Any, ...], tuple[Callable[..., Any], ...]] = {}
_COMPILED_LOCK = threading.Lock()


def _functions(w: Weights, compiled: bool, options: dict[str, Any]) -> tuple[Callable[..., Any], ...]:
    """(pre, step, post) for this shape; compiled ones are shared by every engine in the process."""
    key = (w.heads, w.kv_heads, w.head_dim, w.eps, compiled, tuple(sorted(options.items())))
    with _COMPILED_LOCK:
        if key not in _COMPILED:
            pre, post = _make_pre(w.heads, w.kv_heads, w.head_dim, w.eps), _make_post(w.eps)
            fns = [pre, _make_step(pre, post), post]
            if compiled:
                fns = [torch.compile(f, fullgraph=True, dynamic=False, options=options or None) for f in fns]
            _COMPILED[key] = tuple(fns)
        return _COMPILED[key]


# -- attention over packed sequences ---------------------------------------------------------------------
def _expand(t: torch.Tensor, groups: int) -> torch.Tensor:
    return t if groups == 1 else t.repeat_interleave(groups, dim=1)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_q: torch.Tensor,
    cu_k: torch.Tensor,
    max_q: int,
    max_k: int,
    backend: str,
) -> torch.Tensor:
    """Attention within each packed sequence: q (Tq, H, D), k/v (Tk, Hk, D), offsets (B + 1,) int32.

    Causal when queries and keys are the same rows (``cu_q is cu_k``); otherwise each sequence has one query,
    its last token, which sees every key of its sequence."""
    scale = q.shape[-1] ** -0.5
    groups = q.shape[1] // k.shape[1]
    causal = cu_q is cu_k
    if backend == "flash":  # native grouped-query attention
        return torch.ops.aten._flash_attention_forward(
            q, k, v, cu_q, cu_k, max_q, max_k, 0.0, causal, False, scale=scale
        )[0]
    if backend == "efficient":
        k, v = _expand(k, groups)[None], _expand(v, groups)[None]
        out = torch.ops.aten._efficient_attention_forward(
            q[None], k, v, None, cu_q, cu_k, max_q, max_k, 0.0, int(causal), False, scale=scale
        )
        return out[0][0]
    # "loop": exact reference, one SDPA call per sequence (CPU, and the last resort on CUDA).
    out = torch.empty_like(q)
    for (qa, qb), (ka, kb) in zip(
        itertools.pairwise(cu_q.tolist()), itertools.pairwise(cu_k.tolist()), strict=True
    ):
        if qb > qa:
            qs = q[qa:qb].transpose(0, 1)[None]
            ks = _expand(k[ka:kb], groups).transpose(0, 1)[None]
            vs = _expand(v[ka:kb], groups).transpose(0, 1)[None]
            o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=causal, scale=scale)
            out[qa:qb] = o[0].transpose(0, 1)
    return out


def pack(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Token ids, positions, cumulative offsets (int32) and the longest length of packed sequences."""
    lens = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    cu = np.zeros(len(seqs) + 1, dtype=np.int32)
    np.cumsum(lens, out=cu[1:])
    ids = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(cu[-1]))
    positions = np.arange(int(cu[-1]), dtype=np.int64) - np.repeat(cu[:-1].astype(np.int64), lens)
    return ids, positions, cu, int(lens.max())


def graph_inputs(ids: np.ndarray, cu: np.ndarray, tokens: int, slots: int) -> tuple[np.ndarray, np.ndarray]:
    """A packed batch padded to a graph's shape: ``ids | positions | last`` (int64) and offsets (int32).

    Unused slots get one padding row each and the last slot the remaining padding rows, so no sequence is
    empty and every row belongs to one; padding never reaches a real row (attention stays within a sequence,
    everything else is row-wise)."""
    n, b = len(ids), len(cu) - 1
    full_cu = np.empty(slots + 1, dtype=np.int32)
    full_cu[: b + 1] = cu
    full_cu[b + 1 : slots] = n + np.arange(1, slots - b, dtype=np.int32)
    full_cu[slots] = tokens
    if full_cu[slots] <= full_cu[slots - 1]:
        raise ValueError(f"{n} tokens in {b} sequences do not fit a graph of {tokens} tokens, {slots} slots")
    lens = np.diff(full_cu).astype(np.int64)
    ints = np.zeros(2 * tokens + slots, dtype=np.int64)
    ints[:n] = ids
    ints[tokens : 2 * tokens] = np.arange(tokens, dtype=np.int64) - np.repeat(
        full_cu[:-1].astype(np.int64), lens
    )
    ints[2 * tokens : 2 * tokens + b] = cu[1:].astype(np.int64) - 1
    return ints, full_cu


class _Graph:
    """A CUDA graph of the whole forward for ``tokens`` packed rows in ``slots`` sequences (the last slot
    takes the padding rows, so every row belongs to a sequence and no slot is empty)."""

    def __init__(self, tokens: int, slots: int, device: torch.device) -> None:
        self.tokens, self.slots = tokens, slots
        self.ints = torch.zeros(
            2 * tokens + slots, dtype=torch.int64, device=device
        )  # ids | positions | last
        cu = np.arange(slots + 1, dtype=np.int32)
        cu[-1] = tokens
        self.cu = torch.from_numpy(cu).to(device)
        self.ints[tokens : 2 * tokens] = torch.arange(tokens, device=device)
        self.ints[2 * tokens :] = self.cu[1:].long() - 1
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    def views(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = self.tokens
        return self.ints[:t], self.ints[t : 2 * t], self.ints[2 * t :]


class PackedQwen3:
    """Runs batches of token-id sequences through the packed forward; one batch at a time (not thread-safe)."""

    def __init__(
        self,
        weights: Weights,
        *,
        head: str,
        compiled: bool,
        cuda_graphs: bool,
        attention: str = "auto",
        graph_tokens: Sequence[int] = GRAPH_TOKENS,
        graph_sequences: Sequence[int] = GRAPH_SEQUENCES,
        inductor_options: dict[str, Any] | None = None,
    ) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.w = weights
        self.head = head
        self.device = weights.embed.device
        self.dtype = weights.embed.dtype
        self.cuda = self.device.type == "cuda"
        self.attention = attention if attention != "auto" else ("auto" if self.cuda else "loop")
        self.attention_timings: dict[str, float] = {}
        self._pre, self._step, self._post = _functions(
            weights, compiled and self.cuda, inductor_options or {}
        )
        self._compiled = compiled and self.cuda
        self._use_graphs = cuda_graphs and self.cuda
        self._graph_tokens = sorted(graph_tokens)
        self._graph_sequences = sorted(graph_sequences)
        self._graphs: dict[tuple[int, int], _Graph] = {}
        self._pool: Any = None

    @property
    def out_width(self) -> int:
        return 1 if self.head == "score" else self.w.hidden

    # -- forward -------------------------------------------------------------------------------------------
    def forward(
        self, ids: torch.Tensor, positions: torch.Tensor, cu: torch.Tensor, last: torch.Tensor, max_len: int
    ) -> torch.Tensor:
        """(B,) logit_yes - logit_no, or (B, hidden) unit vectors, fp32, for the sequences that ``cu`` packs."""
        w = self.w
        x = F.embedding(ids, w.embed)
        freqs = positions.float()[:, None, None] * w.inv_freq  # RoPE angles, once for all layers
        cos, sin = freqs.cos(), freqs.sin()
        mark = torch._dynamo.maybe_mark_dynamic if self._compiled else (lambda t, d: None)
        for t in (x, cos, sin):  # one compiled graph for every token count
            mark(t, 0)
        first = w.layers[0]
        q, k, v = self._pre(x, cos, sin, first.ln1, first.wqkv, first.q_norm, first.k_norm)
        for layer, nxt in zip(w.layers[:-1], w.layers[1:], strict=True):
            a = attention(q, k, v, cu, cu, max_len, max_len, self.attention)
            mark(a, 0)
            x, q, k, v = self._step(
                x, a, cos, sin, layer.wo, layer.ln2, layer.wgu, layer.wdown,
                nxt.ln1, nxt.wqkv, nxt.q_norm, nxt.k_norm,
            )  # fmt: skip
        # Only the last token of each sequence is read out: the last layer attends and runs its MLP for
        # those rows alone (exact: every other row's output would be discarded).
        one_each = torch.arange(len(last) + 1, dtype=torch.int32, device=cu.device)
        a = attention(q[last], k, v, one_each, cu, 1, max_len, self.attention)
        x = x[last]
        mark(x, 0)
        mark(a, 0)
        layer = w.layers[-1]
        x = self._post(x, a, layer.wo, layer.ln2, layer.wgu, layer.wdown)
        h = _rms(x, w.norm, w.eps)
        if w.head is not None and self.head == "score":
            logits = h @ w.head.t()
            return logits[:, 1] - logits[:, 0]
        return F.normalize(h, p=2.0, dim=-1)

    def run(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.cuda.Event | None]:
        """Launch one batch. Returns a host tensor whose first ``len(seqs)`` rows hold the outputs once the
        event (None on CPU) has completed."""
        ids, positions, cu, max_len = pack(seqs)
        n, b = len(ids), len(seqs)
        graph = self._graph_for(n, b) if self._graphs else None
        if not self.cuda:
            out = self.forward(
                torch.from_numpy(ids),
                torch.from_numpy(positions),
                torch.from_numpy(cu),
                torch.from_numpy(cu[1:].astype(np.int64) - 1),
                max_len,
            )
            return out, None
        if graph is None:
            host = torch.from_numpy(
                np.concatenate([ids, positions, cu[1:].astype(np.int64) - 1])
            ).pin_memory()
            dev = host.to(self.device, non_blocking=True)
            cu_dev = torch.from_numpy(cu).pin_memory().to(self.device, non_blocking=True)
            out = self.forward(dev[:n], dev[n : 2 * n], cu_dev, dev[2 * n :], max_len)
        else:
            out = self._replay(graph, ids, positions, cu)
        host_out = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
        host_out.copy_(out, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return host_out, event

    # -- CUDA graphs ---------------------------------------------------------------------------------------
    def _graph_for(self, tokens: int, seqs: int) -> _Graph | None:
        for s in self._graph_sequences:
            if s < seqs:
                continue
            for t in self._graph_tokens:
                # room for one padding row per unused slot plus the padding sequence itself
                if t >= tokens + (s - seqs) + 1 and (t, s) in self._graphs:
                    return self._graphs[(t, s)]
            return None
        return None

    def _replay(self, g: _Graph, ids: np.ndarray, positions: np.ndarray, cu: np.ndarray) -> torch.Tensor:
        ints, full_cu = graph_inputs(ids, cu, g.tokens, g.slots)
        g.ints.copy_(torch.from_numpy(ints).pin_memory(), non_blocking=True)
        g.cu.copy_(torch.from_numpy(full_cu).pin_memory(), non_blocking=True)
        assert g.graph is not None and g.out is not None
        g.graph.replay()
        return g.out

    def _capture(self, tokens: int, seqs: int) -> None:
        g = _Graph(tokens, seqs + 1, self.device)
        ids, positions, last = g.views()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self.forward(ids, positions, g.cu, last, tokens)
        torch.cuda.current_stream().wait_stream(stream)
        g.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g.graph, pool=self._pool, capture_error_mode="thread_local"):
            g.out = self.forward(ids, positions, g.cu, last, tokens)[:seqs]
        self._pool = g.graph.pool()
        self._graphs[(tokens, seqs)] = g

    # -- warm-up ---------------------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Pick the attention kernel, compile, and capture the CUDA graphs (CPU: nothing to do)."""
        if not self.cuda:
            return
        started = time.perf_counter()
        if self.attention == "auto":
            self.attention = self._choose_attention(AUTO_ATTENTION)
        elif self.attention != "loop":
            self.attention = self._choose_attention((self.attention,))
        big = self._graph_tokens[-1] + 17  # eager sizes: compile (one sequence is a special case)
        for lens in ([big // 7] * 6 + [big - 6 * (big // 7)], [big + 1024], [big + 1041 - 99 * 8] + [8] * 99):
            self.run([[1] * n for n in lens])
        torch.cuda.synchronize()
        compiled = time.perf_counter()
        if self._use_graphs and self.attention != "loop":
            for t in self._graph_tokens:
                for s in self._graph_sequences:
                    if t >= s + 1:
                        self._capture(t, s)
        torch.cuda.synchronize()
        logger.info(
            "engine warm-up: attention %s, compile %.1fs, %d CUDA graphs %.1fs",
            self.attention,
            compiled - started,
            len(self._graphs),
            time.perf_counter() - compiled,
        )

    def _choose_attention(self, candidates: Sequence[str]) -> str:
        """The fastest candidate whose output matches the exact per-sequence loop; "loop" if none does."""
        w, gen = self.w, torch.Generator(device="cpu").manual_seed(0)
        ok: dict[str, float] = {}
        for name in candidates:
            try:
                for lengths in ([1, 7, 130, 300, 64, 511, 2], [300] * 48):
                    cu = torch.tensor(
                        [0, *itertools.accumulate(lengths)], dtype=torch.int32, device=self.device
                    )
                    last = (cu[1:] - 1).long()
                    one_each = torch.arange(len(lengths) + 1, dtype=torch.int32, device=self.device)
                    q, k, v = (
                        torch.randn(int(cu[-1]), h, w.head_dim, generator=gen).to(self.device, self.dtype)
                        for h in (w.heads, w.kv_heads, w.kv_heads)
                    )
                    top = max(lengths)
                    for args in ((q, k, v, cu, cu, top, top), (q[last], k, v, one_each, cu, 1, top)):
                        got = attention(*args, name).float()  # type: ignore[arg-type]
                        exact = attention(*(t.float() for t in args[:3]), *args[3:], "loop")  # type: ignore[arg-type]
                        err = (got - exact).abs().max().item()
                        if not err < 2e-2:
                            raise RuntimeError(f"max abs error {err:.3g} against the exact loop")
                ok[name] = _time_ms(lambda n=name: attention(q, k, v, cu, cu, 300, 300, n))  # type: ignore[misc]
            except Exception as exc:  # noqa: BLE001 - an unusable kernel only removes a candidate
                logger.warning("attention backend %s unusable here: %s", name, exc)
        self.attention_timings = ok
        if not ok:
            logger.warning("no variable-length attention kernel passed its check: using the slow exact loop")
            return "loop"
        return min(ok, key=lambda k: ok[k])


def _time_ms(fn: Callable[[], Any], reps: int = 20) -> float:
    for _ in range(3):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / reps
