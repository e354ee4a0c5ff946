"""Qwen3-Embedding backend against a plain reference of the model card's recipe (tiny Qwen3, real vocab)."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

from engine.prompts import QWEN3_EMBEDDING_INSTRUCTION, format_query
from retrieval.backends.qwen3 import Qwen3Embedder
from retrieval.errors import ModelLoadError

QUERIES = ["what is the capital of France?", "how do plants make energy", "北京", "x"]
TOL = 1e-4
DOCS = [
    "The capital of France is Paris.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "",
    "短い中文文档：北京是中国的首都。",
    "def add(a, b):\n    return a + b\n",
    "Paris " * 40,
]


class Reference:
    """The model card's code, written plainly: eos appended as text, tokenizer padding (left), last token."""

    def __init__(self, folder: Path) -> None:
        self.tokenizer = AutoTokenizer.from_pretrained(folder, padding_side="left")
        self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()

    def embed(self, texts: list[str], max_length: int = 8192) -> np.ndarray:
        batch = self.tokenizer(
            [t + "<|endoftext|>" for t in texts],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.no_grad():
            hidden = self.model(**batch).last_hidden_state
        return F.normalize(hidden[:, -1], p=2, dim=1).numpy()


@pytest.fixture(scope="module")
def reference(tiny_qwen3_embedding_dir: Path) -> Reference:
    return Reference(tiny_qwen3_embedding_dir)


def _texts(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    words = [
        "retrieval",
        "rerank",
        "vector",
        "index",
        "query",
        "passage",
        "Milvus",
        "检索",
        "число",
        "token",
        "model",
    ]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 40))) for _ in range(n)]


def test_documents_match_reference(qwen3_embedder: Qwen3Embedder, reference: Reference) -> None:
    ours = qwen3_embedder.embed_documents(DOCS)
    assert ours.dtype == np.float32
    assert np.abs(ours - reference.embed(DOCS)).max() < TOL


def test_queries_match_reference_with_instruction(
    qwen3_embedder: Qwen3Embedder, reference: Reference
) -> None:
    expected = reference.embed([f"Instruct: {QWEN3_EMBEDDING_INSTRUCTION}\nQuery:{q}" for q in QUERIES])
    assert np.abs(qwen3_embedder.embed_queries(QUERIES) - expected).max() < TOL
    custom = "Given a claim, find documents that refute it"
    expected = reference.embed([f"Instruct: {custom}\nQuery:{q}" for q in QUERIES])
    assert np.abs(qwen3_embedder.embed_queries(QUERIES, instruction=custom) - expected).max() < TOL


def test_query_format_is_exact(qwen3_embedder: Qwen3Embedder) -> None:
    assert format_query("q?", "Find it") == "Instruct: Find it\nQuery:q?"
    via_query = qwen3_embedder.embed_queries(["q?"], instruction="Find it")
    via_document = qwen3_embedder.embed_documents(["Instruct: Find it\nQuery:q?"])
    np.testing.assert_allclose(via_query, via_document, atol=1e-6)
    # Documents get no instruction, and an explicitly empty instruction means none.
    assert not np.allclose(
        qwen3_embedder.embed_queries(["q?"]), qwen3_embedder.embed_documents(["q?"]), atol=1e-3
    )
    np.testing.assert_allclose(
        qwen3_embedder.embed_queries(["q?"], instruction=""),
        qwen3_embedder.embed_documents(["q?"]),
        atol=1e-6,
    )


def test_recipe_appends_endoftext_and_pools_the_last_token(
    qwen3_embedder: Qwen3Embedder, reference: Reference
) -> None:
    ids = qwen3_embedder._token_ids(["Hello world", ""])
    assert ids == [[9707, 1879, 151643], [151643]]
    # Without <|endoftext|> the vector would be another one: the recipe is visible in the numbers.
    batch = reference.tokenizer(["Hello world"], return_tensors="pt")
    with torch.no_grad():
        no_eos = F.normalize(reference.model(**batch).last_hidden_state[:, -1], dim=1).numpy()
    assert np.abs(qwen3_embedder.embed_documents(["Hello world"]) - no_eos).max() > 1e-2


