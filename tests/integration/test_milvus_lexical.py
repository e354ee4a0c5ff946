"""The lexical field on Milvus Lite: what a new collection indexes, and collections made before it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from pymilvus import DataType, Function, FunctionType, MilvusClient

from retrieval import milvus_fulltext as fulltext
from retrieval.lexical import ANALYSIS_VERSION
from retrieval.milvus_store import DIMENSION_PROPERTY, EMBEDDER_PROPERTY, MilvusStore
from retrieval.settings import RetrievalSettings
from tests.contract.vector_store import DIM, EMBEDDER, make_chunk, put, unit
from tests.support.services import start_milvus_lite

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def lite_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_milvus_lite(tmp_path_factory.mktemp("milvus-lite-lexical") / "data") as (_, uri):
        yield uri


@pytest.fixture
def store(lite_uri: str) -> Iterator[MilvusStore]:
    store = MilvusStore(RetrievalSettings(milvus_uri=lite_uri, collection=f"lex_{uuid.uuid4().hex[:12]}"))
    try:
        store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
        yield store
    finally:
        store.drop()
        store.close()


def _bm25(store: MilvusStore, query: str) -> list[str]:
    return [hit.id for hit in store.search("acme", None, limit=5, mode="bm25", query_text=query)]


def test_a_new_collection_indexes_the_analysed_lexical_field(store: MilvusStore, lite_uri: str) -> None:
    client = MilvusClient(uri=lite_uri)
    info = client.describe_collection(store.settings.collection)
    client.close()

    assert fulltext.full_text_kind(info) == "lexical"
    assert info["properties"][fulltext.LEXICAL_PROPERTY] == ANALYSIS_VERSION


def test_bm25_matches_stems_and_drops_punctuation(store: MilvusStore) -> None:
    folding = make_chunk(document_id="fold", text="Protein folding is driven by hydrophobic collapse.")
    capital = make_chunk(document_id="capital", text="北京是中国的首都")
    question = make_chunk(document_id="question", text="上海是一个大城市吗？")
    put(store, [folding, capital, question])

    assert _bm25(store, "What folds proteins?") == [folding.id]
    # jieba inside Milvus made "？" a term, which matched the one passage that has it
    assert _bm25(store, "中国的首都在哪里？") == [capital.id]
    assert _bm25(store, "the ? of") == []  # only stop words and punctuation: nothing to match


def test_the_context_is_indexed_but_not_shown(store: MilvusStore) -> None:
    chunk = make_chunk(text="Warm the pot first.").model_copy(update={"context": "Brewing tea > Steps"})
    put(store, [chunk], [unit(0)])

    hits = store.search("acme", None, limit=5, mode="bm25", query_text="brewing")

    assert [(hit.id, hit.text) for hit in hits] == [(chunk.id, "Warm the pot first.")]


def _create_legacy_collection(uri: str, name: str) -> None:
    """The schema before the lexical field: ``text`` analysed by Milvus's jieba, BM25 over it."""
    client = MilvusClient(uri=uri)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, max_length=64, is_primary=True)
    schema.add_field("tenant", DataType.VARCHAR, max_length=256, is_partition_key=True)
    schema.add_field("doc_id", DataType.VARCHAR, max_length=512)
    schema.add_field("version", DataType.VARCHAR, max_length=64)
    schema.add_field("position", DataType.INT64)
    schema.add_field("page", DataType.INT64)
    schema.add_field(
        "text",
        DataType.VARCHAR,
        max_length=65535,
        enable_analyzer=True,
        analyzer_params={"tokenizer": "jieba"},
    )
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name="text_bm25",
            function_type=FunctionType.BM25,
            input_field_names=["text"],
            output_field_names=["sparse"],
        )
    )
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="HNSW", metric_type="COSINE", params={"M": 16})
    index.add_index(field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    properties = {EMBEDDER_PROPERTY: EMBEDDER, DIMENSION_PROPERTY: str(DIM)}
    client.alter_collection_properties(name, properties=properties)
    client.close()


@pytest.mark.parametrize("reopen", [False, True], ids=["ensure_collection", "first-use"])
def test_a_collection_made_before_the_lexical_field_keeps_its_full_text(lite_uri: str, reopen: bool) -> None:
    name = f"legacy_{uuid.uuid4().hex[:12]}"
    _create_legacy_collection(lite_uri, name)
    store = MilvusStore(RetrievalSettings(milvus_uri=lite_uri, collection=name))
    try:
        if not reopen:
            store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
        chunk = make_chunk(text="The rare enzyme zorbulase cleaves a peptide bond")
        other = make_chunk(document_id="doc-2", text="Plate tectonics moves continents slowly")
        put(store, [chunk, other], [unit(0), unit(1)])  # rows without a lexical field: the old schema

        assert _bm25(store, "zorbulase") == [chunk.id]  # the query goes to the server as typed
        hybrid = store.search("acme", unit(1), limit=5, mode="hybrid", query_text="zorbulase")
        assert {hit.id for hit in hybrid} == {chunk.id, other.id}
    finally:
        store.drop()
        store.close()
