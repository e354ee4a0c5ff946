"""The lexical analysis behind the bm25 leg (``retrieval.lexical``) and its use by the in-memory store."""

from __future__ import annotations

import re

import pytest

from retrieval.lexical import analyze, detect_language, terms
from retrieval.memory_store import InMemoryStore
from tests.contract.vector_store import DIM, EMBEDDER, make_chunk, put, unit

MIXED = [
    "What causes the proteins' folding？ Ｆｕｌｌ-width ＡＢＣ (e.g. C++, covid-19, 3.5%)",
    "陸特和漢斯雷頓開創了哪一地區對梵語的學術研究？",
    "iPhone手机和C++的covid-19研究，中华人民共和国！",
    "Привет, мир: snake_case and «quotes» — ¿qué?",
    "北京 is the capital; 「引號」『括號』【方括號】",
]


@pytest.mark.parametrize("text", ["北京是中国的首都？", "What is BM25？", "？！。，、；：「」"])
def test_full_width_punctuation_is_never_a_term(text: str) -> None:
    assert not {"？", "?", "！", "。", "，", "「", "」"} & set(terms(text))


def test_english_is_lower_cased_stemmed_and_loses_stop_words() -> None:
    assert terms("The Proteins are FOLDING in the cells") == ["protein", "fold", "cell"]
    assert analyze("protein folds") == analyze("Proteins folding")


def test_full_width_and_compatibility_forms_are_folded() -> None:
    assert terms("ＡＢＣ１２３ ﬁsh") == terms("abc123 fish")


def test_chinese_is_segmented_for_search() -> None:
    found = terms("中华人民共和国的首都")
    assert {"中华", "人民", "共和国", "中华人民共和国", "首都"} <= set(found)
    assert all(len(term) < 8 for term in found)  # words, not the whole run


def test_latin_words_in_chinese_text_are_analysed_like_english() -> None:
    found = terms("iPhone手机和C++的covid-19研究")
    assert {"iphon", "手机", "c", "covid", "19", "研究"} <= set(found)
    assert terms("running", "zh") == terms("running", "en") == ["run"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("The mitochondria is the powerhouse of the cell", "en"),
        ("北京是中国的首都", "zh"),
        ("陸特和漢斯雷頓開創了哪一地區對梵語的學術研究？", "zh"),
        ("什么是 machine learning", "zh"),  # three ideographs outweigh two English words
        ("Beijing (北京) is the capital of China", "en"),
        ("Москва — столица России", "other"),
        ("", "other"),
        ("1 2 3", "other"),
    ],
)
def test_language_is_detected_from_the_scripts(text: str, language: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize("text", MIXED)
def test_terms_are_word_characters_that_a_standard_tokenizer_splits_back_unchanged(text: str) -> None:
    from milvus_lite.analyzer.standard import StandardAnalyzer  # Milvus Lite's "standard": \w+, lower case

    analysed = analyze(text)
    assert analysed == " ".join(analysed.split())  # single spaces, nothing else between terms
    assert all(re.fullmatch(r"[^\W_]+", term) for term in analysed.split())
    assert StandardAnalyzer().tokenize(analysed) == analysed.split()


def test_unknown_language_is_refused() -> None:
    with pytest.raises(ValueError, match="language"):
        terms("text", "xx")  # type: ignore[arg-type] # what a caller might pass


# ---- the in-memory store's bm25 uses the same analysis ----------------------------------------------------


@pytest.fixture
def store() -> InMemoryStore:
    store = InMemoryStore()
    store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
    return store


def test_bm25_matches_inflected_forms_and_ignores_a_question_mark(store: InMemoryStore) -> None:
    folding = make_chunk(document_id="fold", text="Protein folding is driven by hydrophobic collapse.")
    asking = make_chunk(document_id="ask", text="Why? Nobody knows?")
    put(store, [folding, asking])

    hits = store.search("acme", None, limit=5, mode="bm25", query_text="What folds proteins?")

    assert [hit.id for hit in hits] == [folding.id]


def test_bm25_on_chinese_does_not_reward_a_full_width_question_mark(store: InMemoryStore) -> None:
    capital = make_chunk(document_id="capital", text="北京是中国的首都")
    question = make_chunk(document_id="question", text="上海是一个大城市吗？")
    put(store, [capital, question])

    hits = store.search("acme", None, limit=5, mode="bm25", query_text="中国的首都在哪里？")

    assert [hit.id for hit in hits] == [capital.id]


def test_the_context_is_indexed_but_not_shown(store: InMemoryStore) -> None:
    chunk = make_chunk(text="Warm the pot first.").model_copy(update={"context": "Brewing tea > Steps"})
    put(store, [chunk], [unit(0)])

    hits = store.search("acme", None, limit=5, mode="bm25", query_text="brewing")

    assert [(hit.id, hit.text) for hit in hits] == [(chunk.id, "Warm the pot first.")]


def test_the_stop_words_are_the_maintained_english_list() -> None:
    stopwords = pytest.importorskip("bm25s.stopwords")
    from retrieval.lexical import ENGLISH_STOP_WORDS

    assert frozenset(stopwords.STOPWORDS_EN) == ENGLISH_STOP_WORDS
