"""Attention over packed sequences, and the warm-up choice of kernel.

Backends for causal attention within each packed sequence (offsets ``cu``):
- ``triton-*``: this project's Triton kernel (``triton_kernels.varlen_attention``), one config per name;
- ``flash``: PyTorch's variable-length flash kernel (``aten._flash_attention_forward``, grouped heads native);
- ``efficient``: PyTorch's memory-efficient kernel (k/v heads repeated);
- ``loop``: one SDPA call per sequence, exact; what the CPU runs and the reference of the self-checks.
A batch whose sequences all have one length is already the dense (batch, length) layout: ``uniform_attention``
runs dense SDPA (cuDNN on the GPU) on views of it. ``choose_attention`` checks each candidate against the
exact loop on strided inputs laid out as in the forward, and times it, at warm-up.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

VARLEN = ("flash", "efficient")  # PyTorch's own variable-length kernels


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
    items: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention within each packed sequence: q (Tq, H, D), k/v (Tk, Hk, D), offsets (B + 1,) int32.

    Causal when queries and keys are the same rows (``cu_q is cu_k``); otherwise each sequence has one query,
    its last token, which sees every key of its sequence (not for ``triton-*``, which needs ``items``)."""
    scale = q.shape[-1] ** -0.5
    groups = q.shape[1] // k.shape[1]
    causal = cu_q is cu_k
    if backend.startswith("triton"):
        from engine.triton_kernels import ATTENTION_CONFIGS, varlen_attention

        if not causal or items is None:
            raise ValueError("the Triton kernel runs causal attention over its work items only")
        return varlen_attention(q, k, v, cu_q, items, ATTENTION_CONFIGS[backend])
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
    out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
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


def prefixed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu: Sequence[int],
    prefix: Sequence[tuple[int, int]],
    rows: Sequence[int] | None = None,
) -> torch.Tensor:
    """Exact reference for sequences that share a prefix packed elsewhere in the batch: each query of
    sequence ``i`` sees the ``prefix[i] = (first row, length)`` keys, then its own keys causally. ``cu``
    and ``prefix`` are host lists. ``rows`` (one per sequence, or -1 for none): compute only that row of each
    sequence (the last layer) and return those rows, else every row. One SDPA call per sequence."""
    scale = q.shape[-1] ** -0.5
    groups = q.shape[1] // k.shape[1]
    out = torch.empty(
        q.shape if rows is None else (len(cu) - 1, *q.shape[1:]), dtype=q.dtype, device=q.device
    )
    for i, (a, b) in enumerate(itertools.pairwise(cu)):
        ps, pl = prefix[i]
        qa = a if rows is None else rows[i]
        if b <= a or qa < 0:
            continue
        keys = torch.cat([k[ps : ps + pl], k[a:b]])
        values = torch.cat([v[ps : ps + pl], v[a:b]])
        own = torch.arange(qa - a, b - a, device=q.device)[:, None] >= torch.arange(b - a, device=q.device)
        mask = torch.cat([own.new_ones((len(own), pl)), own], dim=1)
        o = F.scaled_dot_product_attention(
            q[qa:b].transpose(0, 1)[None],
            _expand(keys, groups).transpose(0, 1)[None],
            _expand(values, groups).transpose(0, 1)[None],
            attn_mask=mask,
            scale=scale,
        )[0].transpose(0, 1)
        if rows is None:
            out[a:b] = o
        else:
            out[i] = o[-1]
    return out


def uniform_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: int, length: int, kernel: str
) -> torch.Tensor:
    """Causal attention for ``batch`` sequences of one ``length``: packed rows are then already the dense
    (batch, length) layout, and dense SDPA runs on views of them. ``kernel``: "cudnn" (forced, k/v heads
    repeated), "cudnn-gqa" (forced, grouped heads native) or anything else (SDPA's own choice)."""
    n, heads, dim = q.shape
    gqa = kernel != "cudnn"
    if not gqa:
        k, v = _expand(k, heads // k.shape[1]), _expand(v, heads // k.shape[1])
    qs, ks, vs = (t.view(batch, length, -1, dim).transpose(1, 2) for t in (q, k, v))
    with contextlib.ExitStack() as stack:
        if kernel.startswith("cudnn"):
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([SDPBackend.CUDNN_ATTENTION]))
        o = F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=dim**-0.5, enable_gqa=gqa)
    return o.transpose(1, 2).reshape(n, heads, dim)


# -- the warm-up choice ----------------------------------------------------------------------------------
@dataclass
class Choice:
    varlen: str  # causal attention over packed sequences
    last: str  # one query per sequence (the last layer): flash, efficient or loop
    uniform: str | None  # dense kernel for equal lengths, where it beats ``varlen``
    timings: dict[str, float] = field(default_factory=dict)  # ms, one layer of 48 sequences of 150-449 tokens


def random_batch(
    lengths: list[int], heads: int, kv_heads: int, dim: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, ...]:
    """q, k, v as strided views of one fused q/k/v product (as the forward lays them out), offsets."""
    gen = torch.Generator(device="cpu").manual_seed(len(lengths))
    n = sum(lengths)
    qkv = torch.randn(n, (heads + 2 * kv_heads) * dim, generator=gen).to(device, dtype)
    q, k, v = qkv.split([heads * dim, kv_heads * dim, kv_heads * dim], dim=1)
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device=device)
    return q.view(n, heads, dim), k.view(n, kv_heads, dim), v.view(n, kv_heads, dim), cu


