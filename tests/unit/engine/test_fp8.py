"""FP8 (e4m3) products on CPU: the quantisation math, the emulated product, the accuracy gate's arithmetic,
and the engine's fallback to bf16 (on CPU, or when FP8 misses its gate), down to /info.

The real FP8 path (``torch._scaled_mm`` on a Hopper GPU, the Triton quantising kernels) and the gate over
200 queries x 50 documents of the 0.6B shape are in ``tests/gpu/test_fp8_gpu.py``.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from transformers import AutoModelForCausalLM

from engine.engine import Engine
from engine.fp8 import (
    E4M3,
    E4M3_MAX,
    PRODUCTS,
    Fp8Weight,
    dequantize,
    fp8_linear,
    quantize_rows,
    quantize_weight,
    unsupported_reason,
)
from engine.precision import Gate, check_precision, embedding_gate, kendall_tau, score_gate
from engine.qwen3_math import weight_bytes
from ingestion.settings import IngestSettings
from reranking.backends import make_reranker
from reranking.settings import RerankSettings
from retrieval.settings import RetrievalSettings
from tests.support import compat_harness as harness
from tests.support.fakes import FakeReranker

NO, YES = 2152, 9693
# e4m3 keeps 3 mantissa bits: a normal value rounds within 2^-4 of itself; below the smallest normal
# (2^-6 x scale) the step is 2^-9 x scale
REL, SUB = 2.0**-4, 2.0**-9


def _sequences(seed: int, count: int, low: int = 8, high: int = 90) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 151643, int(n)).tolist() for n in rng.integers(low, high + 1, count)]


# -- quantisation ----------------------------------------------------------------------------------------
class TestQuantisation:
    def test_rows_get_their_own_scale_and_round_within_e4m3_precision(self) -> None:
        gen = torch.Generator().manual_seed(0)
        magnitudes = torch.tensor([1e-4, 1e-2, 1.0, 30.0, 5e3])[:, None]
        x = torch.randn(5, 256, generator=gen) * magnitudes
        q, scale = quantize_rows(x)
        assert q.dtype == torch.float8_e4m3fn and scale.shape == (5, 1) and scale.dtype == torch.float32
        torch.testing.assert_close(scale, x.abs().amax(1, keepdim=True) / E4M3_MAX)
        assert torch.equal(q.float().abs().amax(1), torch.full((5,), E4M3_MAX))  # each row's amax is 448
        err = (dequantize(q, scale) - x).abs()
        assert bool((err <= REL * x.abs() + SUB * scale).all())  # the 1e-4 row as exact as the 5e3 one

    def test_one_scale_for_the_whole_tensor_would_lose_the_small_rows(self) -> None:
        """What per-token scales buy: the same rows quantised with one scale for all lose the small one."""
        x = torch.cat([torch.full((1, 64), 1e-3), torch.full((1, 64), 1e3)])
        q, scale = quantize_rows(x)
        assert torch.allclose(dequantize(q, scale)[0], x[0], rtol=REL)
        one = x.abs().max() / E4M3_MAX
        assert float((x[0] / one).to(torch.float8_e4m3fn).float().abs().max()) == 0.0  # flushed to zero

    def test_weights_get_one_scale_per_output_channel(self) -> None:
        gen = torch.Generator().manual_seed(1)
        w = torch.randn(48, 32, generator=gen) * torch.linspace(0.01, 3, 48)[:, None]
        fw = quantize_weight(w, torch.bfloat16)
        assert fw.q.shape == (48, 32) and fw.scale.shape == (1, 48) and fw.scale.is_contiguous()
        assert fw.dtype == torch.bfloat16
        torch.testing.assert_close(fw.scale[0], w.abs().amax(1) / E4M3_MAX)
        err = (dequantize(fw.q, fw.scale) - w).abs()
        assert bool((err <= REL * w.abs() + SUB * fw.scale.t()).all())

    def test_zero_rows_stay_zero(self) -> None:
        q, scale = quantize_rows(torch.zeros(2, 32))
        assert bool((q.float() == 0).all()) and bool((scale > 0).all())


class TestProduct:
    def _operands(self) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(2)
        return torch.randn(33, 128, generator=gen), torch.randn(80, 128, generator=gen) * 0.05

    def test_emulated_product_is_close_to_the_exact_one(self) -> None:
        x, w = self._operands()
        got = fp8_linear(x, quantize_weight(w, torch.float32))
        exact = x @ w.t()
        rel = float((got - exact).norm() / exact.norm())
        assert 0 < rel < 0.05  # two e4m3 roundings (~2 % each, random signs): a few percent at most

    def test_emulated_product_is_the_dequantised_product(self) -> None:
        x, w = self._operands()
        fw = quantize_weight(w, torch.float32)
        q, scale = quantize_rows(x)
        want = dequantize(q, scale) @ dequantize(fw.q, fw.scale).t()
        torch.testing.assert_close(fp8_linear((q, scale), fw), want)
        torch.testing.assert_close(fp8_linear(x, fw), want)  # quantised per row on the way in

    def test_emulation_matches_scaled_mm_where_the_cpu_has_it(self) -> None:
        """torch._scaled_mm's own CPU kernel (recent torch) computes what the emulation computes."""
        x, w = self._operands()
        x = x[:32]  # _scaled_mm wants multiples of 16
        fw = quantize_weight(w, torch.float32)
        q, scale = quantize_rows(x)
        try:
            real = torch._scaled_mm(q, fw.q.t(), scale_a=scale, scale_b=fw.scale, out_dtype=torch.float32)
        except (RuntimeError, NotImplementedError) as exc:
            pytest.skip(f"no torch._scaled_mm on CPU here ({exc})")
        torch.testing.assert_close(fp8_linear((q, scale), fw), real, rtol=1e-5, atol=1e-5)

    def test_products_come_out_in_the_weights_compute_dtype(self) -> None:
        x, w = self._operands()
        assert fp8_linear(x.bfloat16(), quantize_weight(w.bfloat16())).dtype == torch.bfloat16
        assert isinstance(quantize_weight(w), Fp8Weight)


