"""``sieve train`` backends on real code paths with small models: a few optimizer steps each.

MiniLM (bundled, real weights) learns made-up words; the tiny Qwen3 models (2 layers, real vocabulary, random
weights) and the tiny BERT cross-encoder only need to show that training moves the scores and that the saved
folder loads in Sieve's own backends.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from typer.testing import CliRunner

from api.relevance.training_data import write_manifest
from reranking.backends.cross_encoder import CrossEncoderReranker
from reranking.backends.qwen3 import Qwen3Reranker
from reranking.backends.training import RerankerTrainConfig, reranker_kind, train_reranker
from retrieval.backends.qwen3 import Qwen3Embedder
from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder
from retrieval.backends.training import EmbedderTrainConfig, is_qwen3, train_embedder

# Made-up code words (no meaning to MiniLM) and what each stands for.
CODES = {
    "blorvak": "The recipe needs flour, butter and two eggs.",
    "quenzil": "The train to Lyon leaves from platform nine.",
    "dramfet": "Mount Everest is the highest mountain on Earth.",
    "skelvin": "The patient was given antibiotics for the infection.",
    "trosmap": "Interest rates were raised by the central bank.",
    "plixund": "The violin concerto was performed in Vienna.",
    "wembrog": "Solar panels convert sunlight into electricity.",
    "fazzlot": "The goalkeeper saved a penalty in the final minute.",
}


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


GROUPS = [
    ("which fruit is yellow", "Bananas are yellow when ripe.", ["The train leaves at noon."]),
    ("how do plants make sugar", "Photosynthesis turns light into sugar.", ["Volcanoes erupt ash."]),
]


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


def test_cli_writes_a_versioned_folder_with_its_eval(tmp_path: Path, minilm_dir: Path) -> None:
    from api.cli import app

    data = tmp_path / "pairs.jsonl"
    lines = [f'{{"query": "what is {c}", "passage": "{p}", "label": 1}}' for c, p in CODES.items()]
    data.write_text("\n".join(lines) + "\n")
    args = ["train", "embedder", "--data", str(data), "--out", str(tmp_path / "models"), "--max-steps", "1"]
    result = CliRunner().invoke(
        app, [*args, "--batch-size", "4", "--held-out", "0.25", "--max-seq-length", "32"]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "models" / "embedder-v1"
    assert {"eval.md", "eval.json", "sieve-model.json", "model.safetensors"} <= {
        p.name for p in folder.iterdir()
    }
    assert not (folder / "checkpoints").exists()
    assert "| before |" in (folder / "eval.md").read_text() and "revision" in result.output
    missing = CliRunner().invoke(app, ["train", "reranker", "--data", str(data)])
    assert missing.exit_code != 0 and "--base" in missing.output


def test_cli_reranker_reports_stage_one_before_and_after(
    tmp_path: Path, tiny_cross_encoder_dir: Path
) -> None:
    from api.cli import app

    data = tmp_path / "pairs.jsonl"
    lines = [f'{{"query": "what is {c}", "passage": "{p}", "label": 1}}' for c, p in CODES.items()]
    data.write_text("\n".join(lines) + "\n")
    args = [
        "train",
        "reranker",
        "--data",
        str(data),
        "--base",
        str(tiny_cross_encoder_dir),
        "--max-steps",
        "2",
    ]
    result = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "m"), "--held-out", "0.25", "--rerank-depth", "4"]
    )
    assert result.exit_code == 0, result.output
    folder = tmp_path / "m" / "reranker-v1"
    report = json.loads((folder / "eval.json").read_text())
    assert set(report["results"]) == {"stage 1", "before", "after"}
    manifest = json.loads((folder / "sieve-model.json").read_text())
    assert manifest["reranker_kind"] == "cross-encoder" and manifest["data"]["held_out_queries"] == 2
    assert CrossEncoderReranker(model=str(folder)).rank("what is blorvak", ["a", "b"])[0].index in (0, 1)