def choose_attention(
    candidates: Sequence[str],
    make_batch: Callable[[list[int]], tuple[torch.Tensor, ...]],
    make_items: Callable[[str, torch.Tensor], torch.Tensor | None],
    shared_head: int = 0,
) -> Choice:
    """The fastest causal kernel among ``candidates`` that matches the exact loop ("loop" if none does), the
    fastest of PyTorch's for one query per sequence, and whether dense cuDNN wins on equal lengths.

    Timed on one query's candidates (48 sequences of 150-449 tokens). With ``shared_head`` (a reranker: its
    pairs share the template head), the Triton kernels are timed as they run such a batch, the head once and
    the rest after it; PyTorch's kernels, which cannot read a shared head, on the whole sequences."""
    timings: dict[str, float] = {}
    equal: dict[str, float] = {}  # on 48 x 300: what dense attention for equal lengths is measured against
    last_ok: list[str] = []
    mixed = [150 + (i * 97) % 300 for i in range(48)]  # 150-449 tokens: one query's candidates
    for name in candidates:
        try:
            for lengths in ([1, 7, 130, 300, 64, 511, 2], mixed, [300] * 48):
                q, k, v, cu = make_batch(lengths)
                items = make_items(name, cu)
                qf, kf, vf = q.float(), k.float(), v.float()
                top = max(lengths)
                _check(
                    attention(q, k, v, cu, cu, top, top, name, items),
                    attention(qf, kf, vf, cu, cu, top, top, "loop"),
                )
                if name in VARLEN:
                    last, each = (
                        (cu[1:] - 1).long(),
                        torch.arange(len(lengths) + 1, dtype=torch.int32, device=cu.device),
                    )
                    _check(
                        attention(q[last], k, v, each, cu, 1, top, name),
                        attention(qf[last], kf, vf, each, cu, 1, top, "loop"),
                    )
                if lengths is mixed:
                    run: Callable[[], Any] = functools.partial(
                        attention, q, k, v, cu, cu, top, top, name, items
                    )
                    if shared_head and name.startswith("triton"):
                        run = _after_shared_head(name, mixed, shared_head, make_batch, make_items)
                    timings[name] = time_ms(run)
            equal[name] = time_ms(functools.partial(attention, q, k, v, cu, cu, 300, 300, name, items))
            if name in VARLEN:
                last_ok.append(name)
        except Exception as exc:  # noqa: BLE001 - an unusable kernel only removes a candidate
            logger.warning("attention kernel %s unusable here: %s", name, exc)
    if not timings:
        logger.warning("no variable-length attention kernel passed its check: using the slow exact loop")
        return Choice("loop", "loop", None, timings)
    varlen = min(timings, key=timings.__getitem__)
    best, uniform = equal[varlen], None
    q, k, v, cu = make_batch([300] * 48)
    exact = attention(q.float(), k.float(), v.float(), cu, cu, 300, 300, "loop")
    for kernel in ("cudnn-gqa", "cudnn"):
        try:
            _check(uniform_attention(q, k, v, 48, 300, kernel), exact)
            equal[kernel] = time_ms(functools.partial(uniform_attention, q, k, v, 48, 300, kernel))
            if equal[kernel] < best:
                best, uniform = equal[kernel], kernel
        except Exception as exc:  # noqa: BLE001
            logger.warning("dense attention %s unusable here: %s", kernel, exc)
    one_query = min(last_ok, key=timings.__getitem__) if last_ok else "loop"
    timings |= {f"{name} (48 x 300)": ms for name, ms in equal.items()}
    return Choice(varlen, one_query, uniform, timings)


def _after_shared_head(
    name: str,
    lengths: list[int],
    head: int,
    make_batch: Callable[[list[int]], tuple[torch.Tensor, ...]],
    make_items: Callable[[str, torch.Tensor], torch.Tensor | None],
) -> Callable[[], Any]:
    """The Triton kernel ``name`` over ``lengths`` laid out as the engine lays out pairs after a shared head:
    the head once, then each sequence's own tokens, which see the head's keys first."""
    from engine.triton_kernels import ATTENTION_CONFIGS, varlen_attention

    q, k, v, cu = make_batch([head] + [n - head for n in lengths])
    table = torch.tensor([[0, 0]] + [[0, head]] * len(lengths), dtype=torch.int32, device=cu.device)
    items = make_items(name, cu)
    assert items is not None
    return functools.partial(varlen_attention, q, k, v, cu, items, ATTENTION_CONFIGS[name], table)


def _check(got: torch.Tensor, exact: torch.Tensor) -> None:
    err = (got.float() - exact).abs().max().item()
    if not err < 2e-2:
        raise RuntimeError(f"max abs error {err:.3g} against the exact per-sequence loop")


def time_ms(fn: Callable[[], Any], reps: int = 20) -> float:
    """Mean milliseconds of one call of ``fn`` on the current CUDA stream (3 calls warm up)."""
    for _ in range(3):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / reps