# -- the gate's arithmetic ---------------------------------------------------------------------------------
def _tau_brute(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b, written out pair by pair."""
    conc = disc = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
        ties_a += da == 0
        ties_b += db == 0
        conc += da * db > 0
        disc += da * db < 0
    n0 = len(a) * (len(a) - 1) / 2
    return (conc - disc) / np.sqrt((n0 - ties_a) * (n0 - ties_b))


class TestGate:
    def test_kendall_tau(self) -> None:
        a = [0.1, 0.5, 0.3, 0.9]
        assert kendall_tau(np.array(a), np.array(a)) == 1.0
        assert kendall_tau(np.array(a), -np.array(a)) == -1.0
        assert kendall_tau(np.array([1.0, 2, 3, 4]), np.array([1.0, 3, 2, 4])) == pytest.approx(4 / 6)
        rng = np.random.default_rng(3)
        for _ in range(20):
            x, y = rng.integers(0, 5, 12).astype(float), rng.integers(0, 5, 12).astype(float)  # with ties
            assert kendall_tau(x, y) == pytest.approx(_tau_brute(list(x), list(y)))
        assert kendall_tau(np.ones(5), np.arange(5.0)) == 1.0  # a constant ranking orders nothing

    def test_score_gate_thresholds(self) -> None:
        rng = np.random.default_rng(4)
        ref = [rng.normal(0, 2, 50) for _ in range(10)]
        # small noise: orders and probabilities agree
        ok = score_gate(ref, [r + rng.normal(0, 1e-3, 50) for r in ref], Gate())
        assert ok.passed and ok.measured["tau_mean"] > 0.99 and ok.measured["max_dp"] < 0.01
        # orders scrambled in one query of ten: mean tau drops below 0.98
        scrambled = [r.copy() for r in ref]
        scrambled[3] = rng.permutation(scrambled[3])
        bad_tau = score_gate(ref, scrambled, Gate())
        assert not bad_tau.passed and bad_tau.measured["tau_mean"] < 0.98
        assert "failed" in bad_tau.summary() and "tau_mean" in bad_tau.summary()

    def test_score_gate_fails_on_probability_alone(self) -> None:
        ref = [np.linspace(-3, 3, 50)]
        moved = [ref[0] + 0.3]  # every margin up by 0.3: the same order, P(yes) up to 0.075 higher
        result = score_gate(ref, moved, Gate())
        assert result.measured["tau_mean"] == 1.0 and result.measured["max_dp"] > 0.07
        assert not result.passed

    def test_embedding_gate_takes_the_worst_vector(self) -> None:
        rng = np.random.default_rng(5)
        ref = rng.normal(size=(100, 64))
        close = ref + rng.normal(0, 1e-3, ref.shape)
        assert embedding_gate(ref, close, Gate()).passed
        off = close.copy()
        off[7] = ref[7] + rng.normal(0, 0.1, 64)  # one vector turned by ~0.1 rad
        result = embedding_gate(ref, off, Gate())
        assert not result.passed and result.measured["cosine_min"] < 0.999 < result.measured["cosine_mean"]

    def test_precision_names(self) -> None:
        assert check_precision(" FP8 ") == "fp8" and check_precision("bf16") == "bf16"
        with pytest.raises(ValueError, match="bf16, fp8"):
            check_precision("int8")


# -- the engine's choice ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_causal(tiny_qwen3_reranker_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_qwen3_reranker_dir, dtype=torch.float32).eval()


@pytest.fixture()
def engines(tiny_causal) -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.close()


def _engine(made: list[Engine], model, **options) -> Engine:
    engine = Engine(model, token_budget=2048, **options)
    made.append(engine)
    engine.warm_up()
    return engine


class TestEngineChoice:
    def test_cpu_has_no_fp8_and_says_so(self) -> None:
        why = unsupported_reason(torch.device("cpu"))
        assert why is not None and "CUDA GPU" in why and "cpu" in why

    def test_fp8_on_cpu_falls_back_to_bf16_with_the_reason(self, tiny_causal, engines) -> None:
        seqs = _sequences(0, 6)
        plain = _engine(engines, tiny_causal, head="score", head_token_ids=(NO, YES))
        asked = _engine(engines, tiny_causal, head="score", head_token_ids=(NO, YES), precision="fp8")
        choice = asked.precision
        assert (choice.asked, choice.used, choice.gate) == ("fp8", "bf16", None)
        assert "CUDA GPU" in choice.reason and "serving bf16" in choice.reason
        assert np.array_equal(asked.run(seqs), plain.run(seqs))  # the same arithmetic as bf16 asked

    def test_fp8_that_passes_its_gate_serves(self, tiny_causal, engines) -> None:
        seqs = _sequences(1, 6)
        plain = _engine(engines, tiny_causal, head="score", head_token_ids=(NO, YES))
        lenient = Gate(min_mean_tau=-1.0, max_dp=1.0)
        fp8 = _engine(
            engines, tiny_causal, head="score", head_token_ids=(NO, YES), precision="fp8",
            fp8_emulate=True, fp8_probe=(3, 12), fp8_gate=lenient,
        )  # fmt: skip
        choice = fp8.precision
        assert choice.used == "fp8" and choice.gate is not None and choice.gate.passed
        assert set(choice.gate.measured) == {"tau_mean", "tau_min", "max_dp"}
        assert "3 groups x 12 sequences" in choice.reason
        got, want = fp8.run(seqs), plain.run(seqs)
        gap = float(np.abs(got - want).max())
        # e4m3 products: near the exact margins, not equal to them (this tiny model's init of 0.2 makes
        # each layer amplify: ~15 % here; the exact arithmetic is checked against transformers below)
        assert 0 < gap < 0.25 * float(np.abs(want).max())
        # batch == single: per-token scales do not depend on the rest of the batch (a per-tensor one would)
        assert abs(float(fp8.run(seqs[:1])[0]) - float(got[0])) < 1e-5
        # once FP8 serves, the engine holds the e4m3 products only: 1 byte each where bf16 asked held 4 (fp32)
        served, full = fp8.runner.w, plain.runner.w
        assert all(getattr(layer, n).dtype == E4M3 for layer in served.layers for n in PRODUCTS)
        products = sum(getattr(layer, n).numel() for layer in full.layers for n in PRODUCTS)
        assert weight_bytes(served) == weight_bytes(full) - 3 * products

    def test_fp8_that_misses_its_gate_falls_back_with_the_figures(self, tiny_causal, engines) -> None:
        seqs = _sequences(2, 6)
        plain = _engine(engines, tiny_causal, head="score", head_token_ids=(NO, YES))
        impossible = Gate(min_mean_tau=1.01)
        fp8 = _engine(
            engines, tiny_causal, head="score", head_token_ids=(NO, YES), precision="fp8",
            fp8_emulate=True, fp8_probe=(2, 10), fp8_gate=impossible,
        )  # fmt: skip
        choice = fp8.precision
        assert choice.used == "bf16" and choice.gate is not None and not choice.gate.passed
        assert "missed its accuracy gate" in choice.reason and "tau_mean" in choice.reason
        assert np.array_equal(fp8.run(seqs), plain.run(seqs))

    def test_embedding_head_is_gated_on_cosine(self, tiny_causal, engines) -> None:
        fp8 = _engine(
            engines, tiny_causal.model, head="embedding", precision="fp8", fp8_emulate=True,
            fp8_probe=(2, 10), fp8_gate=Gate(min_cosine=0.9),
        )  # fmt: skip
        plain = _engine(engines, tiny_causal.model, head="embedding")
        choice = fp8.precision
        assert choice.used == "fp8" and choice.gate is not None
        assert choice.gate.measured["cosine_min"] >= 0.9
        seqs = _sequences(3, 5)
        cos = (fp8.run(seqs) * plain.run(seqs)).sum(1)
        assert bool((cos > 0.95).all()) and bool((cos < 1 - 1e-7).any())

    def test_fp8_forward_is_transformers_with_fake_quantised_products(self, tiny_causal, engines) -> None:
        """The reference: transformers' fp32 model with each layer's linear weights replaced by their
        dequantised e4m3 values (per output channel) and each linear input quantised and dequantised per
        row on the way in. The engine's FP8 forward (emulated) must compute the same, to fp32 rounding."""
        seqs = _sequences(4, 6)
        fp8 = _engine(
            engines, tiny_causal, head="score", head_token_ids=(NO, YES), precision="fp8",
            fp8_emulate=True, fp8_probe=(2, 8), fp8_gate=Gate(min_mean_tau=-1.0, max_dp=1.0),
        )  # fmt: skip
        got = fp8.run(seqs)
        model = copy.deepcopy(tiny_causal)
        for layer in model.model.layers:
            att, mlp = layer.self_attn, layer.mlp
            for lin in (
                att.q_proj,
                att.k_proj,
                att.v_proj,
                att.o_proj,
                mlp.gate_proj,
                mlp.up_proj,
                mlp.down_proj,
            ):
                fw = quantize_weight(lin.weight.data)
                lin.weight.data = dequantize(fw.q, fw.scale)
                lin.register_forward_pre_hook(lambda _, args: (dequantize(*quantize_rows(args[0])),))
        rows = model.lm_head.weight[[NO, YES]]
        with torch.inference_mode():
            want = [
                float(torch.diff(rows @ model.model(input_ids=torch.tensor([s])).last_hidden_state[0, -1]))
                for s in seqs
            ]
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)

    def test_before_warm_up_the_engine_reports_bf16(self, tiny_causal) -> None:
        engine = Engine(tiny_causal, head="score", head_token_ids=(NO, YES), precision="fp8")
        assert engine.precision.used == "bf16" and engine.precision.asked == "fp8"
        with pytest.raises(ValueError, match="precision"):
            Engine(tiny_causal, head="score", precision="fp16")


