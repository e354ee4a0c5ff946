"""Per-query legs (issue 16): embedders declare the languages they read, and hybrid search drops the dense
leg of a query in a language its embedder does not read (``retrieval.fusion.plan_legs``)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from retrieval.backends import make_embedder, sentence_transformer_languages
from retrieval.embedder import ALL_LANGUAGES, ENGLISH, parse_languages, reads
from retrieval.fusion import plan_legs
from retrieval.settings import RetrievalSettings
from tests.support.fakes import HashEmbedder

CHINESE = "蜜蜂為什麼會跳舞？"
ENGLISH_QUERY = "why do honey bees dance?"


def test_hybrid_chinese_query_with_an_english_only_embedder_runs_bm25_with_a_note() -> None:
    plan = plan_legs("hybrid", CHINESE, ENGLISH)
    assert (plan.mode, plan.language, plan.needs_vector) == ("bm25", "zh", False)
    assert plan.note is not None and "zh" in plan.note and "bm25" in plan.note


def test_hybrid_query_the_embedder_reads_keeps_both_legs() -> None:
    plan = plan_legs("hybrid", ENGLISH_QUERY, ENGLISH)
    assert (plan.mode, plan.note, plan.needs_vector) == ("hybrid", None, True)
    assert plan_legs("hybrid", CHINESE, ALL_LANGUAGES).mode == "hybrid"


@pytest.mark.parametrize("mode", ["dense", "bm25"])
def test_modes_other_than_hybrid_run_as_asked(mode: str) -> None:
    plan = plan_legs(mode, CHINESE, ENGLISH)
    assert (plan.mode, plan.note) == (mode, None)


def test_other_scripts_are_outside_english() -> None:
    assert plan_legs("hybrid", "почему пчёлы танцуют", ENGLISH).mode == "bm25"


def test_an_embedder_that_declares_nothing_is_assumed_multilingual() -> None:
    assert reads(HashEmbedder()) == ALL_LANGUAGES
    assert reads(SimpleNamespace(languages=["en"])) == ENGLISH
    with pytest.raises(ValueError, match="unknown embedder languages"):
        reads(SimpleNamespace(languages=["klingon"]))


def test_languages_setting() -> None:
    assert parse_languages("") is None
    assert parse_languages("ALL") == ALL_LANGUAGES
    assert parse_languages("en, zh") == frozenset({"en", "zh"})
    with pytest.raises(ValueError, match="RETRIEVAL_EMBEDDER_LANGUAGES"):
        parse_languages("en,fr")


def test_sentence_transformer_languages_from_the_model_name() -> None:
    assert sentence_transformer_languages("") == ENGLISH  # the bundled all-MiniLM-L6-v2
    assert sentence_transformer_languages("sentence-transformers/all-mpnet-base-v2") == ENGLISH
    assert sentence_transformer_languages("/models/all-MiniLM-L6-v2") == ENGLISH
    assert sentence_transformer_languages("paraphrase-multilingual-MiniLM-L12-v2") == ALL_LANGUAGES
    assert sentence_transformer_languages("/models/my-custom-model") == ALL_LANGUAGES


@pytest.mark.parametrize(
    ("kind", "model", "languages"),
    [
        ("minilm", "", ENGLISH),
        ("bge-m3", "", ALL_LANGUAGES),
        ("e5", "", ALL_LANGUAGES),
        ("e5", "enpt", ENGLISH),
        ("qwen3", "", ALL_LANGUAGES),
    ],
)
def test_the_backend_table_declares_languages(kind: str, model: str, languages: frozenset[str]) -> None:
    settings = RetrievalSettings(embedder=kind, embedder_model=model, embedder_device="cpu")
    assert reads(make_embedder(settings)) == languages  # built, not loaded


def test_the_setting_overrides_the_declaration() -> None:
    settings = RetrievalSettings(embedder="minilm", embedder_languages="en,zh")
    assert reads(make_embedder(settings)) == frozenset({"en", "zh"})