def test_left_padding_gives_the_unpadded_vectors(qwen3_embedder: Qwen3Embedder, reference: Reference) -> None:
    from retrieval.backends.qwen3 import _left_pad

    ids, mask, positions = _left_pad([[5, 6, 7], [8]], pad_id=151643, device="cpu")
    assert ids.tolist() == [[5, 6, 7], [151643, 151643, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
    short, long = "tiny", "a much longer document " * 10
    batched = qwen3_embedder.embed_documents([short, long])
    np.testing.assert_allclose(batched[0], reference.embed([short])[0], atol=1e-5)


def test_batch_of_64_equals_single_calls(qwen3_embedder: Qwen3Embedder) -> None:
    texts = _texts(64)
    batched = qwen3_embedder.embed_documents(texts)
    singles = np.vstack([qwen3_embedder.embed_documents([t]) for t in texts])
    assert np.abs(batched - singles).max() < 1e-5


def test_input_order_does_not_change_vectors(qwen3_embedder: Qwen3Embedder) -> None:
    texts = _texts(20, seed=3)
    perm = np.random.default_rng(0).permutation(len(texts))
    forward = qwen3_embedder.embed_documents(texts)
    shuffled = qwen3_embedder.embed_documents([texts[i] for i in perm])
    assert np.abs(forward[perm] - shuffled).max() < 1e-5


def test_mrl_dimension_is_a_renormalised_prefix(tiny_qwen3_embedding_dir: Path, qwen3_embedder) -> None:
    short = Qwen3Embedder(model=str(tiny_qwen3_embedding_dir), dimension=16)
    assert short.dimension == 16
    assert short.name == "qwen3-embedding:tiny-qwen3-embedding:16"
    assert qwen3_embedder.name == "qwen3-embedding:tiny-qwen3-embedding:64"
    full = qwen3_embedder.embed_documents(DOCS)
    prefix = full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True)
    ours = short.embed_documents(DOCS)
    assert ours.shape == (len(DOCS), 16)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert np.abs(ours - prefix).max() < 1e-5


def test_dimension_wider_than_the_model_is_refused(tiny_qwen3_embedding_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="RETRIEVAL_EMBEDDER_DIMENSION"):
        Qwen3Embedder(model=str(tiny_qwen3_embedding_dir), dimension=65).warm_up()


def test_max_tokens_truncates_the_text_and_keeps_endoftext(
    tiny_qwen3_embedding_dir: Path, reference: Reference
) -> None:
    embedder = Qwen3Embedder(model=str(tiny_qwen3_embedding_dir), max_tokens=8)
    assert embedder.max_tokens == 8
    text = "one two three four five six seven eight nine ten eleven twelve"
    ids = embedder._token_ids([text])[0]
    assert len(ids) == 9 and ids[-1] == 151643
    assert ids[:8] == reference.tokenizer(text)["input_ids"][:8]
    head = reference.tokenizer.decode(ids[:8])
    np.testing.assert_allclose(embedder.embed_documents([text]), reference.embed([head]), atol=1e-5)
    assert embedder.count_tokens(text) == len(reference.tokenizer(text)["input_ids"]) > 8


def test_default_max_tokens_is_the_model_cards(qwen3_embedder: Qwen3Embedder) -> None:
    assert qwen3_embedder.max_tokens == 8191  # + <|endoftext|> = 8192


@pytest.mark.usefixtures("hub_offline")
def test_unreachable_hub_id_fails_fast_naming_the_setting() -> None:
    embedder = Qwen3Embedder(model="sieve-tests/no-such-qwen3-embedding")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="RETRIEVAL_EMBEDDER_MODEL"):
        embedder.warm_up()
    assert time.perf_counter() - started < 5.0
