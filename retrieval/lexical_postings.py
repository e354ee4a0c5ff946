"""Resident BM25 postings of one tenant's lexical index, scored with numpy as FTS5's ``bm25()`` scores them.

``build(rows)`` makes ``Postings`` from every ``(rowid, terms)`` of the tenant's ``chunks`` table; ``refresh``
applies the rows that changed since (read from the file's change log) and returns a new ``Postings``; nothing
is changed in place, so a search scores on the snapshot it holds while another thread refreshes.

Layout: the rows of the build are the *base*: a vocabulary (term -> id), CSR postings per term (slot indices
and term frequencies, slots in rowid order) and each slot's length in tokens. Rows written later (new, or
changed: the old slot is marked dead) are the *tail*: a small CSR of its own over term ids (the base's, or ids
past them for terms the base lacks), made again from the tail's rows on each refresh. Slots ``0..base-1`` are
the base's, ``base..`` the tail's; ``alive`` marks those still current. When the tail and the dead slots
pass a quarter of the base, the caller builds again.

Scoring is FTS5's (``fts5Bm25Function`` in sqlite's ``ext/fts5/fts5_aux.c``): k1 = 1.2, b = 0.75, over the
distinct query terms in the query's order, ``idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))``
with ``idf = log((N - df + 0.5) / (df + 0.5))`` (1e-6 where that is <= 0), ``avgdl`` the tenant's total
tokens over its row count and ``dl`` the row's tokens, counted as the ``ascii`` tokenizer counts them
(``tokens``). The sums are taken in the same order as FTS5 takes them, so the scores agree to the last bit
or nearly.
"""

from __future__ import annotations

import itertools
import math
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

K1, B = 1.2, 0.75
# FTS5's ascii tokenizer: ASCII letters and digits, and every non-ASCII character, make tokens; every other
# ASCII character separates them; ASCII capitals are folded.
_FOLD = str.maketrans(
    {chr(c): chr(c).lower() for c in range(ord("A"), ord("Z") + 1)}
    | {chr(c): " " for c in range(128) if not chr(c).isalnum()}
)
_FOLD_BYTES = bytes(
    b + 32 if 65 <= b <= 90 else b if b >= 128 or chr(b).isalnum() else 32 for b in range(256)
)  # the same on UTF-8 bytes (every byte of a non-ASCII character is >= 128)
_MARK = b"\n"  # between rows when build splits a batch at once
# Rows tokenised at a time by build: bounds the memory held by token strings, and how long one C call holds
# the GIL (~150k tokens: a few ms to tens of ms), so that searches in other threads go on during a build.
_BATCH = 1024


def tokens(terms: str) -> list[str]:
    """``terms`` as FTS5's ``ascii`` tokenizer splits it."""
    return [t for t in terms.translate(_FOLD).split(" ") if t]


@dataclass(frozen=True)
class _TailRow:
    terms: np.ndarray  # int32 term ids, distinct
    tfs: np.ndarray  # int32
    length: int


