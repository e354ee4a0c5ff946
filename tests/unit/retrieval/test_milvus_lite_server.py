"""The Milvus Lite server's faster visibility pass returns what Milvus Lite's own search returns.

Both searches run on the same in-process Milvus Lite collection after random inserts, upserts (a key in
several segments and in the memtable), deletes (tombstones in the memtable and, after a flush, in the delta
index) and flushes, with and without a tenant filter, named output fields (rows materialised over fewer
columns) and an HNSW index.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("milvus_lite")

from milvus_lite.db import MilvusLite  # noqa: E402
from milvus_lite.engine import collection as lite_collection  # noqa: E402
from milvus_lite.schema.types import CollectionSchema, DataType, FieldSchema  # noqa: E402

from retrieval import milvus_lite_server  # noqa: E402

DIM = 8


@pytest.fixture
def fast_search():
    if not milvus_lite_server.install():
        pytest.skip("this Milvus Lite version is not one the faster pass was checked on (it runs as shipped)")
    yield
    milvus_lite_server.uninstall()


def _collection(tmp_path, *, hnsw: bool):
    db = MilvusLite(str(tmp_path / "lite"))
    schema = CollectionSchema(
        fields=[
            FieldSchema(name="id", dtype=DataType.VARCHAR, is_primary=True, max_length=64),
            FieldSchema(name="tenant", dtype=DataType.VARCHAR, max_length=16, is_partition_key=True),
            FieldSchema(name="n", dtype=DataType.INT64),
            FieldSchema(name="vector", dtype=DataType.FLOAT_VECTOR, dim=DIM),
        ]
    )
    col = db.create_collection("chunks", schema)
    params = {"index_type": "HNSW", "metric_type": "COSINE", "params": {"M": 8, "efConstruction": 64}}
    col.create_index(
        "vector", params if hnsw else {"index_type": "FLAT", "metric_type": "COSINE", "params": {}}
    )
    col.load()
    return db, col


def _rows(rng: random.Random, keys: list[str], step: int) -> list[dict]:
    return [
        {
            "id": key,
            "tenant": rng.choice(["a", "b"]),
            "n": step,
            "vector": [rng.gauss(0, 1) for _ in range(DIM)],
        }
        for key in keys
    ]


def _both(col, queries: np.ndarray, **kwargs) -> tuple[list, list]:
    milvus_lite_server.uninstall()
    shipped = col.search(queries.tolist(), **kwargs)
    assert milvus_lite_server.install()
    faster = col.search(queries.tolist(), **kwargs)
    return shipped, faster


def _flat(results: list[list[dict]]) -> list[list[tuple]]:
    return [
        [(hit["id"], round(hit["distance"], 5), sorted(hit["entity"].items())) for hit in hits]
        for hits in results
    ]


@pytest.mark.parametrize(("seed", "hnsw"), [(0, False), (1, False), (2, True)], ids=["f0", "f1", "hnsw2"])
def test_same_results_as_milvus_lite_after_random_writes(tmp_path, fast_search, hnsw, seed):
    rng = random.Random(seed)
    db, col = _collection(tmp_path, hnsw=hnsw)
    try:
        keys = [f"k{i}" for i in range(300)]
        live: set[str] = set()
        queries = np.random.default_rng(seed).standard_normal((4, DIM)).astype(np.float32)
        compared = 0
        for step in range(30):
            action = rng.random()
            if action < 0.45:  # insert or upsert: a key may now be in several segments and the memtable
                batch = rng.sample(keys, rng.randint(1, 40))
                col.upsert(_rows(rng, batch, step))
                live.update(batch)
            elif action < 0.7 and live:
                gone = rng.sample(sorted(live), min(len(live), rng.randint(1, 25)))
                col.delete(gone)
                live.difference_update(gone)
            else:
                col.flush()
            # a flushed segment's index is built (and segments compacted) in the background: wait, so that
            # both searches see the same segments with the same indexes (brute force and HNSW may differ)
            col._wait_for_bg(timeout=60)
            for kwargs in (
                {"top_k": 20},
                {"top_k": 50, "expr": 'tenant == "a"', "output_fields": ["n", "tenant"]},
                {"top_k": 5, "expr": "n > 10", "output_fields": ["n"]},
            ):
                shipped, faster = _both(col, queries, anns_field="vector", metric_type="COSINE", **kwargs)
                assert _flat(faster) == _flat(shipped), f"step {step}, {kwargs}"
                compared += sum(len(hits) for hits in shipped)
        assert compared > 0
        # deleted keys are never returned, and every live key can be
        everything = col.search(
            queries[:1].tolist(), top_k=len(keys), anns_field="vector", metric_type="COSINE"
        )
        assert {hit["id"] for hit in everything[0]} == live
    finally:
        db.close()


def test_the_visibility_pass_itself():
    class Seg:
        def __init__(self, pks, seqs):
            self.pks, self.seqs, self.file_path, self.num_rows = pks, np.array(seqs), f"f{id(self)}", len(pks)

    older, newer = Seg(["x", "y", "z"], [1, 2, 3]), Seg(["x", "w"], [5, 6])
    masks, mt_mask = milvus_lite_server.visible_rows(
        [older, newer],
        mt_pks=["y", "w", "v"],
        mt_seqs=np.array([7, 4, 8]),
        tombstones={"z": 9, "x": 4},  # z deleted after its write; x's delete predates its newer write
        mt_deletes={"v": (9, "_default")},
    )
    assert masks[0].tolist() == [False, False, False]  # x shadowed by newer, y by the memtable, z deleted
    assert masks[1].tolist() == [True, True]  # x at 5 survives the delete at 4; w at 6 beats the memtable's 4
    assert mt_mask.tolist() == [True, False, False]  # y at 7 wins; w at 4 loses; v deleted at 9


def test_not_installed_on_an_unchecked_version(monkeypatch):
    from milvus_lite import _version

    monkeypatch.setattr(_version, "get_version", lambda: "0.0.1")
    assert milvus_lite_server.install() is False
    assert lite_collection.execute_search_with_index is not milvus_lite_server.execute_search_with_index


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("SIEVE_MILVUS_LITE_FAST_SEARCH", "0")
    assert milvus_lite_server.install() is False
