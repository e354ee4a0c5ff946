"""Triton kernels of the packed Qwen3 forward on CUDA: each stretch between two cuBLAS products is one kernel.

- ``rms_norm`` / ``add_rms_norm_``: (residual add in place, then) RMSNorm, one pass over the rows (the
  runner adds the residual in the cuBLAS epilogue instead; ``add_rms_norm_`` stays for the benchmarks).
- ``qk_norm_rope_``: per-head RMSNorm + RoPE of q and k, in place in the fused q/k/v product (v untouched),
  so q, k and v stay strided views of that product: one read and one write of q and k, no copies; cos/sin
  are looked up by position in tables built once (``rope_tables``).
- ``silu_mul``: SwiGLU of the fused gate/up product; ``swiglu_gemm``: the product with SwiGLU in its
  epilogue. Gate/up weights are interleaved row by row (``interleave_gate_up``; the engine's only layout of
  them), so the product's gate and up columns alternate and every SwiGLU here reads them in pairs.
- ``rms_norm_fp8`` / ``silu_mul_fp8`` / ``quantize_rows_fp8``: the same stretches (and a plain cast) ending
  in e4m3 with one fp32 scale per row, what ``torch._scaled_mm`` reads (``engine.fp8``).
- ``varlen_attention``: causal flash attention within each packed sequence, grouped-query heads native.
  Work items are (sequence, query block) pairs listed on the host (``attention_items``), heaviest first,
  so the grid depends on the token count only (a CUDA graph can hold it) and no program idles on padding.

Each kernel computes what ``qwen3_math`` computes in torch, in fp32, rounded once to the tensors' dtype.
With ``TRITON_INTERPRET=1`` set before import they run on CPU tensors (slowly): what the CPU test uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634


@dataclass(frozen=True)
class AttentionConfig:
    block_m: int  # query positions per program
    block_n: int  # keys per step
    warps: int
    stages: int
    pack: bool = False  # one program per key/value head: its query heads share each key/value tile


# Candidates timed at warm-up (``attention.choose_attention``); names are attention backends. One layer of
# 50 pairs after a 72-token shared head (0.6B heads), H200 / H100: gqa-m64n32 0.129 / 0.134 ms, gqa-m32n32
# 0.132 / 0.139, m64n64 0.150 / 0.150, m128n64 0.181 / 0.182 (``tests/benchmarks/bench_kernels.py``).
ATTENTION_CONFIGS = {
    "triton-m64n64": AttentionConfig(64, 64, 4, 3),
    "triton-m64n32": AttentionConfig(64, 32, 4, 3),
    "triton-m128n64": AttentionConfig(128, 64, 8, 3),
    "triton-gqa-m64n64": AttentionConfig(64, 64, 8, 3, pack=True),
    "triton-gqa-m64n64w4": AttentionConfig(64, 64, 4, 3, pack=True),
    "triton-gqa-m32n32": AttentionConfig(32, 32, 4, 3, pack=True),
    "triton-gqa-m64n32": AttentionConfig(64, 32, 4, 3, pack=True),
}


# -- norms -----------------------------------------------------------------------------------------------
@triton.jit
def _rms_kernel(X, Y, W, OUT, n_cols, eps, HAS_Y: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * n_cols + cols, mask=mask, other=0.0)
    if HAS_Y:  # residual: x += y, rounded to the stream's dtype, then normalised
        y = tl.load(Y + row * n_cols + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + y.to(tl.float32)).to(X.dtype.element_ty)
        tl.store(X + row * n_cols + cols, x, mask=mask)
    xf = x.to(tl.float32)
    r = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
    w = tl.load(W + cols, mask=mask, other=0.0)
    tl.store(OUT + row * n_cols + cols, (xf * r * w).to(OUT.dtype.element_ty), mask=mask)


def _norm(
    x: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    n, cols = x.shape
    assert x.is_contiguous() and (y is None or (y.is_contiguous() and y.shape == x.shape))
    out = torch.empty((n, cols), dtype=dtype, device=x.device)
    block = triton.next_power_of_2(cols)
    _rms_kernel[(n,)](
        x, x if y is None else y, w, out, cols, eps, HAS_Y=y is not None, BLOCK=block,
        num_warps=max(1, min(8, block // 256)),
    )  # fmt: skip
    return out


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """RMSNorm of each row, rounded to ``dtype``."""
    return _norm(x, None, w, eps, dtype)


def add_rms_norm_(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """``x += y`` in place (rounded to x's dtype), then RMSNorm of the new x, rounded to y's dtype."""
    return _norm(x, y, w, eps, y.dtype)


# -- q/k norm + RoPE -------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["n"])
def _qk_norm_rope_kernel(
    QKV, POS, COS, SIN, QW, KW, n, row_stride, eps,
    HEADS: tl.constexpr, HALF: tl.constexpr, G: tl.constexpr, BT: tl.constexpr,
):  # fmt: skip
    # program (BT rows, G heads: all q or all k): one (BT, G, HALF) tile per half, each row's cos/sin read
    # once per G heads
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    first = tl.program_id(1) * G  # q heads first, then k heads
    inside = rows < n
    mask = inside[:, None, None]
    d = tl.arange(0, HALF)
    pos = tl.load(POS + rows, mask=inside, other=0).to(tl.int64)
    trig = pos[:, None, None] * HALF + d[None, None, :]
    c = tl.load(COS + trig)
    s = tl.load(SIN + trig)
    cols = (first + tl.arange(0, G)) * (2 * HALF)
    base = QKV + rows.to(tl.int64)[:, None, None] * row_stride + cols[None, :, None] + d[None, None, :]
    t1 = tl.load(base, mask=mask, other=0.0).to(tl.float32)
    t2 = tl.load(base + HALF, mask=mask, other=0.0).to(tl.float32)
    r = 1.0 / tl.sqrt((tl.sum(t1 * t1, axis=2) + tl.sum(t2 * t2, axis=2)) / (2 * HALF) + eps)
    is_q = first < HEADS
    w1 = tl.where(is_q, tl.load(QW + d), tl.load(KW + d))[None, None, :]
    w2 = tl.where(is_q, tl.load(QW + HALF + d), tl.load(KW + HALF + d))[None, None, :]
    a = t1 * r[:, :, None] * w1
    b = t2 * r[:, :, None] * w2
    tl.store(base, (a * c - b * s).to(QKV.dtype.element_ty), mask=mask)
    tl.store(base + HALF, (b * c + a * s).to(QKV.dtype.element_ty), mask=mask)


QK_ROWS = 8  # rows per program of ``qk_norm_rope_`` (H200, 12k rows: 4 0.045 ms, 8 0.044, 16 0.053, 32 0.067)


def rope_tables(inv_freq: torch.Tensor, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's RoPE angles, (positions, D / 2) fp32: what ``qk_norm_rope_`` reads."""
    freqs = torch.arange(positions, device=inv_freq.device).float()[:, None] * inv_freq
    return freqs.cos().contiguous(), freqs.sin().contiguous()


def qk_norm_rope_(
    qkv: torch.Tensor,
    positions: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    q_norm: torch.Tensor,
    k_norm: torch.Tensor,
    heads: int,
    kv_heads: int,
    eps: float,
    rows: int = QK_ROWS,
) -> None:
    """In place on the q and k columns of ``qkv`` (n, (heads + 2 kv_heads) * D); ``positions`` (n,) int64
    index the tables of ``rope_tables`` (cos/sin (P, D / 2) fp32)."""
    n = qkv.shape[0]
    half = cos.shape[1]
    assert qkv.stride(1) == 1 and cos.is_contiguous() and sin.is_contiguous() and positions.shape == (n,)
    assert qkv.shape[1] == (heads + 2 * kv_heads) * 2 * half
    group = 8  # heads per program: a power of two that divides both head counts
    while heads % group or kv_heads % group:
        group //= 2
    _qk_norm_rope_kernel[(triton.cdiv(n, rows), (heads + kv_heads) // group)](
        qkv, positions, cos, sin, q_norm, k_norm, n, qkv.stride(0), eps,
        HEADS=heads, HALF=half, G=group, BT=rows, num_warps=4,
    )  # fmt: skip


# -- SwiGLU ----------------------------------------------------------------------------------------------
@triton.jit(do_not_specialize=["n"])
def _silu_mul_kernel(GU, OUT, n, inter, BT: tl.constexpr, BC: tl.constexpr):
    # GU (n, 2 inter) with gate and up columns interleaved: one contiguous (BT, 2 BC) tile, split in pairs
    rows = tl.program_id(0) * BT + tl.arange(0, BT)
    wide = tl.program_id(1) * 2 * BC + tl.arange(0, 2 * BC)
    mask = (rows < n)[:, None] & (wide < 2 * inter)[None, :]
    gu = tl.load(GU + rows.to(tl.int64)[:, None] * (2 * inter) + wide[None, :], mask=mask, other=0.0)
    g, u = tl.split(tl.reshape(gu.to(tl.float32), (BT, BC, 2)))
    out = g * tl.sigmoid(g) * u
    cols = tl.program_id(1) * BC + tl.arange(0, BC)
    keep = (rows < n)[:, None] & (cols < inter)[None, :]
    tl.store(
        OUT + rows.to(tl.int64)[:, None] * inter + cols[None, :], out.to(OUT.dtype.element_ty), mask=keep
    )


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up of a (n, 2 * I) product with gate/up columns interleaved, rounded to its dtype."""
    n, width = gu.shape
    assert gu.is_contiguous() and width % 2 == 0
    inter = width // 2
    out = torch.empty((n, inter), dtype=gu.dtype, device=gu.device)
    bt, bc = 16, 256  # (16, 512) of the product per program
    _silu_mul_kernel[(triton.cdiv(n, bt), triton.cdiv(inter, bc))](
        gu, out, n, inter, BT=bt, BC=bc, num_warps=4
    )
    return out


# -- FP8 (e4m3) activations, one scale per row (``engine.fp8``) ----------------------------------------------
FP8_MAX = 448.0  # the largest finite e4m3 value


@triton.jit
def _store_fp8_row(y, mask, OUT, S, row, n_cols, cols, FMAX: tl.constexpr):
    # y: one row in fp32; stored as y / scale in e4m3 with scale = amax / FMAX (in S[row])
    amax = tl.max(tl.where(mask, tl.abs(y), 0.0), axis=0)
    scale = tl.maximum(amax, 1e-12) / FMAX
    q = tl.minimum(tl.maximum(y / scale, -FMAX), FMAX)
    tl.store(OUT + row * n_cols + cols, q.to(OUT.dtype.element_ty), mask=mask)
    tl.store(S + row, scale)


@triton.jit
def _rms_fp8_kernel(
    X, Y, W, OUT, S, n_cols, eps, HAS_Y: tl.constexpr, BLOCK: tl.constexpr, FMAX: tl.constexpr
):  # fmt: skip
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * n_cols + cols, mask=mask, other=0.0)
    if HAS_Y:  # residual: x += y, rounded to the stream's dtype, then normalised
        y = tl.load(Y + row * n_cols + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + y.to(tl.float32)).to(X.dtype.element_ty)
        tl.store(X + row * n_cols + cols, x, mask=mask)
    xf = x.to(tl.float32)
    r = 1.0 / tl.sqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
    w = tl.load(W + cols, mask=mask, other=0.0)
    _store_fp8_row(xf * r * w, mask, OUT, S, row, n_cols, cols, FMAX)


@triton.jit
def _silu_mul_fp8_kernel(GU, OUT, S, inter, BLOCK: tl.constexpr, FMAX: tl.constexpr):
    # one row of GU (2 inter,), gate and up columns interleaved: loaded whole, split in pairs
    row = tl.program_id(0).to(tl.int64)
    wide = tl.arange(0, 2 * BLOCK)
    gu = tl.load(GU + row * 2 * inter + wide, mask=wide < 2 * inter, other=0.0).to(tl.float32)
    g, u = tl.split(tl.reshape(gu, (BLOCK, 2)))
    cols = tl.arange(0, BLOCK)
    _store_fp8_row(g * tl.sigmoid(g) * u, cols < inter, OUT, S, row, inter, cols, FMAX)


@triton.jit
def _quant_rows_kernel(X, OUT, S, n_cols, BLOCK: tl.constexpr, FMAX: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    _store_fp8_row(x, mask, OUT, S, row, n_cols, cols, FMAX)


def _fp8_out(n: int, cols: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.empty((n, cols), dtype=torch.float8_e4m3fn, device=device),
        torch.empty((n, 1), dtype=torch.float32, device=device),
    )


def _warps(block: int) -> int:
    return max(1, min(8, block // 256))


def rms_norm_fp8(
    x: torch.Tensor, y: torch.Tensor | None, w: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(``x += y`` in place, then) RMSNorm of each row, as e4m3 with one fp32 scale per row: (q, scale)."""
    n, cols = x.shape
    assert x.is_contiguous() and (y is None or (y.is_contiguous() and y.shape == x.shape))
    q, s = _fp8_out(n, cols, x.device)
    block = triton.next_power_of_2(cols)
    _rms_fp8_kernel[(n,)](
        x, x if y is None else y, w, q, s, cols, eps, HAS_Y=y is not None, BLOCK=block, FMAX=FP8_MAX,
        num_warps=_warps(block),
    )  # fmt: skip
    return q, s


def silu_mul_fp8(gu: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """silu(gate) * up of a (n, 2 * I) product with gate/up columns interleaved, as e4m3 with one fp32
    scale per row."""
    n, width = gu.shape
    assert gu.is_contiguous() and width % 2 == 0
    inter = width // 2
    q, s = _fp8_out(n, inter, gu.device)
    block = triton.next_power_of_2(inter)
    _silu_mul_fp8_kernel[(n,)](gu, q, s, inter, BLOCK=block, FMAX=FP8_MAX, num_warps=_warps(block))
    return q, s


def quantize_rows_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row of x as e4m3 with one fp32 scale per row (amax / 448): (q, scale)."""
    x = x.contiguous()
    n, cols = x.shape
    q, s = _fp8_out(n, cols, x.device)
    block = triton.next_power_of_2(cols)
    _quant_rows_kernel[(n,)](x, q, s, cols, BLOCK=block, FMAX=FP8_MAX, num_warps=_warps(block))
    return q, s


# -- gate/up product with SwiGLU in its epilogue ----------------------------------------------------------
@dataclass(frozen=True)
class GemmConfig:
    block_m: int  # rows per program
    block_n: int  # gate columns per program (and as many up columns)
    block_k: int
    warps: int
    stages: int
    group: int = 8  # programs along the rows that share weight columns (L2 reuse)


# Candidates timed at warm-up against cuBLAS + ``silu_mul`` (``runner``): used only where faster on this GPU.
# The weights are interleaved (``interleave_gate_up``), so a tile is one product of 2 block_n columns with one
# accumulator. H200, 0.6B shape, ms at 12k / 32k rows: pairs-m128n64 0.245 / 0.664, pairs-m128n128 (group
# 16) 0.248 / 0.642; cuBLAS + silu_mul 0.261 / 0.693; the former gate-then-up layout with two accumulators
# 0.260 / 0.666. Dropped after measuring: 6 more interleaved tiles (0.249-0.305 / 0.731-0.921), eight
# two-accumulator tiles, a q/k/v product with norm + RoPE in its epilogue (430 TFLOP/s against cuBLAS's 737),
# tiles moved by TMA (Triton 3.6: 0.300-0.470 ms at 12k rows).
GEMM_CONFIGS = {
    "pairs-m128n64k64w8s3": GemmConfig(128, 64, 64, 8, 3),
    "pairs-m128n128k64w8s3g16": GemmConfig(128, 128, 64, 8, 3, group=16),
}


@triton.jit(do_not_specialize=["m"])
def _swiglu_gemm_kernel(
    A, W, OUT, m, K: tl.constexpr, INTER: tl.constexpr,
    BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, GROUP: tl.constexpr,
):  # fmt: skip
    # W (2 INTER, K) interleaved: row 2c is gate column c, row 2c + 1 up column c. One product of 2 BN
    # columns per tile (one accumulator, wide MMA instructions); the epilogue splits adjacent columns.
    tiles_n: tl.constexpr = INTER // BN
    pid = tl.program_id(0)
    grid_m = tl.cdiv(m, BM)
    width = GROUP * tiles_n
    first = (pid // width) * GROUP
    size = tl.minimum(grid_m - first, GROUP)
    pid_m = first + (pid % width) % size
    tile = (pid % width) // size
    rows = pid_m * BM + tl.arange(0, BM)
    inside = rows < m
    safe = tl.where(inside, rows, 0).to(tl.int64)  # rows past the end read row 0 and are not stored
    wcols = tile * 2 * BN + tl.arange(0, 2 * BN)
    kk = tl.arange(0, BK)
    a_ptrs = A + safe[:, None] * K + kk[None, :]
    w_ptrs = W + wcols.to(tl.int64)[None, :] * K + kk[:, None]
    acc = tl.zeros((BM, 2 * BN), tl.float32)
    for _ in range(0, K, BK):
        acc = tl.dot(tl.load(a_ptrs), tl.load(w_ptrs), acc)
        a_ptrs += BK
        w_ptrs += BK
    dt = OUT.dtype.element_ty
    g, u = tl.split(tl.reshape(acc.to(dt).to(tl.float32), (BM, BN, 2)))  # rounded as a product would be
    cols = tile * BN + tl.arange(0, BN)
    out = OUT + safe[:, None] * INTER + cols[None, :]
    tl.store(out, (g * tl.sigmoid(g) * u).to(dt), mask=inside[:, None])


def interleave_gate_up(wgu: torch.Tensor) -> torch.Tensor:
    """(2 I, K) gate rows then up rows -> gate and up rows alternating (the layout of ``Layer.wgu``, what
    ``swiglu_gemm``, ``silu_mul`` and ``silu_mul_fp8`` read)."""
    inter = wgu.shape[0] // 2
    return torch.stack((wgu[:inter], wgu[inter:]), dim=1).reshape(wgu.shape).contiguous()


def swiglu_gemm(h: torch.Tensor, pairs: torch.Tensor, config: GemmConfig) -> torch.Tensor:
    """``silu_mul(F.linear(h, pairs))`` in one kernel: h (n, K), ``pairs`` (2 I, K) gate and up rows
    interleaved."""
    n, k = h.shape
    inter = pairs.shape[0] // 2
    assert h.is_contiguous() and pairs.is_contiguous() and pairs.shape[1] == k
    assert inter % config.block_n == 0 and k % config.block_k == 0
    out = torch.empty((n, inter), dtype=h.dtype, device=h.device)
    grid = (triton.cdiv(n, config.block_m) * (inter // config.block_n),)
    _swiglu_gemm_kernel[grid](
        h, pairs, out, n, K=k, INTER=inter,
        BM=config.block_m, BN=config.block_n, BK=config.block_k, GROUP=config.group,
        num_warps=config.warps, num_stages=config.stages,
    )  # fmt: skip
    return out


# -- attention -------------------------------------------------------------------------------------------
def attention_items(cu: np.ndarray, block_m: int, capacity: int | None = None) -> np.ndarray:
    """(sequence << 16 | query block) per work item, latest blocks (most keys) first; -1 pads to capacity."""
    lens = np.diff(cu.astype(np.int64)).astype(np.int64)
    counts: np.ndarray = ((lens + block_m - 1) // block_m).astype(np.int64)
    seq = np.repeat(np.arange(len(lens), dtype=np.int64), counts)
    blk = np.arange(len(seq), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    order = np.argsort(-blk, kind="stable")
    codes = (seq[order] << 16) | blk[order]
    if capacity is not None:
        if len(codes) > capacity:
            raise ValueError(f"{len(codes)} attention items exceed the capacity {capacity}")
        codes = np.concatenate([codes, np.full(capacity - len(codes), -1, dtype=np.int64)])
    return codes.astype(np.int32)


def last_items(cu: np.ndarray, outputs: np.ndarray, block_m: int) -> np.ndarray:
    """Work items of the query block holding the last row of each sequence in ``outputs`` (the last layer,
    where only those rows are read out)."""
    outputs = outputs.astype(np.int64)
    blocks = (cu[outputs + 1].astype(np.int64) - cu[outputs] - 1) // block_m
    return ((outputs << 16) | blocks).astype(np.int32)


def items_capacity(tokens: int, slots: int, block_m: int) -> int:
    """An upper bound on ``len(attention_items(...))`` for ``tokens`` rows in ``slots`` sequences."""
    return tokens // block_m + slots


@triton.jit
def _attention_kernel(
    Q, K, V, OUT, CU, ITEMS, PRE, qk_scale,
    sq_t, sq_h, sk_t, sk_h, sv_t, sv_h, so_t, so_h,
    GROUPS: tl.constexpr, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, P: tl.constexpr,
    HAS_PRE: tl.constexpr,
):  # fmt: skip
    # program (head, item); with P > 1 the head is a key/value head and the tile's rows are (position, one
    # of its P query heads), position-major, so each key/value tile serves P query heads
    h = tl.program_id(0)
    code = tl.load(ITEMS + tl.program_id(1))
    valid = code >= 0
    code = tl.where(valid, code, 0)
    seq = code >> 16
    start = tl.load(CU + seq).to(tl.int64)
    length = tl.where(valid, tl.load(CU + seq + 1) - tl.load(CU + seq), 0)
    lo = (code & 0xFFFF) * BM
    offs_n = tl.arange(0, BN)
    offs_d = tl.arange(0, D)
    if P == 1:
        offs_m = lo + tl.arange(0, BM)  # positions in the sequence
        kh = h // GROUPS
        q_ptrs = Q + (start + offs_m)[:, None] * sq_t + h * sq_h + offs_d[None, :]
        o_ptrs = OUT + (start + offs_m)[:, None] * so_t + h * so_h + offs_d[None, :]
    else:
        rows = tl.arange(0, BM * P)
        offs_m = lo + rows // P
        kh = h
        hq = (h * P + rows % P)[:, None]
        q_ptrs = Q + (start + offs_m)[:, None] * sq_t + hq * sq_h + offs_d[None, :]
        o_ptrs = OUT + (start + offs_m)[:, None] * so_t + hq * so_h + offs_d[None, :]
    q = tl.load(q_ptrs, mask=(offs_m < length)[:, None], other=0.0)
    k_base = K + start * sk_t + kh * sk_h
    v_base = V + start * sv_t + kh * sv_h
    m_i = tl.full([BM * P], float("-inf"), tl.float32)
    l_i = tl.zeros([BM * P], tl.float32)
    acc = tl.zeros([BM * P, D], tl.float32)
    if HAS_PRE:  # a shared prefix (rows PRE[2 seq] onwards, PRE[2 seq + 1] of them): every key visible
        pre_start = tl.load(PRE + 2 * seq).to(tl.int64)
        pre_len = tl.where(valid, tl.load(PRE + 2 * seq + 1), 0)
        pk_base = K + pre_start * sk_t + kh * sk_h
        pv_base = V + pre_start * sv_t + kh * sv_h
        for n0 in range(0, pre_len, BN):
            cols = n0 + offs_n
            inside = cols < pre_len
            k = tl.load(pk_base + cols[:, None] * sk_t + offs_d[None, :], mask=inside[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * qk_scale
            s = tl.where(inside[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(pv_base + cols[:, None] * sv_t + offs_d[None, :], mask=inside[:, None], other=0.0)
            acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
            m_i = m_new
    full = tl.where(lo < length, (lo // BN) * BN, 0)  # key blocks wholly before this query block: no mask
    for n0 in range(0, full, BN):
        cols = n0 + offs_n
        k = tl.load(k_base + cols[:, None] * sk_t + offs_d[None, :])
        s = tl.dot(q, tl.trans(k)) * qk_scale
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * sv_t + offs_d[None, :])
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    diag = tl.where(lo < length, tl.minimum(lo + BM, length), 0)  # the diagonal: causal mask
    for n0 in range(full, diag, BN):
        cols = n0 + offs_n
        inside = cols < length
        k = tl.load(k_base + cols[:, None] * sk_t + offs_d[None, :], mask=inside[:, None], other=0.0)
        s = tl.dot(q, tl.trans(k)) * qk_scale
        s = tl.where(offs_m[:, None] >= cols[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_base + cols[:, None] * sv_t + offs_d[None, :], mask=inside[:, None], other=0.0)
        acc = tl.dot(p.to(v.dtype), v, acc * alpha[:, None])
        m_i = m_new
    out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]  # 0 only in rows that are not stored
    tl.store(o_ptrs, out.to(OUT.dtype.element_ty), mask=(offs_m < length)[:, None])


def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu: torch.Tensor,
    items: torch.Tensor,
    config: AttentionConfig,
    prefix: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention within each packed sequence: q (T, H, D), k/v (T, Hk, D) (any row/head strides,
    contiguous last dimension), ``cu`` (B + 1,) int32 offsets, ``items`` from ``attention_items`` with this
    config's ``block_m``. ``prefix`` (B, 2) int32: per sequence the first row and the length of a shared
    prefix packed elsewhere in the batch, whose keys every query of the sequence sees before its own (length
    0: none). Returns (T, H, D); rows of sequences or blocks that no work item lists are left unset."""
    n, heads, dim = q.shape
    assert q.stride(2) == k.stride(2) == v.stride(2) == 1
    groups = heads // k.shape[1]
    pack = groups if config.pack else 1
    if pack & (pack - 1):
        raise ValueError(f"packing {pack} query heads per key/value head needs a power of two")
    out = torch.empty((n, heads, dim), dtype=q.dtype, device=q.device)
    _attention_kernel[(heads // pack, items.shape[0])](
        q, k, v, out, cu, items, cu if prefix is None else prefix, dim**-0.5 * LOG2E,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        GROUPS=groups, D=dim, BM=config.block_m, BN=config.block_n, P=pack, HAS_PRE=prefix is not None,
        num_warps=config.warps, num_stages=config.stages,
    )  # fmt: skip
    return out
