"""Reranker training (``reranking.backends.training``) on real code paths with tiny models: a few optimizer
steps each (slow tier). The tiny Qwen3 reranker (2 layers, real vocabulary, random weights) and the tiny BERT
cross-encoder only need to show that training moves the scores and that the saved folder loads in Sieve's own
backends. The embedder side: ``tests/unit/retrieval/backends/test_training.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from reranking.backends.cross_encoder import CrossEncoderReranker
from reranking.backends.qwen3 import Qwen3Reranker
from reranking.backends.training import RerankerTrainConfig, reranker_kind, train_reranker
from tests.support.training import GROUPS

pytestmark = pytest.mark.slow  # training runs


def _margin(reranker) -> float:
    """Mean P(relevant) of the positives less that of the negatives, on the training groups."""
    pos = [reranker.rank(q, [p])[0].score for q, p, _ in GROUPS]
    neg = [reranker.rank(q, [n[0]])[0].score for q, _, n in GROUPS]
    return float(np.mean(pos) - np.mean(neg))


def test_qwen3_reranker_lora_moves_scores_and_resumes(
    tmp_path: Path, tiny_qwen3_reranker_dir: Path, qwen3_reranker
) -> None:
    assert reranker_kind(str(tiny_qwen3_reranker_dir)) == "qwen3"
    config = RerankerTrainConfig(
        batch_size=2, learning_rate=2e-2, max_steps=3, save_steps=2, lora_r=4, epochs=3
    )
    out = tmp_path / "reranker-v1"
    stats = train_reranker("qwen3", str(tiny_qwen3_reranker_dir), GROUPS, out, tmp_path / "ck", config)
    assert stats["steps"] == 3 and (tmp_path / "ck" / "step-2" / "state.pt").is_file()
    trained = Qwen3Reranker(model=str(out))
    assert _margin(trained) > _margin(qwen3_reranker) + 0.05
    resumed = train_reranker(
        "qwen3", str(tiny_qwen3_reranker_dir), GROUPS, tmp_path / "r", tmp_path / "ck", config, resume=True
    )
    assert resumed["resumed_from"] == "step-2"


def test_cross_encoder_fine_tune_loads_in_sieve(
    tmp_path: Path, tiny_cross_encoder_dir: Path, cross_encoder_reranker
) -> None:
    assert reranker_kind(str(tiny_cross_encoder_dir)) == "cross-encoder"
    config = RerankerTrainConfig(batch_size=4, learning_rate=1e-3, max_steps=4, save_steps=2, epochs=4)
    out = tmp_path / "reranker-v1"
    stats = train_reranker("cross-encoder", str(tiny_cross_encoder_dir), GROUPS, out, tmp_path / "ck", config)
    assert stats["steps"] == 4 and stats["pos_weight"] == 1.0
    trained = CrossEncoderReranker(model=str(out))
    assert _margin(trained) > _margin(cross_encoder_reranker)
    with pytest.raises(ValueError, match="unknown reranker kind"):
        train_reranker("bm25", "x", GROUPS, out, tmp_path / "ck", config)
