"""BM25 over an embedded SQLite FTS5 index: the lexical leg of the embedded stack (Milvus Lite).

Why not Milvus Lite's own BM25: Milvus Lite 3 scores BM25 per segment, each segment with its own document
count, average length and document frequencies (``milvus_lite/engine/collection.py``: "TODO: BM25 IDF
accuracy"), and each flushed write is a segment of its own. A term that every chunk of one document holds (its
title, which the chunk context puts in every chunk) then gets an idf near 0 inside that document's segment,
and a common word a high one inside another's: on the sample corpus, bm25 ranked "How HTTP Caching Works"
first for "how do vaccines work" (Milvus Lite's scores: vaccin 0.19, how 1.9).
It is also Python over every segment on every search, which grows with the collection. A Milvus 2.5+ server
keeps collection-wide statistics and is
used as it is.

This index holds, per tenant, one SQLite file (``<dir>/<collection>/<sha256(tenant)>.sqlite``): a table of
the chunks' ids, documents, versions and analysed terms (``retrieval.lexical.analyze``, the same text Milvus's
``lexical`` field holds), and an FTS5 table over the terms kept in step by triggers. BM25 is FTS5's
(k1 = 1.2, b = 0.75, idf from the tenant's own chunks: a tenant's statistics never depend on another's).
The ``ascii`` tokenizer splits the terms at the spaces and nowhere else (the analysis leaves only letters,
digits and single spaces; every non-ASCII character is part of a term).

The rows also hold what a search returns (position, page, text, metadata), so the bm25 leg never asks
Milvus (a filter on ids in Milvus Lite cost ~190 ms per query at 100k chunks): ``document_id`` filters in
SQL, metadata filters in Python (``retrieval.store.matches_filters``), reading further pages until
``limit`` rows pass.
``MilvusStore`` writes Milvus first, then this index, and deletes in the same order, so a failed write leaves
at most rows that Milvus also has; versions not (or no longer) served are dropped after stage 1 as for dense.
Query terms that more than half the tenant's chunks hold are not sent (unless no other is left): FTS5 gives
them an idf of ~0, so they cannot change the ranking, and scanning their postings is the slow part of an OR
query; chunks that hold only such terms are left out of the leg.
Every connection is opened per call (cheap, and safe across the worker's forks); WAL lets the API read while a
worker writes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.errors import StoreUnavailableError
from retrieval.store import FilterValue, matches_filters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS chunks (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    doc_id TEXT NOT NULL,
    version TEXT NOT NULL,
    terms TEXT NOT NULL,
    position INTEGER NOT NULL,
    page INTEGER,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks (doc_id, version);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5 (
    terms, content='chunks', content_rowid='rowid', tokenize='ascii'
);
CREATE VIRTUAL TABLE IF NOT EXISTS vocab USING fts5vocab (fts, row);
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO fts (rowid, terms) VALUES (new.rowid, new.terms);
END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO fts (fts, rowid, terms) VALUES ('delete', old.rowid, old.terms);
END;
CREATE TRIGGER IF NOT EXISTS chunks_au AFTER UPDATE ON chunks BEGIN
    INSERT INTO fts (fts, rowid, terms) VALUES ('delete', old.rowid, old.terms);
    INSERT INTO fts (rowid, terms) VALUES (new.rowid, new.terms);
END;
"""
# Marks a collection's folder as holding every row Milvus held when it was made; the suffix is the layout's
# version (a folder of another layout is filled again).
_COMPLETE = "COMPLETE-2"


@dataclass(frozen=True)
class LexicalRow:
    tenant: str
    id: str
    document_id: str
    version: str
    terms: str  # analysed: terms separated by single spaces
    position: int
    page: int | None
    text: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True)
class LexicalHit:
    id: str
    score: float  # BM25, higher is better
    document_id: str
    version: str
    position: int
    page: int | None
    text: str
    metadata: dict[str, Any]


