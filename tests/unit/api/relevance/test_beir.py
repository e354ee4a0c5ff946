"""Reading BEIR-layout folders, and the fixed eval/train split of queries."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from api.relevance.beir import BeirFormatError, load_beir, query_split
from tests.support.tiny_beir import DOCS, write_tiny_beir


@pytest.mark.parametrize("gzipped", [True, False])
def test_loads_corpus_queries_and_qrels(tmp_path: Path, gzipped: bool) -> None:
    data = load_beir(write_tiny_beir(tmp_path / "tiny", gzipped=gzipped))

    assert data.name == "tiny" and data.qrels_name == "test"
    assert list(data.corpus) == list(DOCS)
    assert data.document_text("d1") == "Photosynthesis\n\n" + DOCS["d1"][1]
    assert list(data.queries) == ["q1", "q2", "q3", "q4"]  # q5 has no judgement
    assert data.qrels["q2"] == {"d4": 1, "d3": 0}
    assert data.skipped["unjudged"] == 1


def test_split_rule_is_a_stable_hash_of_the_query_id() -> None:
    ids = [str(i) for i in range(1000)]
    held_out = [qid for qid in ids if query_split(qid) == "eval"]
    assert held_out == [q for q in ids if int(hashlib.sha256(q.encode()).hexdigest(), 16) % 5 == 0]
    assert 150 < len(held_out) < 250


def test_split_and_limits(tmp_path: Path) -> None:
    folder = write_tiny_beir(tmp_path / "tiny")
    assert {query_split(q) for q in ("q1", "q2", "q3", "q4")} == {"train"}
    assert list(load_beir(folder, split="train").queries) == ["q1", "q2", "q3", "q4"]
    with pytest.raises(BeirFormatError, match="split 'eval'"):
        load_beir(folder, split="eval")

    limited = load_beir(folder, max_queries=1, corpus_limit=1)
    assert list(limited.queries) == ["q1"]
    assert set(limited.corpus) == {"d1", "d2"}  # the first document, and the other one judged for q1


def test_folders_not_in_the_layout_are_refused(tmp_path: Path) -> None:
    folder = write_tiny_beir(tmp_path / "tiny")
    with pytest.raises(BeirFormatError, match="dev.tsv"):
        load_beir(folder, qrels="dev")
    (folder / "qrels" / "test.tsv").rename(folder / "qrels" / "train.tsv")
    assert load_beir(folder).qrels_name == "train"  # no test.tsv: the only file there
    (folder / "qrels" / "dev.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(BeirFormatError, match="--qrels"):
        load_beir(folder)

    empty = tmp_path / "empty"
    (empty / "qrels").mkdir(parents=True)
    (empty / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(BeirFormatError, match="queries.jsonl"):
        load_beir(empty)
    (empty / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    with pytest.raises(BeirFormatError, match="corpus.jsonl"):
        load_beir(empty)
