"""A rebuilt index's collection name says what built it, the lexical analysis included."""

from __future__ import annotations

import pytest

from ingestion import indexes
from ingestion.indexes import collection_name


def test_the_same_builder_gives_the_same_name() -> None:
    name = collection_name("sieve_chunks", "minilm", "/models/minilm", "abc")

    assert name == collection_name("sieve_chunks", "minilm", "/models/minilm", "abc")
    assert name.startswith("sieve_chunks_") and name != collection_name("sieve_chunks", "minilm", "", "abc")


def test_a_new_lexical_analysis_gives_a_new_name(monkeypatch: pytest.MonkeyPatch) -> None:
    before = collection_name("sieve_chunks", "minilm", "/models/minilm", "abc")
    monkeypatch.setattr(indexes, "ANALYSIS_VERSION", "next")

    # so `sieve reindex` with the serving embedder is not refused as "already serving"
    assert collection_name("sieve_chunks", "minilm", "/models/minilm", "abc") != before
