"""SentenceTransformerEmbedder with the real bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from retrieval.backends.sentence_transformers import SentenceTransformerEmbedder
from retrieval.errors import ModelLoadError


def test_unit_vectors_of_384_dimensions(minilm_embedder: SentenceTransformerEmbedder) -> None:
    vectors = minilm_embedder.embed_documents(["A man is playing a guitar.", "", "Ein Satz auf Deutsch."])
    assert minilm_embedder.dimension == 384
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrases_score_higher_than_unrelated_text(minilm_embedder: SentenceTransformerEmbedder) -> None:
    [query] = minilm_embedder.embed_queries(["A man is playing a guitar."])
    paraphrase, unrelated = minilm_embedder.embed_documents(
        ["Someone is strumming a guitar.", "The central bank raised interest rates again."]
    )
    assert query @ paraphrase > query @ unrelated + 0.3


def test_count_tokens_agrees_with_the_tokenizer(minilm_embedder, minilm_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    for text in ["", "Hello world", "Tokenisation of unbelievably long words, 3.14159!"]:
        assert minilm_embedder.count_tokens(text) == len(
            tokenizer(text, add_special_tokens=False)["input_ids"]
        )
    assert minilm_embedder.count_tokens("Hello world") == 2


def test_name_is_stable_and_path_independent(minilm_embedder, minilm_dir: Path) -> None:
    assert minilm_embedder.name == "sentence-transformers:all-MiniLM-L6-v2:384"
    assert SentenceTransformerEmbedder(model=str(minilm_dir)).name == minilm_embedder.name


def test_max_tokens_counts_text_tokens(minilm_embedder, minilm_dir: Path) -> None:
    # 256 positions less [CLS] and [SEP]: a chunk of max_tokens tokens is read whole.
    assert minilm_embedder.max_tokens == 254
    short = SentenceTransformerEmbedder(model=str(minilm_dir), max_tokens=8)
    assert short.max_tokens == 8
    head = "one two three four five six seven eight"
    assert short.count_tokens(head) == 8
    a, b = short.embed_documents([head + " nine ten", head + " completely different tail"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    c, d = minilm_embedder.embed_documents([head + " nine ten", head + " completely different tail"])
    assert c @ d < 0.99


def test_queries_ignore_the_instruction(minilm_embedder: SentenceTransformerEmbedder) -> None:
    queries = minilm_embedder.embed_queries(["capital of France"], instruction="Retrieve passages")
    np.testing.assert_allclose(queries, minilm_embedder.embed_documents(["capital of France"]), atol=1e-6)


@pytest.mark.usefixtures("hub_offline")
def test_unreachable_hub_id_fails_fast_naming_the_setting() -> None:
    embedder = SentenceTransformerEmbedder(model="sieve-tests/no-such-bge-m3")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match="RETRIEVAL_EMBEDDER_MODEL"):
        embedder.warm_up()
    assert time.perf_counter() - started < 5.0
