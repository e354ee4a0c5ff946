"""The engine on the GPU (bf16, packed, Triton kernels, CUDA graphs) against an fp32 reference, 0.6B shape.

Random weights (init std 0.02) and random token ids: the real 0.6B shape, no checkpoint needed. The
reference is transformers' ``Qwen3Model`` in fp32 (TF32 off), one sequence at a time. Both engine paths are
checked: a large batch (packed, eager launch of the kernels) and single sequences (CUDA graph replay), with
the kernels the engine picks by default (its fused Triton kernels wherever Triton is installed) and with
``torch.compile``'s. transformers itself in bf16 is measured on the same inputs as a yardstick for what bf16
costs.
"""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from engine.engine import Engine  # noqa: E402
from tests.support.models import QWEN3_06B  # noqa: E402
from tests.support.reporting import report  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

NO, YES = 2152, 9693
# Bounds picked from measurement on an H200 (see the figures reported), headroom: bf16 rounding, not a bug.
MAX_MARGIN_GAP = 0.1  # |(logit_yes - logit_no) engine - fp32|; measured 0.035 (transformers bf16: 0.036)
MAX_COSINE_GAP = 1e-3  # 1 - cos(engine, fp32); measured 1.5e-4 (transformers bf16: 3.1e-3)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    with torch.device("cuda"):
        causal = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**QWEN3_06B)).eval()
    torch.backends.cuda.matmul.allow_tf32 = False
    return causal


@pytest.fixture(scope="module")
def sequences() -> list[list[int]]:
    rng = random.Random(7)
    lengths = [rng.randint(16, 700) for _ in range(22)] + [1, 2048]  # > 4096 tokens: the eager path
    return [[rng.randrange(151643) for _ in range(n)] for n in lengths]


@pytest.fixture(scope="module")
def chunks() -> list[list[int]]:
    """12 chunks of exactly 512 tokens: the dense (cuDNN) attention path for equal lengths."""
    rng = random.Random(8)
    return [[rng.randrange(151643) for _ in range(512)] for _ in range(12)]


def _last_hidden(base, seqs: list[list[int]]):
    with torch.inference_mode():
        return torch.stack(
            [base(input_ids=torch.tensor([s], device="cuda")).last_hidden_state[0, -1].float() for s in seqs]
        )


@pytest.fixture(scope="module")
def reference(model, sequences):
    """fp32 and bf16 transformers: final hidden state of each sequence's last token."""
    fp32 = _last_hidden(model.model, sequences)
    bf16 = _last_hidden(copy.deepcopy(model.model).to(torch.bfloat16), sequences)
    return fp32, bf16


def _report(title: str, rows: dict[str, float]) -> None:
    report(f"[gpu engine] {title}: " + ", ".join(f"{k} {v:.4g}" for k, v in rows.items()))


def _triton() -> bool:
    import importlib.util

    return importlib.util.find_spec("triton") is not None


# products: the gate/up product with SwiGLU in a Triton epilogue forced on, forced off, or timed at warm-up
@pytest.mark.parametrize(
    ("kernels", "products"),
    [
        ("auto", "pairs-m128n64k64w8s3"),
        ("auto", "auto"),
        ("auto", "cublas"),
        ("compile", "auto"),
    ],
)
def test_score_margin_gap_to_fp32(model, sequences, reference, kernels: str, products: str) -> None:
    fp32, bf16 = reference
    rows = model.lm_head.weight[[NO, YES]].detach().float()
    want = (fp32 @ rows.T).diff(dim=1)[:, 0].cpu().numpy()
    hf_bf16 = (bf16 @ rows.T).diff(dim=1)[:, 0].cpu().numpy()
    engine = Engine(
        model, head="score", head_token_ids=(NO, YES), device="cuda", kernels=kernels, products=products
    )
    try:
        if kernels == "auto" and _triton():
            assert engine.runner.kernels == "triton"  # its warm-up check against the torch path passed
            if products != "auto":
                assert engine.runner.mlp_gemm == (None if products == "cublas" else products)
        batch = engine.run(sequences)
        single = np.array([engine.run([s])[0] for s in sequences[:-1]])  # CUDA-graph path
        gaps = {
            "engine batch": float(np.abs(batch - want).max()),
            "engine single": float(np.abs(single - want[:-1]).max()),
            "transformers bf16": float(np.abs(hf_bf16 - want).max()),
            "fp32 margin std": float(want.std()),
        }
        runner = engine.runner
        setup = f"{runner.kernels}, gate/up {runner.mlp_gemm or 'cublas'}, attention {runner.attention}"
        _report(f"max |margin gap| ({setup})", gaps)
        assert gaps["engine batch"] <= MAX_MARGIN_GAP
        assert gaps["engine single"] <= MAX_MARGIN_GAP
    finally:
        engine.close()


