"""BM25 over an embedded SQLite index: the lexical leg of the embedded stack (Milvus Lite).

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
``lexical`` field holds), an FTS5 table over the terms and a change log (``changes``: the rowid of each row
written or deleted, in order), both kept in step by triggers, and a random ``identity`` made with the file.
BM25 is FTS5's (k1 = 1.2, b = 0.75, idf from the tenant's own chunks: a tenant's statistics never depend on
another's). The ``ascii`` tokenizer splits the terms at the spaces and nowhere else (the analysis leaves only
letters, digits and single spaces; every non-ASCII character is part of a term).

The file is the source of truth; searches score on postings each process holds in memory
(``retrieval.lexical_postings``: CSR postings per term, each row's length, numpy), because FTS5 scores every
row that matches an OR query: at 100k chunks of ~170 words a query of 6-14 terms matches 35k-94k rows, 33-100
ms, where the resident postings take a few ms. A tenant's first search in a process starts building them in a
background thread (one read transaction: every row's terms and the log's end) and is answered by FTS5, as are
the searches until they are built (``warm`` builds them at once). Each later search first reads the end of the
log (one indexed lookup) and, when rows changed, reads those rows again and applies them (the old slots marked
dead, the new rows in a small tail), so every process, the writer or not, sees what was committed. Writers
trim the log to its last ``changes_kept`` entries; a reader whose postings are older than the log reaches, or
whose file is another (dropped and made again: the identity differs), or whose changes pass a quarter of the
rows (and 1,000), builds again in the background, FTS5 answering meanwhile. A search scores on one immutable
snapshot of the postings, so threads search at once. The scores are FTS5's ``bm25()``, the same sums in the
same order (all 10,000 compared on SciFact passages were equal to the bit; ``retrieval.lexical_postings``);
ties rank the older row first (FTS5's order among equal scores is its own). Queries with a word the tokenizer
splits in several (FTS5 would match a phrase: never made by the analysis) and
``RETRIEVAL_LEXICAL_RESIDENT=false`` use FTS5.
Each thread keeps its read connections to the files it searched open (``READERS_PER_THREAD``); writers
open their own.
Memory: the arrays take ~630 bytes per chunk of ~170 words (60 MiB at 100k chunks of 122 distinct terms:
4 bytes of slot and 1 of frequency a posting), plus the vocabulary (26k terms there).

The rows also hold what a search returns (position, page, text, metadata), so the bm25 leg never asks
Milvus (a filter on ids in Milvus Lite cost ~190 ms per query at 100k chunks): the best rows are read by
rowid, ``document_id`` filters in SQL, metadata filters in Python (``retrieval.store.matches_filters``),
reading further until ``limit`` rows pass.
``MilvusStore`` writes Milvus first, then this index, and deletes in the same order, so a failed write leaves
at most rows that Milvus also has; versions not (or no longer) served are dropped after stage 1 as for dense.
Query terms that more than half the tenant's chunks hold are not scored (unless no other is left): their idf
is ~0 (FTS5 floors it at 1e-6), so they cannot change the ranking, and their postings are the longest; chunks
that hold only such terms are left out of the leg.
Every connection is opened per call (cheap, and safe across the worker's forks; a forked child drops the
parent's postings); WAL lets the API read while a worker writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from retrieval import lexical_postings
from retrieval.errors import StoreUnavailableError
from retrieval.lexical_postings import Postings
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
CREATE TABLE IF NOT EXISTS changes (seq INTEGER PRIMARY KEY AUTOINCREMENT, row INTEGER NOT NULL);
CREATE TRIGGER IF NOT EXISTS changes_ai AFTER INSERT ON chunks BEGIN
    INSERT INTO changes (row) VALUES (new.rowid);
END;
CREATE TRIGGER IF NOT EXISTS changes_ad AFTER DELETE ON chunks BEGIN
    INSERT INTO changes (row) VALUES (old.rowid);
END;
CREATE TRIGGER IF NOT EXISTS changes_au AFTER UPDATE ON chunks BEGIN
    INSERT INTO changes (row) VALUES (new.rowid);
    INSERT INTO changes (row) SELECT old.rowid WHERE old.rowid != new.rowid;
END;
CREATE TABLE IF NOT EXISTS identity AS SELECT lower(hex(randomblob(16))) AS token;
"""
# Marks a collection's folder as holding every row Milvus held when it was made; the suffix is the layout's
# version (a folder of another layout is filled again).
_COMPLETE = "COMPLETE-2"
_REBUILD_FLOOR = 1000  # changed rows under which the tail never asks for a rebuild
_IN_BATCH = 500  # rowids per ``IN (...)`` when fetching rows

logger = logging.getLogger(__name__)


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


