"""The SQLite lexical index: writes, deletes, per-tenant statistics, paging, and errors, on FTS5 and on the
resident postings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from retrieval.errors import StoreUnavailableError
from retrieval.lexical_index import LexicalHit, LexicalRow, SqliteLexicalIndex


def row(
    id_: str,
    terms: str,
    *,
    tenant: str = "acme",
    doc: str = "d1",
    version: str = "v1",
    metadata: dict[str, object] | None = None,
) -> LexicalRow:
    return LexicalRow(
        tenant=tenant,
        id=id_,
        document_id=doc,
        version=version,
        terms=terms,
        position=0,
        page=None,
        text=f"text of {id_}",
        metadata=metadata or {},
    )


class _Warmed(SqliteLexicalIndex):
    """Searches on the resident postings, built (or brought up to date) before each search."""

    def search(self, tenant: str, terms: str, **kwargs: Any) -> list[LexicalHit]:
        self.warm(tenant)
        return super().search(tenant, terms, **kwargs)


@pytest.fixture(params=["fts5", "resident"])
def index(request: pytest.FixtureRequest, tmp_path: Path) -> SqliteLexicalIndex:
    if request.param == "fts5":
        return SqliteLexicalIndex(tmp_path / "coll", resident=False)
    return _Warmed(tmp_path / "coll")


def ids(hits: list[LexicalHit]) -> list[str]:
    return [hit.id for hit in hits]


def test_any_term_matches_and_rarer_terms_weigh_more(index: SqliteLexicalIndex) -> None:
    index.upsert(
        [
            row("a", "vaccin train immun system"),
            row("b", "how http cach work"),
            row("c", "how bread rise"),
            row("d", "how tea steep"),
        ]
    )
    hits = index.search("acme", "how vaccin", limit=10)
    # "how" is in 3 of 4 chunks: FTS5's idf is ~0 for it, so it is not sent; vaccin decides
    assert ids(hits) == ["a"]
    assert set(ids(index.search("acme", "http bread", limit=10))) == {"b", "c"}  # any term matches
    assert all(hit.score > 0 for hit in hits)
    assert hits[0].text == "text of a" and hits[0].document_id == "d1" and hits[0].version == "v1"
    assert index.search("acme", "nothing here", limit=10) == []
    assert index.search("acme", "", limit=10) == []


def test_terms_are_split_at_spaces_only_and_quoted(index: SqliteLexicalIndex) -> None:
    index.upsert([row("zh", "北京 是 中国 首都"), row("en", "and or not near")])
    assert ids(index.search("acme", "中国", limit=5)) == ["zh"]
    assert ids(index.search("acme", "中", limit=5)) == []  # a whole term, not a prefix or a character
    # FTS5 operators in the terms are words to match, not syntax
    assert ids(index.search("acme", "not", limit=5)) == ["en"]
    assert ids(index.search("acme", 'near" OR "x', limit=5)) == ["en"]  # words: near, or, x


def test_statistics_are_per_tenant(index: SqliteLexicalIndex) -> None:
    index.upsert([row("a1", "apple pie"), row("a2", "apple tart")])
    index.upsert(
        [row(f"b{i}", f"pear {i}", tenant="other") for i in range(20)]
        + [row("b-apple", "apple", tenant="other")]
    )
    mine = {hit.id: hit.score for hit in index.search("acme", "apple pie", limit=5)}
    theirs = {hit.id: hit.score for hit in index.search("other", "apple", limit=5)}
    # "apple" is in every one of acme's chunks (idf ~0: not even sent) but rare among the other tenant's
    assert set(mine) == {"a1"} and set(theirs) == {"b-apple"}
    assert set(ids(index.search("acme", "apple", limit=5))) == {"a1", "a2"}  # nothing rarer asked: all match
    assert index.count("acme") == 2 and index.count("other") == 21 and index.count("nobody") == 0


def test_upsert_replaces_by_id(index: SqliteLexicalIndex) -> None:
    index.upsert([row("a", "old words")])
    index.upsert([row("a", "new words", version="v2")])
    index.upsert([row("a", "new words", version="v2")])  # the same again: nothing changes
    assert index.search("acme", "old", limit=5) == []
    assert ids(index.search("acme", "new", limit=5)) == ["a"]
    assert index.count("acme") == 1


def test_deletes_by_document_version_and_ids(index: SqliteLexicalIndex) -> None:
    index.upsert(
        [
            row("d1v1", "word", doc="d1", version="v1"),
            row("d1v2", "word", doc="d1", version="v2"),
            row("d1v3", "word", doc="d1", version="v3"),
            row("d2v1", "word", doc="d2", version="v1"),
        ]
    )
    index.delete_document("acme", "d1", except_versions=["v3"])
    assert sorted(ids(index.search("acme", "word", limit=9))) == ["d1v3", "d2v1"]
    index.delete_document("acme", "d1", version="v3")
    index.delete_ids("acme", ["d2v1"])
    assert index.search("acme", "word", limit=9) == []
    index.delete_document("never-written", "d1")  # no file, nothing to do


def test_filters_on_document_and_metadata_read_past_the_first_page(index: SqliteLexicalIndex) -> None:
    index.upsert(
        [
            row(f"c{i}", " ".join(["term"] * (i + 1) + ["pad"] * 5), doc=f"d{i % 3}", metadata={"n": i})
            for i in range(60)
        ]
        + [row(f"other{i}", "filler words only") for i in range(80)]
    )
    everything = index.search("acme", "term", limit=60)
    assert len(everything) == 60
    assert [h.score for h in everything] == sorted((h.score for h in everything), reverse=True)
    only = index.search("acme", "term", limit=30, filters={"document_id": "d1"})
    assert sorted(ids(only)) == sorted(f"c{i}" for i in range(1, 60, 3))
    # the weakest match, found only beyond the first pages
    assert ids(index.search("acme", "term", limit=1, filters={"n": 0})) == ["c0"]
    assert index.search("acme", "term", limit=1, filters={"n": True}) == []  # a bool never equals 1
    assert index.search("acme", "term", limit=5, filters={"missing": 1}) == []


def test_complete_marker_and_drop(index: SqliteLexicalIndex) -> None:
    assert not index.complete()
    index.mark_complete()
    index.upsert([row("a", "word")])
    assert index.complete()
    index.drop()
    assert not index.complete() and index.count("acme") == 0


def test_an_unusable_folder_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(StoreUnavailableError, match="lexical index"):
        SqliteLexicalIndex(tmp_path / "file" / "coll").upsert([row("a", "word")])
    corrupt = SqliteLexicalIndex(tmp_path / "corrupt")
    corrupt.upsert([row("a", "word")])
    for path in (tmp_path / "corrupt").glob("*.sqlite"):
        path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreUnavailableError, match="lexical index"):
        corrupt.search("acme", "word", limit=1)


def test_reads_reuse_the_threads_connection_until_the_file_is_made_again(
    index: SqliteLexicalIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    index.upsert([row("a", "word other")])
    opened: list[Path] = []
    real_open = index._open
    monkeypatch.setattr(index, "_open", lambda path: opened.append(path) or real_open(path))
    for _ in range(3):
        assert ids(index.search("acme", "word", limit=5)) == ["a"]
    assert len(opened) == 1  # one reader for this thread
    index.upsert([row("b", "word")])  # a writer opens its own
    assert ids(index.search("acme", "word", limit=5)) == ["b", "a"] and len(opened) == 2  # a fresh snapshot
    index.drop()
    index.upsert([row("c", "word")])
    assert ids(index.search("acme", "word", limit=5)) == ["c"]  # the new file, not the dropped one
    assert len(opened) == 4  # the writer's, and this thread's new reader
    other = threading.Thread(target=lambda: index.search("acme", "word", limit=5))
    other.start()
    other.join()
    assert len(opened) == 5  # another thread, its own reader


def test_each_thread_keeps_its_most_recent_readers_only(tmp_path: Path) -> None:
    from retrieval.lexical_index import READERS_PER_THREAD

    index = SqliteLexicalIndex(tmp_path / "coll", resident=False)
    tenants = [f"t{i}" for i in range(READERS_PER_THREAD + 3)]
    index.upsert([row(f"r-{t}", f"word {t}", tenant=t) for t in tenants])
    for _ in range(2):
        for t in tenants:
            assert ids(index.search(t, "word", limit=5)) == [f"r-{t}"]
    held = index._readers.open
    assert len(held) == READERS_PER_THREAD
    assert list(held) == [index._path(t) for t in tenants[-READERS_PER_THREAD:]]
