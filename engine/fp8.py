"""FP8 (e4m3) products for the packed Qwen3 forward, and the warm-up step that decides whether they serve.

Weights are quantised once, per output channel (``quantize_weight``: each row of a (N, K) weight gets the
scale amax / 448); activations per token on the fly (``quantize_rows``, or on the Triton path inside the
RMSNorm and SwiGLU kernels that produce them: ``triton_kernels.rms_norm_fp8`` / ``silu_mul_fp8``). A product
is ``torch._scaled_mm(a_q, w_q.t(), scale_a=(M, 1), scale_b=(1, N), out_dtype=bf16)``: a row-major e4m3
activation times a column-major e4m3 weight (the transpose of the contiguous (N, K) weight, which is what
cuBLAS's FP8 kernels take on Hopper), K and N multiples of 16, fp32 scales, contiguous. The four products
of each layer (q/k/v, o, gate/up, down) run in FP8; embeddings, attention, norms, RoPE and the residual
stream stay bf16, and the two LM-head rows fp32. On CPU (tests only: ``emulate``) a product is
dequantise-then-matmul in fp32, the same arithmetic up to accumulation order.

``choose`` runs at warm-up (``runner.PackedQwen3.warm_up``) when FP8 is asked for: where the device has no
FP8 products (CPU, compute capability < 8.9, a torch without ``_scaled_mm`` row-wise scaling) or the
element-wise kernels are ``compile``, it keeps bf16 and says why; otherwise it scores a probe batch in bf16
and in FP8 (Triton quantisation with fast accumulation first, then exact accumulation, then torch's
quantisation) and keeps the first FP8 setup that meets ``precision.Gate``.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.attention import attention
from engine.precision import Gate, GateResult, PrecisionChoice, embedding_gate, score_gate

logger = logging.getLogger(__name__)

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
Act = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # bf16 rows, or e4m3 rows and their (M, 1) scales


@dataclass(frozen=True)
class Fp8Weight:
    """A (N, K) weight as e4m3 with one fp32 scale per output channel; products come out in ``dtype``."""

    q: torch.Tensor  # (N, K) float8_e4m3fn, contiguous
    scale: torch.Tensor  # (1, N) float32, contiguous
    dtype: torch.dtype

    @property
    def shape(self) -> torch.Size:
        return self.q.shape


@dataclass(frozen=True)
class Fp8Layer:
    wqkv: Fp8Weight
    wo: Fp8Weight
    wgu: Fp8Weight
    wdown: Fp8Weight


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of ``x`` as e4m3 and its fp32 scale (amax / 448, shape (M, 1)): x ~= q * scale."""
    xf = x.float()
    scale = xf.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / E4M3_MAX
    q = (xf / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return q.contiguous(), scale.contiguous()


def quantize_weight(w: torch.Tensor, dtype: torch.dtype | None = None) -> Fp8Weight:
    """A (N, K) weight per output channel: ``w ~= q * scale.t()``."""
    q, scale = quantize_rows(w)
    return Fp8Weight(q, scale.reshape(1, -1).contiguous(), dtype or w.dtype)


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """fp32 values of e4m3 rows (``scale`` (M, 1)) or columns (``scale`` (1, N) with ``q`` (N, K))."""
    if scale.shape[0] == 1 and q.shape[0] != 1:
        scale = scale.t()
    return q.float() * scale


def fp8_linear(x: Act, w: Fp8Weight, fast_accum: bool = False) -> torch.Tensor:
    """``F.linear(x, w)`` with both sides in e4m3 (``x`` quantised per row here unless it already is).
    CUDA: ``torch._scaled_mm``; elsewhere (tests): dequantise, then an fp32 product rounded to ``w.dtype``."""
    q, scale = quantize_rows(x) if isinstance(x, torch.Tensor) else x
    if q.device.type != "cuda":
        return (dequantize(q, scale) @ dequantize(w.q, w.scale).t()).to(w.dtype)
    return torch._scaled_mm(
        q, w.q.t(), scale_a=scale, scale_b=w.scale, out_dtype=w.dtype, use_fast_accum=fast_accum
    )


def quantize_layers(weights: Any) -> tuple[Fp8Layer, ...]:
    """Each layer's four products of ``qwen3_math.Weights`` in e4m3 (the bf16 originals stay until the
    gate has decided: its reference runs on them; ``keep_only_fp8_products`` then drops them)."""
    dtype = weights.embed.dtype
    return tuple(
        Fp8Layer(*(quantize_weight(getattr(layer, n), dtype) for n in ("wqkv", "wo", "wgu", "wdown")))
        for layer in weights.layers
    )


PRODUCTS = ("wqkv", "wo", "wgu", "wdown")


def keep_only_fp8_products(weights: Any, state: Fp8State) -> Any:
    """``weights`` whose layers hold the e4m3 tensors of ``state`` in place of their bf16 products: once FP8
    serves, nothing reads the bf16 ones (the kernel checks and the gate ran before), so the engine keeps
    one copy of each product, the e4m3 one (with its scales in ``state``); a bf16 read would fail loudly."""
    layers = tuple(
        dataclasses.replace(layer, **{n: getattr(f, n).q for n in PRODUCTS})
        for layer, f in zip(weights.layers, state.layers, strict=True)
    )
    return dataclasses.replace(weights, layers=layers)


def unsupported_reason(device: torch.device) -> str | None:
    """Why FP8 products cannot run on ``device``, or None where they can."""
    if device.type != "cuda":
        return f"FP8 products need a CUDA GPU of compute capability 8.9 or newer; the engine runs on {device}"
    if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
        return f"torch {torch.__version__} has no FP8 products (torch._scaled_mm)"
    major, minor = torch.cuda.get_device_capability(device)
    name = torch.cuda.get_device_name(device)
    if (major, minor) < (8, 9):
        return f"FP8 products need compute capability 8.9 or newer (Ada, Hopper); {name} is {major}.{minor}"
    try:  # row-wise scales need cuBLAS 12.9+ on Hopper, or CUTLASS kernels this torch may not carry
        a = quantize_rows(torch.randn(32, 64, device=device))
        fp8_linear(a, quantize_weight(torch.randn(16, 64, device=device), torch.bfloat16))
        torch.cuda.synchronize(device)
    except Exception as exc:  # noqa: BLE001 - any failure means: not here
        return f"torch._scaled_mm with row-wise scales fails on {name} ({type(exc).__name__}: {exc})"
    return None


class Fp8State:
    """The FP8 setup a runner uses: quantised layers, where activations are quantised, accumulation."""

    def __init__(self, layers: tuple[Fp8Layer, ...], triton_quant: bool, fast_accum: bool) -> None:
        self.layers = layers
        self.triton_quant = triton_quant
        self.fast_accum = fast_accum

    def describe(self) -> str:
        quant = "Triton" if self.triton_quant else "torch"
        return f"e4m3, {quant} quantisation, {'fast' if self.fast_accum else 'exact'} accumulation"

    def mm(self, x: Act, w: Fp8Weight) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            x = self.quant(x)
        return fp8_linear(x, w, self.fast_accum)

    def quant(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.triton_quant:
            from engine.triton_kernels import quantize_rows_fp8

            return quantize_rows_fp8(x)
        return quantize_rows(x)

    def norm(self, x: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, eps: float) -> Act:
        """(``x += y``, then) RMSNorm, quantised per row."""
        from engine import triton_kernels as tk

        if self.triton_quant:
            return tk.rms_norm_fp8(x, y, w, eps)
        h = tk.rms_norm(x, w, eps, x.dtype) if y is None else tk.add_rms_norm_(x, y, w, eps)
        return quantize_rows(h)

    def silu(self, gu: torch.Tensor) -> Act:
        from engine import triton_kernels as tk

        return tk.silu_mul_fp8(gu) if self.triton_quant else quantize_rows(tk.silu_mul(gu))


def layers_fused(runner: Any, x: torch.Tensor, positions: torch.Tensor, cu: torch.Tensor,
                 last: torch.Tensor, max_len: int, items: torch.Tensor | None, uniform: bool,
                 shared: Any = None) -> torch.Tensor:  # fmt: skip
    """``PackedQwen3._layers_fused`` with FP8 products: the residual adds move from the products'
    epilogues into the next RMSNorm (``_scaled_mm`` has no accumulate-into-output)."""
    from engine import triton_kernels as tk

    state: Fp8State = runner.fp8
    w, b = runner.w, len(last)
    heads, kv, dim, eps = w.heads, w.kv_heads, w.head_dim, w.eps
    if runner._rope is None:
        runner._rope = tk.rope_tables(w.inv_freq, w.max_positions)
    cos, sin = runner._rope
    h = state.norm(x, None, w.layers[0].ln1, eps)
    for i, layer in enumerate(w.layers):
        f = state.layers[i]
        qkv = state.mm(h, f.wqkv)
        tk.qk_norm_rope_(qkv, positions, cos, sin, layer.q_norm, layer.k_norm, heads, kv, eps)
        q = qkv[:, : heads * dim].unflatten(1, (heads, dim))
        k = qkv[:, heads * dim : (heads + kv) * dim].unflatten(1, (kv, dim))
        v = qkv[:, (heads + kv) * dim :].unflatten(1, (kv, dim))
        if i + 1 < len(w.layers):
            a = runner._attend(q, k, v, cu, max_len, items, b, uniform, shared)
        elif shared is not None:  # the last layer, after shared prefixes: the rows read out only
            a = runner._attend_shared(q, k, v, cu, items, shared, last)
            x = x[last]
        else:  # the last layer: each sequence's last token only
            one_each = torch.arange(b + 1, dtype=torch.int32, device=cu.device)
            a = attention(q[last], k, v, one_each, cu, 1, max_len, runner.last_attention)
            x = x[last]
        o = state.mm(a.reshape(a.shape[0], -1), f.wo)
        h = state.norm(x, o, layer.ln2, eps)
        down = state.mm(state.silu(state.mm(h, f.wgu)), f.wdown)
        if i + 1 < len(w.layers):
            h = state.norm(x, down, w.layers[i + 1].ln1, eps)
        else:
            x.add_(down)
    return x


# -- the warm-up decision ----------------------------------------------------------------------------------
TEMPLATE_HEAD, TEMPLATE_SUFFIX = 72, 9  # Qwen3-Reranker's template around a document (shared head, suffix)


def probe_batch(head: str, vocab: int, queries: int, docs: int, seed: int = 0) -> list[list[np.ndarray]]:
    """Random token ids shaped like the traffic: per query, its documents after one shared template head
    (score head: 100-300 document tokens), or groups of chunks of 32-512 tokens (embedding head)."""
    rng = np.random.default_rng(seed)
    top = min(vocab, 151643)
    groups = []
    for _ in range(queries):
        if head == "score":
            first = rng.integers(0, top, TEMPLATE_HEAD)
            tail = rng.integers(0, top, TEMPLATE_SUFFIX)
            lengths = rng.integers(100, 301, docs)
            groups.append([np.concatenate([first, rng.integers(0, top, int(n)), tail]) for n in lengths])
        else:
            groups.append([rng.integers(0, top, int(n)) for n in rng.integers(32, 513, docs)])
    return groups


def _score(runner: Any, groups: list[list[np.ndarray]], budget: int) -> list[np.ndarray]:
    flat = [s for g in groups for s in g]
    out: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    tokens = 0
    for seq in flat:
        if batch and tokens + len(seq) > budget:
            out.append(runner._run_sync(batch).float().numpy())
            batch, tokens = [], 0
        batch.append(seq)
        tokens += len(seq)
    out.append(runner._run_sync(batch).float().numpy())
    values = np.concatenate(out)
    sizes = np.cumsum([len(g) for g in groups])[:-1]
    return np.split(values, sizes)


def choose(runner: Any, asked: str, gate: Gate, probe: tuple[int, int], budget: int,
           emulate: bool = False) -> PrecisionChoice:  # fmt: skip
    """Sets ``runner.fp8`` (None for bf16) and returns the precision in use and why."""
    runner.fp8 = None
    if asked != "fp8":
        return PrecisionChoice(asked, "bf16", "bf16 was asked for")
    why = None if emulate else unsupported_reason(runner.device)
    if why is None and runner.kernels not in ("triton", "eager"):
        why = f"FP8 runs with the Triton (or eager) element-wise kernels; this engine uses {runner.kernels!r}"
    if why is not None:
        return PrecisionChoice(asked, "bf16", f"{why}: serving bf16")
    groups = probe_batch(runner.head, runner.w.vocab, *probe)
    tokens = sum(len(s) for g in groups for s in g)
    what = f"{probe[0]} groups x {probe[1]} sequences, {tokens:,} tokens"
    budget = max(budget or 16384, max(len(s) for g in groups for s in g))
    reference = _score(runner, groups, budget)
    layers = quantize_layers(runner.w)
    result: GateResult | None = None
    failures = []
    for triton_quant in (True, False) if runner.kernels == "triton" else (False,):
        for fast_accum in (True, False) if runner.cuda else (False,):  # (emulated: exact)
            state = runner.fp8 = Fp8State(layers, triton_quant, fast_accum)
            try:
                candidate = _score(runner, groups, budget)
            except Exception as exc:  # noqa: BLE001 - a setup that cannot run here is not a candidate
                logger.warning("FP8 setup (%s) failed: %s", state.describe(), exc)
                failures.append(f"{state.describe()}: {type(exc).__name__}")
                break
            if runner.head == "score":
                result = score_gate(reference, candidate, gate, what)
            else:
                result = embedding_gate(np.concatenate(reference), np.concatenate(candidate), gate, what)
            logger.info("FP8 gate, %s: %s", state.describe(), result.summary())
            if result.passed:
                why = f"FP8 ({state.describe()}) gate {result.summary()}"
                return PrecisionChoice(asked, "fp8", why, result)
    runner.fp8 = None
    if result is None:
        return PrecisionChoice(asked, "bf16", f"FP8 failed to run ({'; '.join(failures)}): serving bf16")
    return PrecisionChoice(asked, "bf16", f"FP8 missed its accuracy gate ({result.summary()}): serving bf16",
                           result)  # fmt: skip
