"""FP8 (e4m3) products on the GPU: the Triton quantising kernels against torch's, ``torch._scaled_mm``
against the dequantised product, and the accuracy gate of issue 17 over 200 queries x 50 documents of the
real Qwen3-0.6B shape (random weights, random token ids laid out as the reranker's template lays them out).

Needs compute capability 8.9+ (Hopper, Ada); elsewhere the FP8 tests skip and the fallback is checked.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine import fp8  # noqa: E402
from engine.engine import Engine  # noqa: E402
from engine.precision import Gate, embedding_gate, score_gate  # noqa: E402
from tests.support.models import QWEN3_06B  # noqa: E402
from tests.support.reporting import report  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

NO, YES = 2152, 9693
QUERIES, DOCS = 200, 50
HEAD, SUFFIX = 72, 9  # the reranker template's shared head and per-document suffix (Qwen vocabulary)


def _fp8_here() -> str | None:
    return fp8.unsupported_reason(torch.device("cuda")) if torch.cuda.is_available() else "no GPU"


needs_fp8 = pytest.mark.skipif(_fp8_here() is not None, reason=f"no FP8 products here: {_fp8_here()}")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    with torch.device("cuda"):
        return transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**QWEN3_06B)).to(torch.bfloat16).eval()


@pytest.fixture(scope="module")
def queries() -> list[list[list[int]]]:
    """200 queries, each 50 pairs: a shared 72-token head, a 100-360-token document, a 9-token suffix."""
    rng = np.random.default_rng(17)
    out = []
    for _ in range(QUERIES):
        head = rng.integers(0, 151643, HEAD).tolist()
        suffix = list(range(151644, 151644 + SUFFIX))
        out.append(
            [head + rng.integers(0, 151643, int(n)).tolist() + suffix for n in rng.integers(100, 361, DOCS)]
        )
    return out


def _report(title: str, rows: dict[str, float | str]) -> None:
    report(f"[gpu fp8] {title}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in rows.items()))  # fmt: skip


@needs_fp8
def test_triton_quantisation_matches_torch() -> None:
    from engine import triton_kernels as tk

    gen = torch.Generator(device="cuda").manual_seed(1)
    x = (
        torch.randn(300, 2048, device="cuda", generator=gen)
        * torch.logspace(-3, 3, 300, device="cuda")[:, None]
    )
    x = x.bfloat16()
    y = torch.randn(300, 2048, device="cuda", generator=gen).bfloat16()
    w = torch.rand(2048, device="cuda", generator=gen) + 0.5
    gu = torch.randn(300, 2 * 3072, device="cuda", generator=gen).bfloat16()
    x2, x3 = x.clone(), x.clone()
    cases = {
        "quantize_rows": (tk.quantize_rows_fp8(x), fp8.quantize_rows(x)),
        "rms_norm": (
            tk.rms_norm_fp8(x, None, w, 1e-6),
            fp8.quantize_rows(tk.rms_norm(x, w, 1e-6, torch.float32)),
        ),
        "add_rms_norm": (
            tk.rms_norm_fp8(x2, y, w, 1e-6),
            fp8.quantize_rows(tk._norm(x3, y, w, 1e-6, torch.float32)),
        ),
        "silu_mul": (tk.silu_mul_fp8(gu), fp8.quantize_rows(tk.silu_mul(gu.float()))),
    }
    assert torch.equal(x2, x3)  # the residual add in place, as add_rms_norm_ does it
    for name, ((q, s), (rq, rs)) in cases.items():
        assert q.dtype == torch.float8_e4m3fn and s.shape == (q.shape[0], 1)
        torch.testing.assert_close(s, rs, rtol=1e-2, atol=0)  # bf16 vs fp32 rounding before the amax
        got, want = fp8.dequantize(q, s), fp8.dequantize(rq, rs)
        # within one e4m3 step (2^-3 relative) of torch's rounding, plus the subnormal step
        assert bool(((got - want).abs() <= 2.0**-3 * want.abs() + 2.0**-8 * rs).all()), name


@needs_fp8
def test_scaled_mm_is_the_dequantised_product() -> None:
    gen = torch.Generator(device="cuda").manual_seed(2)
    x = torch.randn(1000, 1024, device="cuda", generator=gen).bfloat16()
    w = (torch.randn(3072, 1024, device="cuda", generator=gen) * 0.02).bfloat16()
    fw = fp8.quantize_weight(w)
    q, s = fp8.quantize_rows(x)
    want = fp8.dequantize(q, s) @ fp8.dequantize(fw.q, fw.scale).t()
    for fast in (False, True):
        out = fp8.fp8_linear((q, s), fw, fast_accum=fast)
        rel = float((out.float() - want).norm() / want.norm())
        _report(f"_scaled_mm vs dequantised product (fast accumulation {fast})", {"relative error": rel})
        assert out.dtype == torch.bfloat16 and rel < 1e-2  # bf16 output rounding (and fast accumulation)
    exact = float(((x.float() @ w.float().t()) - want).norm() / want.norm())
    _report("FP8 product vs the bf16 operands' exact product", {"relative error": exact})
    assert exact < 0.05


@needs_fp8
def test_fp8_meets_the_accuracy_gate_over_200_queries_by_50_documents(model, queries) -> None:
    bf16 = Engine(model, head="score", head_token_ids=(NO, YES), device="cuda")
    fp8_engine = Engine(model, head="score", head_token_ids=(NO, YES), device="cuda", precision="fp8")
    try:
        fp8_engine.warm_up()  # the engine's own gate, on its own probe
        choice = fp8_engine.precision
        _report("warm-up choice", {"used": choice.used, "reason": choice.reason})
        assert choice.used == "fp8", choice.reason
        ref = [bf16.run(q) for q in queries]
        got = [fp8_engine.run(q) for q in queries]
        result = score_gate(ref, got, Gate(), f"{QUERIES} queries x {DOCS} documents")
        _report("rerank gate", result.measured)
        assert result.passed, result.summary()
    finally:
        bf16.close()
        fp8_engine.close()


@needs_fp8
def test_fp8_embeddings_meet_the_cosine_gate(model, queries) -> None:
    docs = [seq[HEAD:-SUFFIX] for q in queries for seq in q]  # the 10,000 documents alone
    bf16 = Engine(model.model, head="embedding", device="cuda")
    fp8_engine = Engine(model.model, head="embedding", device="cuda", precision="fp8")
    try:
        fp8_engine.warm_up()
        choice = fp8_engine.precision
        _report("embedding warm-up choice", {"used": choice.used, "reason": choice.reason})
        assert choice.used == "fp8", choice.reason
        result = embedding_gate(
            bf16.run_many(docs), fp8_engine.run_many(docs), Gate(), f"{len(docs)} documents"
        )
        _report("embedding gate", result.measured)
        assert result.passed, result.summary()
    finally:
        bf16.close()
        fp8_engine.close()


def test_without_fp8_products_the_engine_serves_bf16_and_says_why(model) -> None:
    """Where this GPU has FP8 the check is the inverse: a gate nothing can pass sends it back to bf16."""
    impossible = Gate(min_mean_tau=1.01)
    engine = Engine(
        model, head="score", head_token_ids=(NO, YES), device="cuda", precision="fp8", fp8_gate=impossible,
        fp8_probe=(2, 20),
    )  # fmt: skip
    try:
        engine.warm_up()
        choice = engine.precision
        assert choice.used == "bf16" and choice.asked == "fp8"
        if _fp8_here() is None:
            assert "missed its accuracy gate" in choice.reason and choice.gate is not None
        else:
            assert "compute capability" in choice.reason or "_scaled_mm" in choice.reason
        assert engine.runner.fp8 is None
    finally:
        engine.close()
