"""The engine's Triton kernels, run by Triton's interpreter on CPU tensors, against the torch math they
replace.

Triton's interpreter is switched on (``TRITON_INTERPRET=1``) when this module is imported, before Triton is:
nothing else on a CPU machine runs Triton.

Skipped where Triton is not installed (the CPU-only install); on the GPU the same kernels are compiled and
the whole forward is checked against fp32 transformers in ``tests/gpu``.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("triton") is None:
    pytest.skip("Triton is not installed", allow_module_level=True)
if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("Triton was imported before its interpreter could be switched on", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"  # read when triton.language and each kernel are defined
import triton  # noqa: E402, F401
from triton.runtime import interpreter as _interpreter  # noqa: E402

_patch_tensor = _interpreter._patch_lang_tensor


def _patch_lang_tensor(tensor, scope):  # type: ignore[no-untyped-def]
    """Loop bounds loaded from memory are one-element arrays in the interpreter, and numpy >= 2.3 refuses
    ``int()`` of those: read their one element instead."""
    _patch_tensor(tensor, scope)
    scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))


_interpreter._patch_lang_tensor = _patch_lang_tensor

from engine import qwen3_math  # noqa: E402
from engine import triton_kernels as tk  # noqa: E402
from engine.attention import attention  # noqa: E402

TOL = 1e-4


def _packed(lengths: list[int], heads: int, kv: int, dim: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(sum(lengths))
    n = sum(lengths)
    qkv = torch.randn(n, (heads + 2 * kv) * dim, generator=gen)
    q, k, v = qkv.split([heads * dim, kv * dim, kv * dim], dim=1)
    cu = torch.tensor(np.concatenate([[0], np.cumsum(lengths)]), dtype=torch.int32)
    return qkv, q.unflatten(1, (heads, dim)), k.unflatten(1, (kv, dim)), v.unflatten(1, (kv, dim)), cu


def test_norms_and_swiglu_equal_the_torch_math() -> None:
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(37, 96, generator=gen), torch.randn(37, 96, generator=gen)
    w = torch.rand(96, generator=gen) + 0.5
    torch.testing.assert_close(
        tk.rms_norm(x, w, 1e-6, torch.float32), qwen3_math.rms(x, w, 1e-6), atol=TOL, rtol=0
    )
    residual = x.clone()
    h = tk.add_rms_norm_(residual, y, w, 1e-6)
    torch.testing.assert_close(residual, x + y, atol=TOL, rtol=0)
    torch.testing.assert_close(h, qwen3_math.rms(x + y, w, 1e-6), atol=TOL, rtol=0)
    gu = torch.randn(37, 2 * 300, generator=gen)  # gate and up columns interleaved, as the engine lays out
    gate, up = gu[:, 0::2], gu[:, 1::2]
    torch.testing.assert_close(tk.silu_mul(gu), torch.nn.functional.silu(gate) * up, atol=TOL, rtol=0)
    q, scale = tk.silu_mul_fp8(gu)
    want = torch.nn.functional.silu(gate) * up
    torch.testing.assert_close(scale, want.abs().amax(-1, keepdim=True) / 448, atol=0, rtol=1e-5)
    # e4m3 rounds to within half a step (at most 16 scales); Triton 3.6's interpreter rounds values just
    # under a power of two down a binade (-126.1 -> -64, not -128), so 64 scales here, where a wrong
    # gate/up pairing is off by hundreds (values span +-448 scales)
    assert bool(((q.float() * scale - want).abs() <= 64 * scale).all())


@pytest.mark.parametrize("rows", [16, 4])
def test_qk_norm_rope_in_place_leaves_v(rows: int) -> None:
    heads, kv, dim = 4, 2, 16
    qkv, q, k, v, _ = _packed([5, 40], heads, kv, dim)
    positions = torch.cat([torch.arange(5), torch.arange(40)]) + 3  # e.g. after a shared prefix
    inv_freq = 1.0 / (1e6 ** (torch.arange(0, dim, 2).float() / dim))
    freqs = positions.float()[:, None] * inv_freq
    cos, sin = freqs.cos(), freqs.sin()
    wq, wk = torch.rand(dim) + 0.5, torch.rand(dim) + 0.5
    want_q = qwen3_math.norm_rope(q, wq, cos[:, None], sin[:, None], 1e-6)
    want_k = qwen3_math.norm_rope(k, wk, cos[:, None], sin[:, None], 1e-6)
    want_v = v.clone()
    cos_t, sin_t = tk.rope_tables(inv_freq, 64)
    tk.qk_norm_rope_(qkv, positions, cos_t, sin_t, wq, wk, heads, kv, 1e-6, rows=rows)
    torch.testing.assert_close(q, want_q, atol=TOL, rtol=0)
    torch.testing.assert_close(k, want_k, atol=TOL, rtol=0)
    torch.testing.assert_close(v, want_v, atol=0, rtol=0)


SMALL_GEMM = tk.GemmConfig(block_m=16, block_n=16, block_k=16, warps=4, stages=1, group=2)


@pytest.mark.parametrize("rows", [1, 37])
def test_swiglu_product_equals_product_then_swiglu(rows: int) -> None:
    gen = torch.Generator().manual_seed(rows)
    h, wgu = torch.randn(rows, 48, generator=gen), torch.randn(2 * 32, 48, generator=gen) / 7
    gate, up = torch.nn.functional.linear(h, wgu).chunk(2, dim=-1)
    torch.testing.assert_close(
        tk.swiglu_gemm(h, tk.interleave_gate_up(wgu), SMALL_GEMM),
        torch.nn.functional.silu(gate) * up,
        atol=TOL,
        rtol=0,
    )


def test_interleaved_weights_alternate_gate_and_up_rows() -> None:
    wgu = torch.arange(8.0)[:, None].expand(8, 3)
    assert tk.interleave_gate_up(wgu)[:, 0].tolist() == [0, 4, 1, 5, 2, 6, 3, 7]


# the configs warm-up chooses from, and key blocks wider than query blocks (the diagonal then spans steps)
CONFIGS = {**tk.ATTENTION_CONFIGS, "gqa-m32n64": tk.AttentionConfig(32, 64, 4, 3, pack=True)}


@pytest.mark.parametrize(
    "config", ["triton-m64n64", "triton-m128n64", "triton-gqa-m32n32", "triton-gqa-m64n64", "gqa-m32n64"]
)
def test_varlen_attention_equals_the_exact_loop(config: str) -> None:
    lengths = [1, 7, 64, 65, 130, 3]
    _, q, k, v, cu = _packed(lengths, 4, 2, 16)
    items = torch.from_numpy(tk.attention_items(cu.numpy(), CONFIGS[config].block_m, capacity=40))
    got = tk.varlen_attention(q, k, v, cu, items, CONFIGS[config])
    want = attention(q, k, v, cu, cu, 130, 130, "loop")
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)


@pytest.mark.parametrize("config", ["triton-m64n64", "triton-gqa-m32n32", "gqa-m32n64"])
def test_varlen_attention_after_a_shared_prefix(config: str) -> None:
    """Sequences 1 and 3 continue sequence 0 (a shared prefix of 70 rows); sequence 2 stands alone."""
    from engine.attention import prefixed_attention

    lengths = [70, 5, 90, 1]
    _, q, k, v, cu = _packed(lengths, 4, 2, 16)
    host_cu = cu.tolist()
    prefix = [(0, 0), (0, 70), (0, 0), (0, 70)]
    table = torch.tensor(prefix, dtype=torch.int32)
    block_m = CONFIGS[config].block_m
    items = torch.from_numpy(tk.attention_items(cu.numpy(), block_m))
    got = tk.varlen_attention(q, k, v, cu, items, CONFIGS[config], table)
    want = prefixed_attention(q, k, v, host_cu, prefix)
    torch.testing.assert_close(got, want, atol=TOL, rtol=0)
    # the same as attending over the prefix and the sequence laid out together
    joined = torch.cat([q[:70], q[70:75]]), torch.cat([k[:70], k[70:75]]), torch.cat([v[:70], v[70:75]])
    one = torch.tensor([0, 75], dtype=torch.int32)
    whole = attention(*joined, one, one, 75, 75, "loop")
    torch.testing.assert_close(got[70:75], whole[70:], atol=TOL, rtol=0)
    outputs = np.array([1, 2, 3])
    last = torch.from_numpy(tk.last_items(cu.numpy(), outputs, block_m))
    rows = [int(cu[i + 1]) - 1 for i in outputs]
    tail = tk.varlen_attention(q, k, v, cu, last, CONFIGS[config], table)
    torch.testing.assert_close(tail[rows], want[rows], atol=TOL, rtol=0)


def test_attention_items_cover_every_block_once() -> None:
    cu = np.array([0, 1, 130, 130 + 64, 500], dtype=np.int32)
    codes = tk.attention_items(cu, 64, capacity=tk.items_capacity(500, 4, 64))
    real = codes[codes >= 0]
    pairs = sorted((int(c) >> 16, int(c) & 0xFFFF) for c in real)
    assert pairs == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0), *[(3, b) for b in range(5)]]
    assert list(real & 0xFFFF) == sorted(real & 0xFFFF, reverse=True)  # most keys first
    with pytest.raises(ValueError):
        tk.attention_items(cu, 64, capacity=3)


def test_whole_forward_equals_the_torch_path(tiny_qwen3_reranker_dir) -> None:
    from transformers import AutoModelForCausalLM

    from engine.runner import PackedQwen3

    causal = AutoModelForCausalLM.from_pretrained(tiny_qwen3_reranker_dir, dtype=torch.float32).eval()
    rng = random.Random(3)
    seqs = [[rng.randrange(151643) for _ in range(n)] for n in (1, 9, 70, 33)]
    for head in ("score", "embedding"):
        weights = qwen3_math.extract_weights(
            causal, head=head, device="cpu", dtype=torch.float32, head_ids=(2152, 9693)
        )
        outs = {}
        for name, kernels, attn, fused in (
            ("loop", "eager", "loop", None),
            ("m64n64", "triton", "triton-m64n64", None),
            ("gqa", "triton", "triton-gqa-m32n32", None),
            ("fused products", "triton", "triton-m64n64", "pairs-m128n64k64w8s3"),
        ):
            runner = PackedQwen3(weights, head=head, cuda_graphs=False, kernels=kernels, attention=attn)
            runner.mlp_gemm = fused  # what warm-up picks on a GPU where it is faster
            with torch.inference_mode():
                outs[name] = runner.run(seqs)[0]
        for name in ("m64n64", "gqa", "fused products"):
            torch.testing.assert_close(outs[name], outs["loop"], atol=TOL, rtol=0)


@pytest.mark.parametrize(("size", "head"), [("4b", "embedding"), ("8b", "score")])
def test_whole_forward_at_the_4b_and_8b_ratios(size: str, head: str) -> None:
    """Grouped-query group 4 (the packed GQA kernel holds 4 query heads per key/value tile), a q/k/v width
    unlike the hidden width, an untied LM head (8B): the Triton path equals the exact torch path."""
    import transformers

    from engine.runner import PackedQwen3
    from tests.support.models import TINY_SIZES

    torch.manual_seed(5)
    causal = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**TINY_SIZES[size])).eval()
    weights = qwen3_math.extract_weights(
        causal, head=head, device="cpu", dtype=torch.float32, head_ids=(2152, 9693)
    )
    assert weights.heads // weights.kv_heads == 4
    rng = random.Random(4)
    seqs = [[rng.randrange(151643) for _ in range(n)] for n in (1, 9, 70, 33)]
    outs = {}
    for name, attn, fused in (
        ("loop", "loop", None),
        ("gqa", "triton-gqa-m32n32", None),
        ("fused products", "triton-m64n64", "pairs-m128n64k64w8s3"),
    ):
        runner = PackedQwen3(
            weights,
            head=head,
            cuda_graphs=False,
            kernels="eager" if attn == "loop" else "triton",
            attention=attn,
        )
        runner.mlp_gemm = fused
        with torch.inference_mode():
            outs[name] = runner.run(seqs)[0]
    for name in ("gqa", "fused products"):
        torch.testing.assert_close(outs[name], outs["loop"], atol=TOL, rtol=0)