# -- settings, factories, /info --------------------------------------------------------------------------
class TestSettingsAndInfo:
    def test_settings_take_bf16_or_fp8(self, monkeypatch) -> None:
        monkeypatch.setenv("RERANK_PRECISION", "FP8")
        monkeypatch.setenv("RETRIEVAL_EMBEDDER_PRECISION", "fp8")
        assert RerankSettings().precision == "fp8" and RetrievalSettings().embedder_precision == "fp8"
        assert RerankSettings(precision="bf16").precision == "bf16"
        with pytest.raises(ValidationError):
            RerankSettings(precision="int4")
        with pytest.raises(ValidationError):
            RetrievalSettings(embedder_precision="fp16")

    def test_the_engine_reranker_reports_its_precision(self, tiny_qwen3_reranker_dir: Path) -> None:
        settings = RerankSettings(
            backend="qwen3-engine", model=str(tiny_qwen3_reranker_dir), device="cpu", precision="fp8"
        )
        reranker = make_reranker(settings)
        try:
            reranker.warm_up()
            assert reranker.precision == "bf16"  # type: ignore[attr-defined]  # the engine backend's
            assert "CUDA GPU" in reranker.precision_reason  # type: ignore[attr-defined]
        finally:
            reranker.engine.close()  # type: ignore[attr-defined]

    def test_info_shows_the_precision_and_why(self, ingest_settings: IngestSettings) -> None:
        class Fp8Reranker(FakeReranker):
            precision = "bf16"
            precision_reason = "FP8 missed its accuracy gate (tau_mean 0.95): serving bf16"

        with harness.client(ingest_settings, Fp8Reranker()) as (client, _):
            info = client.get("/info").json()
        reranker = info["models"]["reranker"]
        assert reranker["precision"] == "bf16" and "missed its accuracy gate" in reranker["precision_reason"]
        assert "precision" not in info["models"]["embedder"]  # the hash embedder has no engine
