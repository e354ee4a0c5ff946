"""Embedder training (``retrieval.backends.training``) on real code paths with small models: a few optimizer
steps each (slow tier). MiniLM (bundled, real weights) learns made-up words; the tiny Qwen3 embedder (2
layers, real vocabulary, random weights) only needs to show that training moves the vectors and that the
merged folder loads in Sieve's own backend. The reranker side:
``tests/unit/reranking/backends/test_training.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open

from api.relevance.training_data import write_manifest
from retrieval.backends.qwen3 import Qwen3Embedder
from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder
from retrieval.backends.training import EmbedderTrainConfig, is_qwen3, train_embedder
from tests.support.training import CODES

pytestmark = pytest.mark.slow  # training runs


def _mrr(embedder: SentenceTransformerEmbedder) -> float:
    queries = embedder.embed_queries([f"what is {code}" for code in CODES])
    passages = embedder.embed_documents(list(CODES.values()))
    ranks = (-(queries @ passages.T)).argsort(axis=1)
    return float(np.mean([1.0 / (1 + list(row).index(i)) for i, row in enumerate(ranks)]))


def _rows() -> list[tuple[str, str, list[str]]]:
    passages = list(CODES.values())
    return [
        (f"what is {c}", p, [passages[(i + 1) % len(passages)]]) for i, (c, p) in enumerate(CODES.items())
    ]


def _config(**kwargs: object) -> EmbedderTrainConfig:
    defaults: dict = {
        "batch_size": 8,
        "learning_rate": 1e-4,
        "save_steps": 2,
        "max_seq_length": 32,
        "seed": 0,
    }
    return EmbedderTrainConfig(**(defaults | kwargs))


@pytest.fixture(scope="module")
def trained_minilm(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("models") / "embedder-v1"
    stats = train_embedder(str(minilm_dir), _rows(), folder, folder / "checkpoints", _config(epochs=12))
    return folder, stats


def test_fine_tuned_minilm_learns_the_training_pairs(trained_minilm, minilm_embedder) -> None:
    folder, stats = trained_minilm
    assert stats["steps"] == 12 and stats["hard_negatives_per_row"] == 1
    before, after = _mrr(minilm_embedder), _mrr(SentenceTransformerEmbedder(model=str(folder)))
    assert after > before + 0.15, (before, after)


def test_trained_folder_loads_in_sieve_with_its_revision_in_the_name(trained_minilm) -> None:
    folder, _ = trained_minilm
    plain = SentenceTransformerEmbedder(model=str(folder))
    assert plain.name == "sentence-transformers:embedder-v1:384"
    assert plain.max_tokens == 254  # training used 32 tokens; the saved model serves with its own length
    manifest = write_manifest(folder, "embedder", "all-MiniLM-L6-v2", {})
    named = SentenceTransformerEmbedder(model=str(folder))
    assert named.name == f"sentence-transformers:embedder-v1@{manifest['revision']}:384"
    assert named.embed_documents(["a text"]).shape == (1, 384)


def test_an_interrupted_run_resumes_from_its_last_checkpoint(tmp_path: Path, minilm_dir: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    first = train_embedder(
        str(minilm_dir), _rows(), tmp_path / "a", checkpoints, _config(max_steps=2, batch_size=4)
    )
    assert first["resumed_from"] is None and (checkpoints / "checkpoint-2").is_dir()
    resumed = train_embedder(
        str(minilm_dir), _rows(), tmp_path / "b", checkpoints, _config(max_steps=3, batch_size=4), resume=True
    )
    assert resumed["resumed_from"] == "checkpoint-2" and resumed["steps"] == 3


def test_qwen3_embedder_lora_is_merged_into_a_plain_folder(
    tmp_path: Path, tiny_qwen3_embedding_dir: Path
) -> None:
    assert is_qwen3(str(tiny_qwen3_embedding_dir))
    out = tmp_path / "qwen3-embedder"
    stats = train_embedder(
        str(tiny_qwen3_embedding_dir),
        _rows()[:4],
        out,
        tmp_path / "ck",
        _config(max_steps=2, batch_size=4, learning_rate=0.05, lora_r=4),
    )
    assert stats["lora"] and stats["steps"] == 2  # step 1 is warm-up (lr 0)
    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        assert not [k for k in weights.keys() if "lora" in k]  # noqa: SIM118 - safe_open has no __iter__
    base = Qwen3Embedder(model=str(tiny_qwen3_embedding_dir)).embed_documents(["Solar panels"])
    trained = Qwen3Embedder(model=str(out)).embed_documents(["Solar panels"])
    assert trained.shape == base.shape and float(np.abs(trained - base).max()) > 1e-3
