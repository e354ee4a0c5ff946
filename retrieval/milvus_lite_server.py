"""The Milvus Lite server Sieve starts (``python -m retrieval.milvus_lite_server server ...``): Milvus Lite's
own command line, with its dense search made to cost what its index costs.

Why: Milvus Lite 3 is Python over faiss. Before each dense search it decides which rows are visible: for every
row of every segment, a Python loop compares the row's sequence number with the highest one for its primary
key in any segment or the memtable, then asks the tombstone map and the memtable's deletes
(``milvus_lite/search/executor_indexed.py``: ``_update_max_seqs`` and ``_build_local_mask``). At 100k chunks
that loop was 88 % of a dense search (py-spy on the server: ~150 ms per query; the HNSW search itself ~4 ms).

What changes: the same visibility, computed from what changes rarely. Segments are immutable, so which of a
segment set's rows carry their key's highest sequence among the segments is computed once per set (one pass
over the keys, cached until a flush or a compaction changes the set). Each search then only walks what is
small and live: the memtable's rows, its deletes and the tombstone map, clearing the rows they shadow. The
winning rows are then read over the columns the response can use only (Milvus Lite converts whole rows, the
stored vector and the lexical terms included, then drops them: a quarter of what remained). The rest of the
search (per-source recall through each segment's index, the merge, the projection) is Milvus
Lite's own code path, unchanged, and the results are the same rows in the same order
(``tests/unit/retrieval/test_milvus_lite_server.py`` compares them on random writes, upserts, deletes and
flushes).

The replacement is installed only on the Milvus Lite versions it was checked against (``_CHECKED``) and only
when the function it replaces is the one it was written for (a hash of its source); otherwise the server runs
as shipped and logs why. ``SIEVE_MILVUS_LITE_FAST_SEARCH=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

logger = logging.getLogger("sieve.milvus_lite")

# milvus-lite versions, and the sha256 of ``execute_search_with_index``'s source, this module was checked on.
_CHECKED = {"3.2.2": ("e22ce49c5ee11c9535792072df8ac5d0", "9f604369db5ae7371d4e009cad0f22cf")}
_ORIGINAL: Callable[..., Any] | None = None


class _SegmentSet:
    """Which rows of an immutable set of segments carry their key's highest sequence among the segments."""

    def __init__(self, segments: Sequence[Any]) -> None:
        best: dict[Any, int] = {}
        for seg in segments:
            for pk, seq in zip(seg.pks, np.asarray(seg.seqs).tolist(), strict=True):
                if seq > best.get(pk, -1):
                    best[pk] = seq
        self.best = best  # key -> highest sequence in the segments
        self.winners: list[np.ndarray] = []  # per segment: row carries its key's highest sequence
        self.rows: dict[Any, list[tuple[int, int]]] = {}  # key -> (segment, row) of those winning rows
        for s, seg in enumerate(segments):
            seqs = np.asarray(seg.seqs).tolist()
            mask = np.zeros(len(seqs), dtype=bool)
            for i, (pk, seq) in enumerate(zip(seg.pks, seqs, strict=True)):
                if best[pk] == seq:
                    mask[i] = True
                    self.rows.setdefault(pk, []).append((s, i))
            self.winners.append(mask)


class _SegmentSets:
    """A few recent segment sets (searches with and without partitions, and across a flush)."""

    def __init__(self, size: int = 4) -> None:
        self._lock = threading.Lock()
        self._sets: OrderedDict[tuple[Any, ...], _SegmentSet] = OrderedDict()
        self._size = size

    def get(self, segments: Sequence[Any]) -> _SegmentSet:
        key = tuple((id(seg), seg.file_path, seg.num_rows) for seg in segments)
        with self._lock:
            found = self._sets.get(key)
            if found is not None:
                self._sets.move_to_end(key)
                return found
        built = _SegmentSet(segments)  # outside the lock: one pass over the keys
        with self._lock:
            self._sets[key] = built
            while len(self._sets) > self._size:
                self._sets.popitem(last=False)
        return built


_SETS = _SegmentSets()