@pytest.mark.parametrize("kernels", ["auto", "compile"])
def test_shared_prefix_margin_gap_to_fp32(model, kernels: str) -> None:
    """One query's pairs: a 72-token template head shared by 40 pairs (> 4096 tokens: computed once)."""
    rng = random.Random(9)
    head = [rng.randrange(151643) for _ in range(72)]
    seqs = [head + [rng.randrange(151643) for _ in range(rng.randint(1, 400))] for _ in range(40)]
    rows = model.lm_head.weight[[NO, YES]].detach().float()
    want = (_last_hidden(model.model, seqs) @ rows.T).diff(dim=1)[:, 0].cpu().numpy()
    engine = Engine(model, head="score", head_token_ids=(NO, YES), device="cuda", kernels=kernels)
    try:
        got = engine.run(seqs)
        stats = engine.stats
        gap = float(np.abs(got - want).max())
        _report(
            f"shared prefix (kernels {engine.runner.kernels}, attention {engine.runner.attention})",
            {"max |margin gap|": gap, "tokens computed": stats.tokens, "tokens served": stats.served_tokens},
        )
        if engine.runner.shares_prefix:
            assert stats.tokens < stats.served_tokens  # the head ran once, not 40 times
        else:  # PyTorch's flash kernel cannot read a prefix elsewhere: each pair computes it
            assert stats.tokens == stats.served_tokens
        assert gap <= MAX_MARGIN_GAP
    finally:
        engine.close()


@pytest.mark.parametrize("products", ["pairs-m128n64k64w8s3", "cublas"])
def test_embedding_cosine_gap_to_fp32(model, sequences, chunks, reference, products: str) -> None:
    fp32, bf16 = reference
    want = torch.nn.functional.normalize(fp32, dim=-1).cpu().numpy()
    hf_bf16 = torch.nn.functional.normalize(bf16, dim=-1).cpu().numpy()
    want_chunks = torch.nn.functional.normalize(_last_hidden(model.model, chunks), dim=-1).cpu().numpy()
    engine = Engine(model.model, head="embedding", device="cuda", products=products)
    try:
        if _triton():
            assert engine.runner.kernels == "triton"
        batch = engine.run(sequences)
        single = np.concatenate([engine.run([s]) for s in sequences[:-1]])
        dense = engine.run(chunks)
        gaps = {
            "engine batch": float((1 - (batch * want).sum(1)).max()),
            "engine single": float((1 - (single * want[:-1]).sum(1)).max()),
            f"engine 12 x 512 ({engine.runner.uniform or 'varlen'})": float(
                (1 - (dense * want_chunks).sum(1)).max()
            ),
            "transformers bf16": float((1 - (hf_bf16 * want).sum(1)).max()),
        }
        runner = engine.runner
        setup = f"{runner.kernels}, gate/up {runner.mlp_gemm or 'cublas'}, {runner.attention}"
        _report(f"max 1 - cosine ({setup})", gaps)
        assert max(v for k, v in gaps.items() if k.startswith("engine")) <= MAX_COSINE_GAP
        assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-4)
    finally:
        engine.close()