@dataclass(frozen=True)
class Postings:
    """One tenant's postings as of change ``seq`` of the file whose identity is ``token``."""

    token: str | None
    seq: int
    vocab: Mapping[str, int]  # the base's terms
    indptr: np.ndarray  # int64, one more than the base's term ids (two are never used: see build)
    slots: np.ndarray  # int32
    tfs: np.ndarray  # uint8, or wider where a count passes 255
    tail_vocab: Mapping[str, int]  # terms only the tail holds: ids from len(indptr) - 1 on
    tail_rows: Mapping[int, _TailRow]  # rowid -> its terms, in rowid order
    tail_terms: np.ndarray  # int32, sorted: the tail's postings, by term
    tail_slots: np.ndarray  # int32
    tail_tfs: np.ndarray  # int32
    base: int  # slots of the base
    rowids: np.ndarray  # int64 per slot
    lengths: np.ndarray  # int32 per slot: tokens
    alive: np.ndarray  # bool per slot
    dead: int  # dead base slots
    count: int  # N: rows alive
    total: int  # tokens of the rows alive
    norm: np.ndarray  # float64 per slot: k1 * (1 - b + b * dl / avgdl)

    @property
    def changed(self) -> int:
        """Rows written or deleted since the build (the tail's and the dead ones)."""
        return len(self.tail_rows) + self.dead

    def nbytes(self) -> int:
        """The arrays' bytes (the vocabulary's dict and strings come on top)."""
        arrays = (self.indptr, self.slots, self.tfs, self.tail_terms, self.tail_slots, self.tail_tfs)
        return sum(a.nbytes for a in (*arrays, self.rowids, self.lengths, self.alive, self.norm))

    def _where(self, term: str) -> tuple[int, int, int, int]:
        """Where ``term``'s postings are: a range of the base's, a range of the tail's (empty: none)."""
        lo = hi = tail_lo = tail_hi = 0
        term_id = self.vocab.get(term)
        if term_id is None:
            term_id = self.tail_vocab.get(term)
        else:
            lo, hi = int(self.indptr[term_id]), int(self.indptr[term_id + 1])
        if term_id is not None and len(self.tail_terms):
            tail_lo, tail_hi = (int(i) for i in np.searchsorted(self.tail_terms, [term_id, term_id + 1]))
        return lo, hi, tail_lo, tail_hi

    def _held(self, where: tuple[int, int, int, int]) -> int:
        """The live rows holding a term (its df): read off the ranges unless base rows died."""
        lo, hi, tail_lo, tail_hi = where
        base = int(np.count_nonzero(self.alive[self.slots[lo:hi]])) if self.dead and hi > lo else hi - lo
        return base + tail_hi - tail_lo

    def _postings(self, where: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The live slots holding a term and its frequencies there."""
        lo, hi, tail_lo, tail_hi = where
        slots, tfs = self.slots[lo:hi], self.tfs[lo:hi]
        if self.dead:
            keep = self.alive[slots]
            slots, tfs = slots[keep], tfs[keep]
        if tail_hi > tail_lo:
            slots = np.concatenate([slots, self.tail_slots[tail_lo:tail_hi]])
            tfs = np.concatenate([tfs.astype(np.int32), self.tail_tfs[tail_lo:tail_hi]])
        return slots, tfs

    def scores(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The slots holding any of ``words`` (distinct tokens) that are kept, and their BM25 scores.

        Words held by more than half of the rows are left out unless that leaves none (as
        ``lexical_index._informative`` does for FTS5: their idf is 1e-6, they cannot change the ranking)."""
        found = [(where, self._held(where)) for where in map(self._where, words)]
        kept = [f for f in found if f[1] * 2 <= self.count] or found
        kept = [f for f in kept if f[1]]
        if not kept or not self.count:
            return np.empty(0, np.int64), np.empty(0, np.float64)
        acc = np.zeros(len(self.rowids), np.float64)
        for where, df in kept:
            slots, tfs = self._postings(where)
            idf = math.log((self.count - df + 0.5) / (df + 0.5))
            if idf <= 0.0:
                idf = 1e-6
            freq = tfs.astype(np.float64)
            acc[slots] += idf * ((freq * (K1 + 1.0)) / (freq + self.norm[slots]))
        candidates = np.flatnonzero(acc)
        return candidates, acc[candidates]

    def slots_of(self, rowids: np.ndarray) -> np.ndarray:
        """The live slots of ``rowids`` (those this snapshot holds)."""
        rowids = np.asarray(rowids, np.int64)
        where = np.searchsorted(self.rowids[: self.base], rowids)
        inside = where < self.base
        hit = np.zeros(len(rowids), bool)
        hit[inside] = self.rowids[where[inside]] == rowids[inside]
        base = where[hit]
        tail = self.base + np.flatnonzero(np.isin(self.rowids[self.base :], rowids))
        slots = np.concatenate([base, tail]).astype(np.int64)
        return slots[self.alive[slots]]


def _norm(lengths: np.ndarray, count: int, total: int) -> np.ndarray:
    if not count:
        return np.zeros(len(lengths), np.float64)
    avgdl = float(total) / float(count)
    return K1 * (1 - B + B * lengths.astype(np.float64) / avgdl)


def build(rows: sqlite3.Cursor, *, token: str | None, seq: int) -> Postings:
    """Postings of the ``(rowid, terms)`` that ``rows`` yields, in rowid order, as of change ``seq``.

    Per batch of rows, the per-token work is in C: each row's UTF-8 bytes translated as the tokenizer reads
    them, the batch joined with a row mark between rows and split at the spaces, the tokens mapped to ids by
    a dict (``map`` over a ``defaultdict`` numbering new terms), the rest in numpy."""
    vocab: defaultdict[bytes, int] = defaultdict(itertools.count(2).__next__)  # new terms: 2, 3, ...; in C
    vocab[_MARK], vocab[b""] = 0, 1  # the row mark and the empty token: never postings
    rowid_parts: list[np.ndarray] = []
    length_parts: list[np.ndarray] = []
    batches: list[
        tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
    ] = []  # term, slot, tf; df of each term
    start = most = 0
    while batch := rows.fetchmany(_BATCH):
        rows_bytes = [terms.encode("utf-8").translate(_FOLD_BYTES) for _, terms in batch]
        joined = (b" " + _MARK + b" ").join(rows_bytes)
        flat = joined.split(b" ")
        ids = np.fromiter(map(vocab.__getitem__, flat), np.int64, count=len(flat))
        marks = ids == 0
        local = np.cumsum(marks)  # the row of each token
        keep = ids > 1
        ids, local = ids[keep], local[keep]
        length_parts.append(np.bincount(local, minlength=len(batch)).astype(np.int32))
        rowid_parts.append(np.fromiter((rowid for rowid, _ in batch), np.int64, count=len(batch)))
        key = np.int32 if len(vocab) * len(batch) < 2**31 else np.int64  # int32 sorts faster
        pairs, tf = np.unique(
            ids.astype(key) * len(batch) + local.astype(key), return_counts=True
        )  # by term, row
        term = (pairs // len(batch)).astype(np.int32)
        slot = (pairs % len(batch) + start).astype(np.int32)
        batches.append((term, slot, tf.astype(np.int32), np.bincount(term)))
        most = max(most, int(tf.max(initial=0)))
        start += len(batch)
    words = {term.decode("utf-8"): i for term, i in vocab.items() if i > 1}
    size = len(vocab)
    df = np.zeros(size, np.int64)
    for *_, held in batches:
        df[: len(held)] += held
    indptr = np.zeros(size + 1, np.int64)
    np.cumsum(df, out=indptr[1:])
    # Each batch's postings go to their terms' next places, batch after batch: a term's slots stay in rowid
    # order, with no sort of every posting (and no copy of them all but the result).
    slots = np.empty(int(indptr[-1]), np.int32)
    tfs = np.empty(int(indptr[-1]), np.uint8 if most < 2**8 else np.uint16 if most < 2**16 else np.int32)
    filled = indptr[:-1].copy()
    batches.reverse()
    while batches:
        term, slot, tf, held = batches.pop()
        first = np.cumsum(held) - held  # where each term's run starts in this batch
        places = filled[term] + (np.arange(len(term)) - first[term])
        slots[places], tfs[places] = slot, tf
        filled[: len(held)] += held
    rowids = np.concatenate(rowid_parts) if rowid_parts else np.empty(0, np.int64)
    lengths = np.concatenate(length_parts) if length_parts else np.empty(0, np.int32)
    count, total = len(rowids), int(lengths.sum())
    return Postings(
        token=token,
        seq=seq,
        vocab=words,
        indptr=indptr,
        slots=slots,
        tfs=tfs,
        tail_vocab={},
        tail_rows={},
        tail_terms=np.empty(0, np.int32),
        tail_slots=np.empty(0, np.int32),
        tail_tfs=np.empty(0, np.int32),
        base=count,
        rowids=rowids,
        lengths=lengths,
        alive=np.ones(count, bool),
        dead=0,
        count=count,
        total=total,
        norm=_norm(lengths, count, total),
    )


def refresh(old: Postings, changed: Iterable[int], present: Mapping[int, str], *, seq: int) -> Postings:
    """``old`` with the rows ``changed`` since it (rowids) made current: those in ``present`` (rowid ->
    terms) as they are now, the others deleted."""
    changed = set(changed) | set(present)
    base_rowids = old.rowids[: old.base]
    alive = old.alive[: old.base].copy()
    asked = np.fromiter(changed, np.int64, count=len(changed))
    where = np.searchsorted(base_rowids, asked)
    inside = where < old.base
    where = where[inside][base_rowids[where[inside]] == asked[inside]]
    killed = where[alive[where]]
    alive[killed] = False
    tail_vocab = dict(old.tail_vocab)
    tail_rows = {rowid: row for rowid, row in old.tail_rows.items() if rowid not in changed}
    for rowid in sorted(present):
        words = Counter(tokens(present[rowid]))
        ids = []
        for word in words:
            term_id = old.vocab.get(word)
            if term_id is None:
                term_id = tail_vocab.setdefault(word, len(old.indptr) - 1 + len(tail_vocab))
            ids.append(term_id)
        tail_rows[rowid] = _TailRow(
            np.array(ids, np.int32), np.fromiter(words.values(), np.int32, count=len(words)), words.total()
        )
    tail_rows = dict(sorted(tail_rows.items()))
    rows = list(tail_rows.values())
    if rows:
        terms = np.concatenate([r.terms for r in rows])
        order = np.argsort(terms, kind="stable")
        slot_of = np.repeat(
            np.arange(old.base, old.base + len(rows), dtype=np.int32), [len(r.terms) for r in rows]
        )
        tail_terms, tail_slots = terms[order], slot_of[order]
        tail_tfs = np.concatenate([r.tfs for r in rows])[order]
    else:
        tail_terms, tail_slots, tail_tfs = (np.empty(0, np.int32) for _ in range(3))
    tail_lengths = np.array([r.length for r in rows], np.int32)
    lengths = np.concatenate([old.lengths[: old.base], tail_lengths])
    base_lengths = old.lengths[: old.base]
    count = int(alive.sum()) + len(rows)
    total = int(base_lengths[alive].sum(dtype=np.int64)) + int(tail_lengths.sum(dtype=np.int64))
    return replace(
        old,
        seq=seq,
        tail_vocab=tail_vocab,
        tail_rows=tail_rows,
        tail_terms=tail_terms,
        tail_slots=tail_slots,
        tail_tfs=tail_tfs,
        rowids=np.concatenate([base_rowids, np.fromiter(tail_rows, np.int64, count=len(tail_rows))]),
        lengths=lengths,
        alive=np.concatenate([alive, np.ones(len(rows), bool)]),
        dead=old.base - int(alive.sum()),
        count=count,
        total=total,
        norm=_norm(lengths, count, total),
    )
