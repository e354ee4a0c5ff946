"""The resident postings of the lexical index: the same BM25 as FTS5's, kept current from the change log."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest

from retrieval import lexical_index
from retrieval.lexical_index import LexicalHit, LexicalRow, SqliteLexicalIndex
from retrieval.lexical_postings import tokens

WORDS = [f"w{i}" for i in range(3000)] + ["été", "北京", "x2", "co2"]


def row(id_: str, terms: str, *, doc: str = "d1", metadata: dict[str, object] | None = None) -> LexicalRow:
    return LexicalRow("acme", id_, doc, "v1", terms, 0, None, f"text of {id_}", metadata or {})


def text(rng: np.random.Generator) -> str:
    """Terms drawn from a Zipf-shaped vocabulary (a few words in most rows, most words in few)."""
    weights = 1.0 / np.arange(1, len(WORDS) + 1) ** 1.1
    n = int(rng.integers(1, 300)) if rng.random() < 0.9 else int(rng.integers(300, 900))
    return " ".join(rng.choice(WORDS, size=n, p=weights / weights.sum()))


def corpus(seed: int, count: int) -> list[LexicalRow]:
    rng = np.random.default_rng(seed)
    return [row(f"c{i}", text(rng), doc=f"d{i % 50}", metadata={"n": i % 7}) for i in range(count)]


def queries(seed: int, count: int) -> list[str]:
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, len(WORDS) + 1) ** 0.6  # common words asked too (left out by both paths)
    out = []
    for _ in range(count):
        words = list(rng.choice(WORDS, size=int(rng.integers(1, 15)), p=weights / weights.sum()))
        out.append(" ".join(words + (["nosuchword"] if rng.random() < 0.1 else [])))
    return out


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "coll"


def same_ranking(resident: list[LexicalHit], fts: list[LexicalHit]) -> None:
    """Equal scores rank for rank (to 1e-9 relative) and the same chunks above the last score; chunks of that
    last score may differ (FTS5 orders exact ties its own way)."""
    assert len(resident) == len(fts)
    ours, theirs = [h.score for h in resident], [h.score for h in fts]
    assert ours == pytest.approx(theirs, rel=1e-9, abs=0)
    both = {h.id: h.score for h in fts}
    for hit in resident:
        if hit.id in both:
            assert hit.score == pytest.approx(both[hit.id], rel=1e-9, abs=0)
    if fts:
        last = theirs[-1]
        above = {h.id for h in fts if h.score > last * (1 + 1e-9)}
        assert above == {h.id for h in resident if h.score > last * (1 + 1e-9)}


def compare(resident: SqliteLexicalIndex, fts: SqliteLexicalIndex, seed: int, count: int = 60, **kw) -> None:
    before = resident.resident_searches
    for query in queries(seed, count):
        same_ranking(
            resident.search("acme", query, limit=50, **kw), fts.search("acme", query, limit=50, **kw)
        )
    assert resident.resident_searches == before + count  # every one answered from the resident postings


def test_scores_equal_fts5_through_writes_deletes_and_another_process(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexical_index, "_REBUILD_FLOOR", 10_000)  # every change through the log
    writer = SqliteLexicalIndex(folder)
    writer.upsert(corpus(1, 2500))
    fts = SqliteLexicalIndex(folder, resident=False)
    other = SqliteLexicalIndex(folder)  # another process: reads the file, never writes it
    assert writer.warm("acme") and other.warm("acme")
    compare(writer, fts, seed=2)

    rng = np.random.default_rng(3)
    writer.upsert([row(f"c{i}", text(rng), doc=f"d{i % 50}") for i in range(0, 2500, 7)])  # new terms
    writer.upsert([row(f"new{i}", f"{text(rng)} brandnew{i % 3}") for i in range(120)])  # and new rows
    writer.delete_ids("acme", [f"c{i}" for i in range(1, 2500, 11)])
    writer.delete_document("acme", "d3")
    writer.upsert([row("c1", "w1 w2 w3 brandnew1"), row("c12", text(rng))])  # deleted, then written again
    compare(writer, fts, seed=4)
    compare(other, fts, seed=4)
    compare(other, fts, seed=5, filters={"n": 3})
    assert ids(other.search("acme", "brandnew1", limit=500)) == ids(
        fts.search("acme", "brandnew1", limit=500)
    )

    writer.delete_ids("acme", [f"new{i}" for i in range(120)])  # rows of the tail deleted again
    compare(other, fts, seed=6)
    assert writer.builds == 1 and other.builds == 1  # all of it from the change log, no second build


def test_a_trimmed_log_or_a_large_tail_means_a_new_build(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = SqliteLexicalIndex(folder, changes_kept=10)
    writer.upsert(corpus(7, 800))
    reader, fts = SqliteLexicalIndex(folder), SqliteLexicalIndex(folder, resident=False)
    reader.warm("acme")
    rng = np.random.default_rng(8)
    writer.upsert([row(f"c{i}", text(rng)) for i in range(30)])  # 30 changes, the log keeps 10
    with sqlite3.connect(next(folder.glob("*.sqlite"))) as db:
        assert db.execute("SELECT count(*) FROM changes").fetchone()[0] == 10
    query = queries(9, 1)[0]
    same_ranking(reader.search("acme", query, limit=50), fts.search("acme", query, limit=50))
    assert reader.resident_searches == 0  # the log no longer reaches back: FTS5 answered, a build started
    reader.warm("acme")
    assert reader.builds == 2
    compare(reader, fts, seed=10)

    monkeypatch.setattr(lexical_index, "_REBUILD_FLOOR", 0)
    writer.upsert([row(f"c{i}", text(rng)) for i in range(100, 400)])  # more than a quarter of the rows
    reader.search("acme", query, limit=5)
    reader.warm("acme")
    assert reader.builds == 3
    compare(reader, fts, seed=11)


def ids(hits: list[LexicalHit]) -> list[str]:
    return [hit.id for hit in hits]


def test_filters_limit_and_odd_queries(folder: Path) -> None:
    index, fts = SqliteLexicalIndex(folder), SqliteLexicalIndex(folder, resident=False)
    index.upsert(
        [
            row(f"c{i}", " ".join(["term"] * (i + 1) + ["pad"] * 5), doc=f"d{i % 3}", metadata={"n": i})
            for i in range(60)
        ]
        + [row(f"other{i}", "filler words only") for i in range(80)]
    )
    index.warm("acme")
    only = index.search("acme", "term", limit=30, filters={"document_id": "d1"})
    assert sorted(ids(only)) == sorted(f"c{i}" for i in range(1, 60, 3))
    assert ids(only) == ids(fts.search("acme", "term", limit=30, filters={"document_id": "d1"}))
    assert ids(index.search("acme", "term", limit=1, filters={"n": 0})) == ["c0"]  # the weakest, past page 1
    assert index.search("acme", "term", limit=1, filters={"n": True}) == []
    assert index.search("acme", "term", limit=5, filters={"document_id": "nope"}) == []
    same_ranking(index.search("acme", "term pad", limit=7), fts.search("acme", "term pad", limit=7))
    assert index.search("acme", "term", limit=0) == []
    assert index.search("acme", "", limit=5) == [] and index.search("acme", "unknown words", limit=5) == []
    assert index.search("acme", "... !!", limit=5) == []  # no token at all
    # separators and capitals as FTS5's ascii tokenizer reads them; several tokens in a word: FTS5's phrase
    assert ids(index.search("acme", 'TERM" "', limit=3)) == ["c59", "c58", "c57"]
    searched = index.resident_searches
    assert ids(index.search("acme", "filler-words", limit=2)) == ids(
        fts.search("acme", "filler-words", limit=2)
    )
    assert index.resident_searches == searched  # the phrase went to FTS5
    assert index.search("nobody", "term", limit=5) == [] and not index.warm("nobody")


def test_the_first_search_is_answered_by_fts5_while_the_postings_build(folder: Path) -> None:
    index = SqliteLexicalIndex(folder)
    index.upsert([row("a", "vaccin train immun"), row("b", "how bread rise high"), row("c", "how tea steep")])
    first = index.search("acme", "vaccin bread", limit=5)
    assert index.resident_searches == 0 and ids(first) == ["a", "b"]  # b: the longer row
    index.warm("acme")  # waits for the build the search started
    assert index.builds == 1
    assert index.search("acme", "vaccin bread", limit=5) == first
    assert index.resident_searches == 1

    off = SqliteLexicalIndex(folder, resident=False)
    assert off.search("acme", "vaccin", limit=5) == first[:1] and not off.warm("acme")
    assert off.resident_searches == 0 and off.builds == 0


def test_lengths_count_tokens_as_the_ascii_tokenizer_does() -> None:
    assert tokens("abc  Def-ghi été 北京 x_y") == ["abc", "def", "ghi", "été", "北京", "x", "y"]
    assert tokens("a\u3000b") == ["a\u3000b"]  # non-ASCII space is part of a token


OLD_SCHEMA = """
CREATE TABLE chunks (rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, doc_id TEXT NOT NULL,
    version TEXT NOT NULL, terms TEXT NOT NULL, position INTEGER NOT NULL, page INTEGER, text TEXT NOT NULL,
    metadata TEXT NOT NULL);
