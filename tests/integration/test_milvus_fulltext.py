"""Full text on Milvus Lite beyond the contract: collections made before the sparse field existed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymilvus import DataType, MilvusClient

from retrieval.errors import UnsupportedSearchError
from retrieval.milvus_store import DIMENSION_PROPERTY, EMBEDDER_PROPERTY, MilvusStore
from retrieval.settings import RetrievalSettings
from tests.contract.vector_store import DIM, EMBEDDER, make_chunk, put, unit
from tests.support.services import start_milvus_lite

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_milvus_lite(tmp_path_factory.mktemp("milvus-lite-fulltext") / "data") as (_, uri):
        yield uri


def _create_dense_only_collection(uri: str, name: str) -> None:
    """The schema as it was before full text: no analyser on ``text``, no ``sparse`` field."""
    client = MilvusClient(uri=uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, max_length=64, is_primary=True)
    schema.add_field("tenant", DataType.VARCHAR, max_length=256, is_partition_key=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=512)
    schema.add_field("version", DataType.VARCHAR, max_length=64)
    schema.add_field("position", DataType.INT64)
    schema.add_field("page", DataType.INT64)
    schema.add_field("text", DataType.VARCHAR, max_length=65535)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE", params={"M": 16})
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    properties = {EMBEDDER_PROPERTY: EMBEDDER, DIMENSION_PROPERTY: str(DIM)}
    client.alter_collection_properties(name, properties=properties)
    client.close()


@pytest.mark.parametrize("reopen", [False, True], ids=["ensure_collection", "first-use"])
def test_a_collection_without_the_sparse_field_keeps_working_dense_only(lite_uri: str, reopen: bool) -> None:
    name = f"legacy_{uuid.uuid4().hex[:12]}"
    _create_dense_only_collection(lite_uri, name)
    store = MilvusStore(RetrievalSettings(milvus_uri=lite_uri, collection=name))
    try:
        if not reopen:
            store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
        else:  # a second process: no ensure_collection, the store opens the collection on first use
            writer = MilvusStore(store.settings)
            writer.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
            writer.close()
        chunk = make_chunk(text="zorbulase")
        put(store, [chunk], [unit(0)])

        assert [hit.id for hit in store.search("acme", unit(0), limit=5)] == [chunk.id]
        for mode in ("bm25", "hybrid"):
            with pytest.raises(UnsupportedSearchError, match="rebuild"):
                store.search("acme", unit(0), limit=5, mode=mode, query_text="zorbulase")
    finally:
        store.drop()
        store.close()


def test_a_new_collection_has_full_text(lite_uri: str) -> None:
    store = MilvusStore(RetrievalSettings(milvus_uri=lite_uri, collection=f"fresh_{uuid.uuid4().hex[:12]}"))
    try:
        store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
        chunk = make_chunk(text="深度学习 and zorbulase")
        put(store, [chunk], [unit(0)])
        for query in ("zorbulase", "学习"):
            assert [hit.id for hit in store.search("acme", None, limit=5, mode="bm25", query_text=query)] == [
                chunk.id
            ]
    finally:
        store.drop()
        store.close()
