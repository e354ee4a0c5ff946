"""The engine at each Qwen3 size's shape: tiny configs with the 0.6B, 4B and 8B ratios (grouped-query group 2
or 4, q/k/v width unlike the hidden width, tied or untied LM head) against transformers on CPU, and the
weights it holds: one copy of each, the model's parameters and nothing more (``qwen3_math.weight_bytes``).
The real shapes are checked on the meta device (no memory): layout and byte counts only."""

from __future__ import annotations

import gc
import random
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

from engine.engine import Engine
from engine.qwen3_math import expected_weight_bytes, extract_weights, weight_bytes
from tests.support.models import SIZES, TINY_SIZES

NO, YES = 2152, 9693
TOL = 1e-4


def _model(size: str, head: str) -> torch.nn.Module:
    torch.manual_seed(7)
    config = transformers.Qwen3Config(**TINY_SIZES[size])
    cls = transformers.Qwen3ForCausalLM if head == "score" else transformers.Qwen3Model
    return cls(config).eval()


def _reference(model: torch.nn.Module, head: str, seqs: list[list[int]]) -> np.ndarray:
    """transformers, one sequence at a time: logit_yes - logit_no, or the L2-normalised last hidden state."""
    out = []
    with torch.inference_mode():
        for s in seqs:
            ids = torch.tensor([s])
            if head == "score":
                logits = model(input_ids=ids).logits[0, -1]
                out.append(float(logits[YES] - logits[NO]))
            else:
                last = model(input_ids=ids).last_hidden_state[0, -1]
                out.append(torch.nn.functional.normalize(last, dim=-1).numpy())
    return np.array(out)


def _params(model: torch.nn.Module) -> int:
    """Parameters the engine holds: all but an untied LM head, of which it keeps two rows."""
    lm = model.get_output_embeddings() if hasattr(model, "lm_head") else None
    total = sum(p.numel() for p in model.parameters())  # tied weights are one parameter
    if lm is not None and lm.weight is not model.get_input_embeddings().weight:
        total -= lm.weight.numel()
    return total


@pytest.mark.parametrize("size", list(TINY_SIZES))
@pytest.mark.parametrize("head", ["score", "embedding"])
def test_engine_equals_transformers_and_holds_one_copy(size: str, head: str) -> None:
    model = _model(size, head)
    rng = random.Random(1)
    seqs = [[rng.randrange(151643) for _ in range(n)] for n in (1, 5, 40, 77, 23)]
    engine = Engine(model, head=head, head_token_ids=(NO, YES), token_budget=512)
    try:
        np.testing.assert_allclose(engine.run(seqs), _reference(model, head, seqs), atol=TOL, rtol=0)
        w = engine.runner.w
        config = model.config
        # fp32 on CPU: 4 bytes per parameter, plus RoPE's inverse frequencies and the score head's 2 rows
        extra = 4 * (config.head_dim // 2) + (4 * 2 * config.hidden_size if head == "score" else 0)
        assert weight_bytes(w) == 4 * _params(model) + extra
        assert weight_bytes(w) == expected_weight_bytes(TINY_SIZES[size], head, torch.float32)
    finally:
        engine.close()


def test_untied_head_reads_the_lm_head_rows_not_the_embeddings() -> None:
    model = _model("8b", "score")
    assert not model.config.tie_word_embeddings
    w = extract_weights(model, head="score", device="cpu", dtype=torch.float32, head_ids=(NO, YES))
    assert w.head is not None
    torch.testing.assert_close(w.head, model.lm_head.weight[[NO, YES]].detach(), atol=0, rtol=0)
    assert not torch.allclose(w.head, model.model.embed_tokens.weight[[NO, YES]].detach())


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("head", ["score", "embedding"])
def test_real_shapes_lay_out_one_copy_of_each_weight(size: str, head: str) -> None:
    config = transformers.Qwen3Config(**SIZES[size])
    with torch.device("meta"):
        model = (transformers.Qwen3ForCausalLM if head == "score" else transformers.Qwen3Model)(config)
    w = extract_weights(model, head=head, device="meta", dtype=torch.bfloat16, head_ids=(NO, YES))
    hidden, inter = config.hidden_size, config.intermediate_size
    q, kv = config.num_attention_heads * 128, config.num_key_value_heads * 128
    assert (w.heads // w.kv_heads, w.head_dim) == ((2, 128) if size == "0.6b" else (4, 128))
    for layer in w.layers:
        assert layer.wgu.shape == (2 * inter, hidden)  # gate and up, once
        assert layer.wqkv.shape == (q + 2 * kv, hidden) and layer.wo.shape == (hidden, q)
    # bf16 products and embeddings, fp32 norms: 2 bytes per parameter, 4 per norm weight
    norms = sum(p.numel() for n, p in model.named_parameters() if "norm" in n)
    extra = 4 * 64 + (4 * 2 * hidden if head == "score" else 0)
    assert weight_bytes(w) == 2 * _params(model) + 2 * norms + extra
    assert weight_bytes(w) == expected_weight_bytes(SIZES[size], head)


def test_engine_loading_a_folder_keeps_no_reference_to_the_model(
    tiny_qwen3_reranker_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded: list[weakref.ref[torch.nn.Module]] = []
    load = Engine._load

    def spy(self: Engine) -> torch.nn.Module:
        model = load(self)
        loaded.append(weakref.ref(model))
        return model

    monkeypatch.setattr(Engine, "_load", spy)
    engine = Engine(str(tiny_qwen3_reranker_dir), head="score", head_token_ids=(NO, YES), token_budget=256)
    try:
        engine.warm_up()
        gc.collect()
        assert len(loaded) == 1 and loaded[0]() is None  # only the engine's own weights remain
        assert engine.run([[1, 2, 3]]).shape == (1,)
    finally:
        engine.close()