class SqliteLexicalIndex:
    """The per-tenant FTS5 files of one collection, under ``folder``."""

    def __init__(self, folder: Path, *, timeout_s: float = 30.0) -> None:
        self.folder = Path(folder)
        self.timeout_s = timeout_s

    # -- state of the folder -------------------------------------------------------------------------------
    def complete(self) -> bool:
        """Whether the index holds every row of its collection (made with it, or filled from it)."""
        return (self.folder / _COMPLETE).exists()

    def mark_complete(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / _COMPLETE).write_text("the lexical index holds every row of its collection\n")

    def drop(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    # -- writes ---------------------------------------------------------------------------------------------
    def upsert(self, rows: Iterable[LexicalRow]) -> None:
        by_tenant: dict[str, list[LexicalRow]] = {}
        for row in rows:
            by_tenant.setdefault(row.tenant, []).append(row)
        for tenant, batch in by_tenant.items():
            with self._connect(tenant) as db:
                db.executemany(
                    "INSERT INTO chunks (id, doc_id, version, terms, position, page, text, metadata) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                    "doc_id = excluded.doc_id, version = excluded.version, terms = excluded.terms, "
                    "position = excluded.position, "
                    "page = excluded.page, text = excluded.text, metadata = excluded.metadata",
                    [
                        (
                            r.id,
                            r.document_id,
                            r.version,
                            r.terms,
                            r.position,
                            r.page,
                            r.text,
                            json.dumps(r.metadata, ensure_ascii=False, allow_nan=False),
                        )
                        for r in batch
                    ],
                )

    def delete_document(
        self,
        tenant: str,
        document_id: str,
        *,
        version: str | None = None,
        except_versions: Sequence[str] = (),
    ) -> None:
        if not self._path(tenant).exists():
            return
        where, args = ["doc_id = ?"], [document_id]
        if version is not None:
            where.append("version = ?")
            args.append(version)
        if except_versions:
            where.append(f"version NOT IN ({', '.join('?' for _ in except_versions)})")
            args.extend(except_versions)
        with self._connect(tenant) as db:
            db.execute(f"DELETE FROM chunks WHERE {' AND '.join(where)}", args)  # noqa: S608 - placeholders only

    def delete_ids(self, tenant: str, ids: Sequence[str]) -> None:
        if not ids or not self._path(tenant).exists():
            return
        with self._connect(tenant) as db:
            db.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in ids])

    # -- reads ----------------------------------------------------------------------------------------------
    def search(
        self,
        tenant: str,
        terms: str,
        *,
        limit: int,
        filters: Mapping[str, FilterValue] | None = None,
    ) -> list[LexicalHit]:
        """The best ``limit`` chunks that hold any of ``terms`` (analysed, space-separated) and pass the
        validated ``filters``, best first."""
        words = list(dict.fromkeys(terms.split()))
        if not words or limit <= 0 or not self._path(tenant).exists():
            return []
        filters = dict(filters or {})
        document_id = filters.pop("document_id", None)
        found: list[LexicalHit] = []
        with self._connect(tenant, write=False) as db:
            words = _informative(db, words)
            if not words:
                return []
            match = " OR ".join('"' + word.replace('"', '""') + '"' for word in words)
            # the best rowids first (FTS5 alone), then their rows: sorting whole rows reads every match's text
            within = (
                " AND rowid IN (SELECT rowid FROM chunks WHERE doc_id = ?)" if document_id is not None else ""
            )
            sql = (
                "SELECT chunks.id, best.score, doc_id, version, position, page, text, metadata FROM "
                f"(SELECT rowid, -bm25(fts) AS score FROM fts WHERE fts MATCH ?{within} "
                "ORDER BY bm25(fts) LIMIT ? OFFSET ?) AS best JOIN chunks ON chunks.rowid = best.rowid "
                "ORDER BY best.score DESC"
            )
            args: list[object] = [match] if document_id is None else [match, str(document_id)]
            offset, page = 0, limit if not filters else max(limit * 4, 50)
            while len(found) < limit:
                rows = db.execute(sql, [*args, page, offset]).fetchall()
                for id_, score, doc, version, position, page_no, text, metadata in rows:
                    meta = json.loads(metadata)
                    if matches_filters(doc, meta, filters):
                        found.append(
                            LexicalHit(id_, float(score), doc, version, position, page_no, text, meta)
                        )
                if len(rows) < page:
                    break
                offset, page = offset + page, page * 2
        return found[:limit]

    def count(self, tenant: str) -> int:
        if not self._path(tenant).exists():
            return 0
        with self._connect(tenant, write=False) as db:
            return int(db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    # -- files ----------------------------------------------------------------------------------------------
    def _path(self, tenant: str) -> Path:
        return self.folder / f"{hashlib.sha256(tenant.encode('utf-8')).hexdigest()[:32]}.sqlite"

    @contextmanager
    def _connect(self, tenant: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (committed on leaving, rolled back on an error); SQLite errors
        (a locked or unreadable file, a full disk) become ``StoreUnavailableError`` (retried by callers)."""
        path = self._path(tenant)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(path, timeout=self.timeout_s, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(f"lexical index {path}: cannot open: {exc}") from exc
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            # A writer takes the lock up front (waiting up to the timeout): a read transaction that upgrades
            # to a write can fail at once in WAL mode when another writer committed in between.
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreUnavailableError(f"lexical index {path}: {exc}") from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()


def _informative(db: sqlite3.Connection, words: list[str]) -> list[str]:
    """``words`` less those held by more than half of the chunks (FTS5's idf is ~0 for them), unless that
    leaves none."""
    total = int(db.execute("SELECT count(*) FROM chunks").fetchone()[0])
    marks = ", ".join("?" for _ in words)
    held = dict(db.execute(f"SELECT term, doc FROM vocab WHERE term IN ({marks})", words).fetchall())  # noqa: S608
    informative = [word for word in words if held.get(word, 0) * 2 <= total]
    return informative or words  # only common words: match them all the same (their scores tie near 0)