def visible_rows(
    segments: Sequence[Any],
    mt_pks: Sequence[Any],
    mt_seqs: np.ndarray,
    tombstones: dict[Any, int],
    mt_deletes: dict[Any, tuple[int, Any]],
) -> tuple[list[np.ndarray], np.ndarray]:
    """Per segment and for the memtable, the rows a search may return: the highest sequence for their key
    across every source, not shadowed by a later tombstone or memtable delete. Milvus Lite's
    ``_update_max_seqs`` + ``_build_local_mask``, without visiting every segment row."""
    cached = _SETS.get(segments)
    masks = [mask.copy() for mask in cached.winners]
    seqs = np.asarray(mt_seqs).tolist()
    mt_best: dict[Any, int] = {}
    for pk, seq in zip(mt_pks, seqs, strict=True):
        if seq > mt_best.get(pk, -1):
            mt_best[pk] = seq
    # segment rows shadowed by a later memtable row
    for pk, seq in mt_best.items():
        if seq > cached.best.get(pk, seq):
            for s, i in cached.rows[pk]:
                masks[s][i] = False
    # segment rows shadowed by a later delete (the tombstone map, then the memtable's own deletes)
    for deletes in (tombstones, {pk: entry[0] for pk, entry in mt_deletes.items()}):
        for pk, deleted in deletes.items():
            for s, i in cached.rows.get(pk, ()):
                if deleted > cached.best[pk]:
                    masks[s][i] = False
    mt_mask = np.zeros(len(seqs), dtype=bool)
    for i, (pk, seq) in enumerate(zip(mt_pks, seqs, strict=True)):
        if seq != max(mt_best[pk], cached.best.get(pk, -1)):
            continue
        if tombstones.get(pk, -1) > seq:
            continue
        entry = mt_deletes.get(pk)
        if entry is not None and entry[0] > seq:
            continue
        mt_mask[i] = True
    return masks, mt_mask


def execute_search_with_index(  # noqa: C901, PLR0912, PLR0913, PLR0915 - Milvus Lite's function, its shape kept
    query_vectors: np.ndarray,
    segments: Iterable[Any],
    memtable: Any,
    delta_index: Any,
    top_k: int,
    metric_type: str,
    pk_field: str,
    vector_field: str,
    partition_names: list[str] | None = None,
    compiled_filter: Any = None,
    output_fields: list[str] | None = None,
    indexed_filter_plan: Any = None,
    project_record_fn: Callable[[dict], dict] | None = None,
    search_params: dict[str, Any] | None = None,
) -> list[list[dict]]:
    """``milvus_lite.search.executor_indexed.execute_search_with_index`` (Apache-2.0, Milvus Lite 3.2.2) with
    its visibility pass replaced by ``visible_rows`` and rows read over the projected columns
    (``segment_row``); every other step is the original's."""
    from milvus_lite.index.brute_force import BruteForceIndex

    if query_vectors.ndim == 1:
        query_vectors = query_vectors.reshape(1, -1)
    if query_vectors.dtype != np.float32:
        query_vectors = query_vectors.astype(np.float32, copy=False)
    nq = int(query_vectors.shape[0])
    if nq == 0 or top_k <= 0:
        return [[] for _ in range(nq)]
    partition_filter = set(partition_names) if partition_names else None
    in_scope_segments = [
        s
        for s in segments
        if s.num_rows > 0 and (partition_filter is None or s.partition in partition_filter)
    ]
    mt_pks, mt_seqs, mt_vecs, mt_row_refs, mt_table = memtable.to_search_snapshot(
        vector_field=vector_field,
        partition_names=partition_names,
        include_table=compiled_filter is not None,
    )
    if not in_scope_segments and not mt_pks:
        return [[] for _ in range(nq)]

    seg_masks, mt_mask = visible_rows(
        in_scope_segments, mt_pks, mt_seqs, delta_index._map, memtable.delete_index_snapshot()
    )

    seg_filter_masks: dict[int, np.ndarray] = {}
    mt_filter_mask: np.ndarray | None = None
    if compiled_filter is not None:
        from milvus_lite.search.filter import evaluate_mask
        from milvus_lite.search.indexed_filter import evaluate_segment_filter

        for seg in in_scope_segments:
            seg_filter_masks[id(seg)] = evaluate_segment_filter(seg, compiled_filter, indexed_filter_plan)
        if mt_pks and mt_table is not None:
            mt_filter_mask = evaluate_mask(compiled_filter, mt_table)

    per_query_candidates: list[list[tuple[float, int, int]]] = [[] for _ in range(nq)]
    sources: list[tuple[list[Any], np.ndarray, np.ndarray]] = []

    def recall(source_idx: int, local_mask: np.ndarray, vectors: np.ndarray, index: Any) -> None:
        if len(local_mask) == 0 or not local_mask.any():
            return
        if index is None:
            index = BruteForceIndex.build(vectors, metric_type)
        local_ids, dists = index.search(
            query_vectors, top_k, valid_mask=None if local_mask.all() else local_mask, params=search_params
        )
        for q in range(nq):
            for j in range(top_k):
                lid = int(local_ids[q, j])
                if lid < 0:
                    break
                per_query_candidates[q].append((float(dists[q, j]), source_idx, lid))

    for seg, visible in zip(in_scope_segments, seg_masks, strict=True):
        seg_vectors, seg_vector_null_mask = seg.vector_data(vector_field)
        sources.append((list(seg.pks), seg.seqs, seg_vectors))
        combined = seg_filter_masks.get(id(seg))
        if seg_vector_null_mask is not None:
            combined = seg_vector_null_mask if combined is None else combined & seg_vector_null_mask
        if combined is not None:
            visible = visible & combined.astype(bool)
        recall(len(sources) - 1, visible, seg_vectors, seg.indexes.get(vector_field))
    if mt_pks:
        sources.append((mt_pks, mt_seqs, mt_vecs))
        visible = mt_mask if mt_filter_mask is None else mt_mask & mt_filter_mask.astype(bool)
        recall(len(sources) - 1, visible, mt_vecs, None)

    n_segments = len(in_scope_segments)
    if project_record_fn is not None:
        project_entity = project_record_fn
    elif output_fields is None:

        def project_entity(record: dict) -> dict:
            return {k: v for k, v in record.items() if k not in (pk_field, vector_field)}

    else:
        keep = set(output_fields) - {pk_field}

        def project_entity(record: dict) -> dict:
            return {k: record[k] for k in keep if k in record}

    # Only the columns the projection can use: Segment.row_to_dict converts every column of the row, the
    # stored vector (hundreds of floats) and the lexical terms included, for rows whose entity drops them.
    needed = None
    if output_fields is not None and "*" not in output_fields:
        needed = {*output_fields, pk_field, "$meta"}

    def materialize(source_idx: int, local_id: int) -> dict:
        if source_idx < n_segments:
            segment = in_scope_segments[source_idx]
            if needed is None:
                return segment.row_to_dict(local_id)
            return segment_row(segment, local_id, needed)
        batch_idx, row_idx = mt_row_refs[local_id]
        return memtable.materialize_row(batch_idx, row_idx)

    results: list[list[dict]] = []
    for q in range(nq):
        candidates = per_query_candidates[q]
        candidates.sort(key=lambda c: (c[0], c[1], c[2]))
        per_query = []
        for dist, source_idx, local_id in candidates[:top_k]:
            record = materialize(source_idx, local_id)
            pk = record.get(pk_field) if pk_field in record else sources[source_idx][0][local_id]
            per_query.append({"id": pk, "distance": dist, "entity": project_entity(record)})
        results.append(per_query)
    return results