class _Resident:
    """One tenant's resident postings in this process: the current snapshot (None until built, or while a
    build that replaces one no longer refreshable runs) and the build in progress, if any."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.postings: Postings | None = None
        self.building: threading.Thread | None = None


class SqliteLexicalIndex:
    """The per-tenant SQLite files of one collection, under ``folder``; with ``resident``, searches score on
    postings held in memory (built in the background on a tenant's first search, FTS5 answering until then).
    Writers keep the last ``changes_kept`` entries of each file's change log."""

    def __init__(
        self,
        folder: Path,
        *,
        timeout_s: float = 30.0,
        resident: bool = True,
        changes_kept: int = 200_000,
    ) -> None:
        self.folder = Path(folder)
        self.timeout_s = timeout_s
        self.resident = resident
        self.changes_kept = changes_kept
        self.resident_searches = 0  # searches answered from the resident postings (the rest: FTS5)
        self._readers = _Readers()  # each thread's open read connections (``_reader``)
        self.builds = 0  # resident builds finished in this process
        self._pid = os.getpid()
        self._guard = threading.Lock()
        self._tenants: dict[str, _Resident] = {}

    # -- state of the folder -------------------------------------------------------------------------------
    def complete(self) -> bool:
        """Whether the index holds every row of its collection (made with it, or filled from it)."""
        return (self.folder / _COMPLETE).exists()

    def mark_complete(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / _COMPLETE).write_text("the lexical index holds every row of its collection\n")

    def drop(self) -> None:
        with self._guard:
            self._tenants = {}
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
                self._trim(db)

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
            self._trim(db)

    def delete_ids(self, tenant: str, ids: Sequence[str]) -> None:
        if not ids or not self._path(tenant).exists():
            return
        with self._connect(tenant) as db:
            db.executemany("DELETE FROM chunks WHERE id = ?", [(i,) for i in ids])
            self._trim(db)

    def _trim(self, db: sqlite3.Connection) -> None:
        """Keep the last ``changes_kept`` entries of the change log (in the writer's transaction)."""
        db.execute(
            "DELETE FROM changes WHERE seq <= (SELECT max(seq) FROM changes) - ?", (self.changes_kept,)
        )

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
        validated ``filters``, best first (ties: the older row first on the resident postings)."""
        words, single = _query_words(terms)
        if not words or limit <= 0 or not self._path(tenant).exists():
            return []
        filters = dict(filters or {})
        document_id = filters.pop("document_id", None)
        state = self._state(tenant) if self.resident and single else None
        ready = state is not None and state.postings is not None
        if state is not None and not ready:
            self._start_build(tenant, state)  # this search and those until it is done: FTS5
        with self._connect(tenant, write=False) as db:
            postings = self._current(tenant, state, db) if state is not None and ready else None
            if postings is not None:
                self.resident_searches += 1
                found = self._search_resident(db, postings, words, limit, document_id, filters)
            else:
                found = self._search_fts(db, words, limit, document_id, filters)
        return found[:limit]

    def warm(self, tenant: str) -> bool:
        """Build ``tenant``'s resident postings now (or wait for the build in progress); False when there is
        nothing to build (no file, or ``resident`` off)."""
        if not self.resident or not self._path(tenant).exists():
            return False
        state = self._state(tenant)
        with state.lock:
            building = state.building
        if building is not None:
            building.join()
        if state.postings is None:
            self._publish(state, self._build(tenant))
        return True

    def _search_fts(
        self,
        db: sqlite3.Connection,
        words: list[str],
        limit: int,
        document_id: FilterValue | None,
        filters: Mapping[str, FilterValue],
    ) -> list[LexicalHit]:
        """FTS5 scores every row that matches (tens of ms at 100k rows): until the postings are resident."""
        found: list[LexicalHit] = []
        words = _informative(db, words)
        match = " OR ".join('"' + word.replace('"', '""') + '"' for word in words)
        # the best rowids first (FTS5 alone), then their rows: sorting whole rows reads every match's text
        within = ""
        if document_id is not None:
            within = " AND rowid IN (SELECT rowid FROM chunks WHERE doc_id = ?)"
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
                    found.append(LexicalHit(id_, float(score), doc, version, position, page_no, text, meta))
            if len(rows) < page:
                break
            offset, page = offset + page, page * 2
        return found

    def _search_resident(
        self,
        db: sqlite3.Connection,
        postings: Postings,
        words: list[str],
        limit: int,
        document_id: FilterValue | None,
        filters: Mapping[str, FilterValue],
    ) -> list[LexicalHit]:
        """Score on the resident postings, then read the best rows by rowid, in order, until ``limit`` pass
        the filters (the rest of the candidates are sorted only when the first page falls short)."""
        slots, scores = postings.scores(words)
        if document_id is not None:
            held = db.execute("SELECT rowid FROM chunks WHERE doc_id = ?", (str(document_id),)).fetchall()
            keep = np.isin(slots, postings.slots_of(np.array([r for (r,) in held], np.int64)))
            slots, scores = slots[keep], scores[keep]
        rowids = postings.rowids[slots]
        page = limit if not filters else max(limit * 4, 50)
        order = _best(scores, rowids, page)
        found: list[LexicalHit] = []
        done = 0
        while len(found) < limit:
            if done == len(order) < len(scores):  # the first page fell short: order them all
                order = _best(scores, rowids, len(scores))
            batch = order[done : done + page]
            if not len(batch):
                break
            done += len(batch)
            page *= 2
            rows: dict[int, tuple[Any, ...]] = {}
            for start in range(0, len(batch), _IN_BATCH):
                part = [int(r) for r in rowids[batch[start : start + _IN_BATCH]]]
                marks = ", ".join("?" for _ in part)
                rows.update(
                    (r[0], r[1:])
                    for r in db.execute(
                        "SELECT rowid, id, doc_id, version, position, page, text, metadata FROM chunks "
                        f"WHERE rowid IN ({marks})",  # noqa: S608 - placeholders only
                        part,
                    )
                )
            for i in batch:
                row = rows.get(int(rowids[i]))
                if row is None:  # deleted since the snapshot this search scores on
                    continue
                id_, doc, version, position, page_no, text, metadata = row
                meta = json.loads(metadata)
                if matches_filters(doc, meta, filters):
                    score = float(scores[i])
                    found.append(LexicalHit(id_, score, doc, version, position, page_no, text, meta))
                    if len(found) >= limit:
                        break
        return found

    def count(self, tenant: str) -> int:
        if not self._path(tenant).exists():
            return 0
        with self._connect(tenant, write=False) as db:
            return int(db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    # -- resident postings ----------------------------------------------------------------------------------
    def _state(self, tenant: str) -> _Resident:
        if os.getpid() != self._pid:  # a forked child: the parent's threads and locks are not its own
            self._pid, self._guard, self._tenants = os.getpid(), threading.Lock(), {}
        with self._guard:
            return self._tenants.setdefault(tenant, _Resident())

    def _start_build(self, tenant: str, state: _Resident) -> None:
        """Build in a background thread, unless a build is running already."""
        with state.lock:
            if state.building is not None:
                return
            state.building = threading.Thread(
                target=self._build_in_background, args=(tenant, state), name="lexical-build", daemon=True
            )
            state.building.start()

    def _build_in_background(self, tenant: str, state: _Resident) -> None:
        try:
            postings = self._build(tenant)
        except Exception:  # the next search starts another; FTS5 answers meanwhile
            logger.exception("lexical index %s: building the resident postings failed", self.folder)
            postings = None
        with state.lock:
            state.building = None
        if postings is not None:
            self._publish(state, postings)

    def _publish(self, state: _Resident, postings: Postings) -> None:
        with state.lock:
            state.postings = postings
        self.builds += 1

    def _build(self, tenant: str) -> Postings:
        """Every row's terms and the change log's end, read in one transaction (one snapshot of the file)."""
        with self._connect(tenant, write=False) as db:
            token, seq = db.execute(
                "SELECT (SELECT token FROM identity), (SELECT coalesce(max(seq), 0) FROM changes)"
            ).fetchone()
            rows = db.execute("SELECT rowid, terms FROM chunks ORDER BY rowid")
            return lexical_postings.build(rows, token=token, seq=int(seq))

    def _current(self, tenant: str, state: _Resident, db: sqlite3.Connection) -> Postings | None:
        """The tenant's postings brought up to ``db``'s snapshot from the change log; None (FTS5 answers)
        while there are none, or when the file is another (dropped and made again) or its log no longer
        reaches back to them: a build then starts in the background."""
        if state.postings is None:
            return None
        token, top, low = db.execute(
            "SELECT (SELECT token FROM identity), (SELECT coalesce(max(seq), 0) FROM changes), "
            "(SELECT min(seq) FROM changes)"
        ).fetchone()
        with state.lock:
            postings = state.postings
            if postings is None:
                return None
            if token == postings.token and top <= postings.seq:  # nothing new, or refreshed by a newer reader
                return postings
            changed = (
                [r for (r,) in db.execute("SELECT DISTINCT row FROM changes WHERE seq > ?", (postings.seq,))]
                if token == postings.token and low is not None and low <= postings.seq + 1
                else None
            )
            fresh, most = None, max(postings.base // 4, _REBUILD_FLOOR)
            if changed is not None and len(changed) + postings.changed <= most:
                present = dict(
                    db.execute(
                        "SELECT rowid, terms FROM chunks WHERE rowid IN "
                        "(SELECT row FROM changes WHERE seq > ?)",
                        (postings.seq,),
                    ).fetchall()
                )
                fresh = lexical_postings.refresh(postings, changed, present, seq=int(top))
            state.postings = fresh
        if fresh is None:
            self._start_build(tenant, state)
        return fresh

    # -- files ----------------------------------------------------------------------------------------------
    def _path(self, tenant: str) -> Path:
        return self.folder / f"{hashlib.sha256(tenant.encode('utf-8')).hexdigest()[:32]}.sqlite"

    @contextmanager
    def _connect(self, tenant: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """A connection in one transaction (committed on leaving, rolled back on an error); SQLite errors
        (a locked or unreadable file, a full disk) become ``StoreUnavailableError`` (retried by callers).
        A writer opens its own; a reader reuses its thread's connection to the file (``_reader``)."""
        path = self._path(tenant)
        if write:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                db = self._open(path)
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailableError(f"lexical index {path}: cannot open: {exc}") from exc
        else:
            db = self._reader(path)
        try:
            # A writer takes the lock up front (waiting up to the timeout): a read transaction that upgrades
            # to a write can fail at once in WAL mode when another writer committed in between.
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            yield db
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if not write:
                self._forget_reader(path)
            raise StoreUnavailableError(f"lexical index {path}: {exc}") from exc
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            if write:
                db.close()

    def _open(self, path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=self.timeout_s, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _reader(self, path: Path) -> sqlite3.Connection:
        """This thread's open connection to ``path``, opened on first use (a search's connect, pragmas and
        schema check took 0.4 ms of its ~1.2 ms at 20k rows). The file is the same while its inode is: a
        connection keeps its inode from being reused, so a file dropped and made again (``drop``) is
        another inode, and is opened anew. Each thread keeps its ``READERS_PER_THREAD`` most recent files;
        a forked child opens its own."""
        readers = self._readers
        if readers.pid != os.getpid():
            readers.pid, readers.open = os.getpid(), {}
        held = readers.open
        try:
            st = os.stat(path)
            identity = (st.st_dev, st.st_ino)
            cached = held.pop(path, None)
            if cached is not None and cached[1] == identity:
                held[path] = cached  # the most recent last
                return cached[0]
            if cached is not None:
                cached[0].close()
            db = self._open(path)
        except (sqlite3.Error, OSError) as exc:
            raise StoreUnavailableError(f"lexical index {path}: cannot open: {exc}") from exc
        held[path] = (db, identity)
        while len(held) > READERS_PER_THREAD:
            oldest = next(iter(held))
            held.pop(oldest)[0].close()
        return db

    def _forget_reader(self, path: Path) -> None:
        """Close this thread's connection to ``path`` (after an error: the next search opens a new one)."""
        cached = self._readers.open.pop(path, None)
        if cached is not None:
            cached[0].close()


READERS_PER_THREAD = 8


class _Readers(threading.local):
    """One thread's open read connections by file, the most recent last, with each file's inode."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.open: dict[Path, tuple[sqlite3.Connection, tuple[int, int]]] = {}


def _informative(db: sqlite3.Connection, words: list[str]) -> list[str]:
    """``words`` less those held by more than half of the chunks (FTS5's idf is ~0 for them), unless that
    leaves none."""
    total = int(db.execute("SELECT count(*) FROM chunks").fetchone()[0])
    marks = ", ".join("?" for _ in words)
    held = dict(db.execute(f"SELECT term, doc FROM vocab WHERE term IN ({marks})", words).fetchall())  # noqa: S608
    informative = [word for word in words if held.get(word, 0) * 2 <= total]
    return informative or words  # only common words: match them all the same (their scores tie near 0)


def _query_words(terms: str) -> tuple[list[str], bool]:
    """The distinct words of ``terms`` as FTS5's tokenizer makes them, and whether each is one token (else
    the words stay as given, and FTS5 matches those of several tokens as phrases)."""
    words = list(dict.fromkeys(terms.split()))
    split = [lexical_postings.tokens(word) for word in words]
    if all(len(parts) <= 1 for parts in split):
        return list(dict.fromkeys(parts[0] for parts in split if parts)), True
    return words, False


def _best(scores: np.ndarray, rowids: np.ndarray, k: int) -> np.ndarray:
    """Indices of the best ``k`` by score, then by rowid (the older row first among equal scores)."""
    if k < len(scores):
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        chosen = np.flatnonzero(scores >= kth)
    else:
        chosen = np.arange(len(scores))
    return chosen[np.lexsort((rowids[chosen], -scores[chosen]))][:k]