CREATE INDEX chunks_doc ON chunks (doc_id, version);
CREATE VIRTUAL TABLE fts USING fts5 (terms, content='chunks', content_rowid='rowid', tokenize='ascii');
CREATE VIRTUAL TABLE vocab USING fts5vocab (fts, row);
CREATE TRIGGER chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO fts (rowid, terms) VALUES (new.rowid, new.terms);
END;
CREATE TRIGGER chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO fts (fts, rowid, terms) VALUES ('delete', old.rowid, old.terms);
END;
CREATE TRIGGER chunks_au AFTER UPDATE ON chunks BEGIN
    INSERT INTO fts (fts, rowid, terms) VALUES ('delete', old.rowid, old.terms);
    INSERT INTO fts (rowid, terms) VALUES (new.rowid, new.terms);
END;
"""


def test_a_file_of_the_previous_schema_gains_the_change_log(folder: Path) -> None:
    index = SqliteLexicalIndex(folder)
    folder.mkdir(parents=True)
    with sqlite3.connect(index._path("acme")) as db:
        db.executescript(OLD_SCHEMA)
        db.executemany(
            "INSERT INTO chunks (id, doc_id, version, terms, position, text, metadata) "
            "VALUES (?, 'd', 'v', ?, 0, '', '{}')",
            [("a", "old apple"), ("b", "old pear"), ("c", "plum")],
        )
    index.warm("acme")
    assert ids(index.search("acme", "apple", limit=5)) == ["a"]
    index.upsert([row("a", "new fig"), row("d", "apple")])
    assert sorted(ids(index.search("acme", "apple fig", limit=5))) == ["a", "d"]
    assert index.resident_searches == 2 and index.builds == 1
    with sqlite3.connect(index._path("acme")) as db:
        assert db.execute("SELECT count(*) FROM changes").fetchone()[0] == 2


def test_threads_search_while_another_writes(folder: Path) -> None:
    index, fts = SqliteLexicalIndex(folder), SqliteLexicalIndex(folder, resident=False)
    index.upsert(corpus(12, 600))
    index.warm("acme")
    errors: list[BaseException] = []

    def searches(seed: int) -> None:
        try:
            for query in queries(seed, 40):
                hits = index.search("acme", query, limit=20)
                assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=searches, args=(seed,)) for seed in range(13, 17)]
    for thread in threads:
        thread.start()
    rng = np.random.default_rng(18)
    for i in range(0, 300, 10):
        index.upsert([row(f"c{j}", text(rng)) for j in range(i, i + 10)])
        index.delete_ids("acme", [f"c{599 - i // 10}"])
    for thread in threads:
        thread.join()
    assert errors == []
    compare(index, fts, seed=19, count=20)
    assert index.builds == 1