def segment_row(segment: Any, row: int, columns: set[str]) -> dict:
    """``Segment.row_to_dict`` (Milvus Lite 3.2.2) over ``columns`` only: ``$meta``'s keys unpacked at the top
    level, as there."""
    result: dict = {}
    for name in segment.table.schema.names:
        if name == "_seq" or name not in columns:
            continue
        result[name] = segment.table.column(name)[row].as_py()
    meta = result.get("$meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            meta = None
    if isinstance(meta, dict):
        result.update(meta)
    return result


def source_digest(function: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(function).encode("utf-8")).hexdigest()[:32]


def install() -> bool:
    """Put ``execute_search_with_index`` in place of Milvus Lite's, where it was checked; says why not."""
    global _ORIGINAL
    if os.environ.get("SIEVE_MILVUS_LITE_FAST_SEARCH", "1").strip() in {"0", "false", "no", "off"}:
        logger.info("Milvus Lite dense search as shipped (SIEVE_MILVUS_LITE_FAST_SEARCH=0)")
        return False
    from milvus_lite import _version
    from milvus_lite.engine import collection
    from milvus_lite.search import executor_indexed
    from milvus_lite.storage.segment import Segment

    version = _version.get_version()
    original = executor_indexed.execute_search_with_index
    digest = (source_digest(original), source_digest(Segment.row_to_dict))
    if _CHECKED.get(version) != digest:
        logger.warning(
            "Milvus Lite %s (sources %s) is not a version Sieve's faster dense search was checked on "
            "(%s): its dense search runs as shipped",
            version,
            digest,
            ", ".join(_CHECKED),
        )
        return False
    _ORIGINAL = original
    collection.execute_search_with_index = execute_search_with_index
    logger.info("Milvus Lite %s: dense search with Sieve's cached visibility pass", version)
    return True


def uninstall() -> None:
    """Milvus Lite's own function again (tests)."""
    global _ORIGINAL
    if _ORIGINAL is not None:
        from milvus_lite.engine import collection

        collection.execute_search_with_index = _ORIGINAL
        _ORIGINAL = None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)  # Milvus Lite's own loggers stay as quiet as when it runs alone
    install()
    from milvus_lite.cmdline import main as milvus_lite_main

    return int(milvus_lite_main(argv) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
