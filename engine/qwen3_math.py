"""The math of the packed Qwen3 forward: weights laid out for it, and the element-wise stretches in torch.

Per layer: RMSNorm, one fused q/k/v product, per-head q/k RMSNorm, RoPE, attention, o_proj, residual, RMSNorm,
one fused gate/up product, SwiGLU, down_proj, residual. The gate/up weights exist once, gate and up rows
interleaved (row 2c: gate column c, row 2c + 1: up column c; ``interleave_gate_up``), the layout the Triton
product with SwiGLU in its epilogue reads; every other path reads it too (``split_gate_up``), so no second
copy of the largest weights is ever made. Norms, RoPE and SwiGLU are computed in fp32 and
rounded once to the weights' dtype; the residual stream keeps the embeddings' dtype.

The torch functions here are what the CPU runs (eager) and what ``torch.compile`` fuses on CUDA when the
Triton kernels of ``triton_kernels`` are not used: ``pre`` (norm, q/k/v, q/k norm + RoPE), ``post`` (o_proj,
residual, norm, MLP, residual) and ``step`` (``post`` then the next layer's ``pre``, one compiled region).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from engine.fp8 import fp8_linear

HEADS = ("score", "embedding")


@dataclass(frozen=True)
class Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor  # (q + k + v, hidden)
    q_norm: torch.Tensor
    k_norm: torch.Tensor
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: torch.Tensor  # (2 * intermediate, hidden): gate and up rows interleaved (``interleave_gate_up``)
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
                wgu=put(interleave_gate_up(mlp.gate_proj.weight, mlp.up_proj.weight)),
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


def interleave_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(I, K) gate and up weights -> (2 I, K) with gate and up rows alternating (one copy of each)."""
    return torch.stack((gate.detach(), up.detach()), dim=1).reshape(2 * gate.shape[0], gate.shape[1])


def split_gate_up(gu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gate and up columns of a product with interleaved gate/up weights: (n, 2 I) -> two (n, I) views."""
    pairs = gu.unflatten(-1, (-1, 2))
    return pairs[..., 0], pairs[..., 1]


def weight_bytes(weights: Weights) -> int:
    """Bytes of every tensor the engine holds for the model (one storage counted once); where FP8 serves,
    the products are its e4m3 tensors (their per-row scales, ~0.1 %, live in ``fp8.Fp8State``)."""
    seen: dict[int, int] = {}
    tensors = [weights.embed, weights.norm, weights.inv_freq]
    tensors += [weights.head] if weights.head is not None else []
    for layer in weights.layers:
        tensors += [getattr(layer, f.name) for f in dataclasses.fields(layer)]
    for t in tensors:
        if t.device.type == "meta":  # no storage to share: its own size
            seen[id(t)] = t.numel() * t.element_size()
        else:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def expected_weight_bytes(
    config: Any, head: str, dtype: torch.dtype = torch.bfloat16, vocab: int | None = None
) -> int:
    """What ``weight_bytes`` is for a Qwen3 config (a transformers config or a dict of its fields): every
    product and the embeddings in ``dtype``, norms and the score head's two LM-head rows in fp32."""
    c = config if isinstance(config, dict) else config.to_dict()
    hidden, inter, layers = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"]
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    dim = c.get("head_dim") or hidden // heads
    size = torch.empty((), dtype=dtype).element_size()
    products = (heads + 2 * kv) * dim * hidden + heads * dim * hidden + 3 * inter * hidden
    norms = 2 * hidden + 2 * dim  # per layer, fp32
    total = size * ((vocab or c["vocab_size"]) * hidden + layers * products)
    total += 4 * (layers * norms + hidden + dim // 2)  # + the final norm and RoPE's inverse frequencies
    return total + (4 * 2 * hidden if head == "score" else 0)


# -- the math --------------------------------------------------------------------------------------------
def rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm in fp32 (not rounded)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def norm_rope(
    t: torch.Tensor, w: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, eps: float
) -> torch.Tensor:
    """Per-head RMSNorm, then RoPE (rotate-half layout), fp32."""
    t = rms(t, w, eps)
    half = t.shape[-1] // 2
    t1, t2 = t[..., :half], t[..., half:]
    return torch.cat((t1 * cos - t2 * sin, t2 * cos + t1 * sin), dim=-1)


def head_out(w: Weights, head: str, x: torch.Tensor) -> torch.Tensor:
    """Final norm, then logit_yes - logit_no ("score") or the unit vector ("embedding"), fp32."""
    h = rms(x, w.norm, w.eps)
    if w.head is not None and head == "score":
        logits = h @ w.head.t()
        return logits[:, 1] - logits[:, 0]
    return F.normalize(h, p=2.0, dim=-1)


def linear(x: torch.Tensor, w: Any) -> torch.Tensor:
    """``F.linear(x, w)``; ``w`` may be an ``fp8.Fp8Weight`` (the eager path only: compiled functions
    always get tensors)."""
    return F.linear(x, w) if isinstance(w, torch.Tensor) else fp8_linear(x, w)


def _make_pre(heads: int, kv_heads: int, head_dim: int, eps: float) -> Callable[..., Any]:
    def pre(x, cos, sin, ln1, wqkv, q_norm, k_norm):  # type: ignore[no-untyped-def]
        n = x.shape[0]
        qkv = linear(rms(x, ln1, eps).to(wqkv.dtype), wqkv)
        q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], dim=-1)
        q = norm_rope(q.view(n, heads, head_dim), q_norm, cos, sin, eps).to(wqkv.dtype)
        k = norm_rope(k.view(n, kv_heads, head_dim), k_norm, cos, sin, eps).to(wqkv.dtype)
        return q, k, v.reshape(n, kv_heads, head_dim)

    return pre


def _make_post(eps: float) -> Callable[..., Any]:
    def post(x, attn, wo, ln2, wgu, wdown):  # type: ignore[no-untyped-def]
        x = x + linear(attn.reshape(x.shape[0], -1), wo).to(x.dtype)
        gate, up = split_gate_up(linear(rms(x, ln2, eps).to(wgu.dtype), wgu))
        return x + linear((F.silu(gate.float()) * up.float()).to(wgu.dtype), wdown).to(x.dtype)

    return post


def _make_step(pre: Callable[..., Any], post: Callable[..., Any]) -> Callable[..., Any]:
    def step(x, attn, cos, sin, wo, ln2, wgu, wdown, ln1, wqkv, q_norm, k_norm):  # type: ignore[no-untyped-def]
        x = post(x, attn, wo, ln2, wgu, wdown)
        return (x, *pre(x, cos, sin, ln1, wqkv, q_norm, k_norm))

    return step


_COMPILED: dict[tuple[Any, ...], tuple[Callable[..., Any], ...]] = {}
_COMPILED_LOCK = threading.Lock()


def layer_functions(w: Weights, compiled: bool, options: dict[str, Any]) -> tuple[Callable[..., Any], ...]:
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
