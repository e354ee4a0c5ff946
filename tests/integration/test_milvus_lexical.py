"""The lexical field on Milvus Lite: what a new collection indexes, and collections made before it."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymilvus import DataType, Function, FunctionType, MilvusClient

from retrieval import milvus_fulltext as fulltext
from retrieval.lexical import ANALYSIS_VERSION, analyze
from retrieval.milvus_store import DIMENSION_PROPERTY, EMBEDDER_PROPERTY, MilvusStore
from retrieval.settings import RetrievalSettings
from retrieval.types import Chunk
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


def _sample_like(store: MilvusStore) -> tuple[dict[str, list[str]], list[Chunk]]:
    """Four documents written one by one (each write flushed: a Milvus Lite segment of its own); every chunk
    carries its document's title as context, as chunking gives it."""
    documents = {
        "vaccines": (
            "How vaccines train the immune system",
            [
                "Vaccines expose the body to a harmless piece of a pathogen.",
                "Memory cells remember the antigen.",
                "Boosters renew immunity over time.",
            ],
        ),
        "caching": (
            "How HTTP caching works",
            [
                "A cache stores responses to reuse them.",
                "Cache-Control says how long a response stays fresh.",
                "Validators like ETag avoid sending the body again.",
            ],
        ),
        "tea": (
            "Brewing tea",
            [
                "Warm the pot first.",
                "Steep green tea for two minutes.",
                "Black tea takes hotter water and more time, which is how its tannins come out.",
            ],
        ),
        "bread": (
            "Sourdough",
            [
                "A starter holds wild yeast.",
                "Long fermentation makes the crumb open.",
                "Bake it hot, with steam at first, to make the crust work.",
            ],
        ),
    }
    ids: dict[str, list[str]] = {}
    written: list[Chunk] = []
    for seed, (name, (title, texts)) in enumerate(documents.items()):
        chunks = [
            make_chunk(document_id=name, position=i, text=text).model_copy(update={"context": title})
            for i, text in enumerate(texts)
        ]
        put(store, chunks, [unit(seed * 10 + i) for i in range(len(chunks))])
        ids[name] = [chunk.id for chunk in chunks]
        written.extend(chunks)
    return ids, written


def test_bm25_statistics_span_the_whole_tenant_with_the_lexical_index(lite_uri: str, tmp_path: Path) -> None:
    """Milvus Lite's own BM25 keeps idf per segment: "vaccin", in every chunk of its document's segment, gets
    an idf near 0 there, so "how do vaccines work" ranked the caching document first (the sample corpus).
    The SQLite index scores over the tenant's chunks as one collection."""
    settings = RetrievalSettings(
        milvus_uri=lite_uri, collection=f"lex_{uuid.uuid4().hex[:12]}", lexical_dir=str(tmp_path)
    )
    store = MilvusStore(settings)
    try:
        store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
        ids, written = _sample_like(store)
        hits = store.search("acme", None, limit=3, mode="bm25", query_text="how do vaccines work")
        assert [hit.document_id for hit in hits] == ["vaccines"] * 3
        # BM25 (FTS5's: k1 1.2, b 0.75) over the tenant's 12 chunks as one collection
        chunks = {c.id: analyze(c.indexed_text).split() for c in written}
        average = sum(map(len, chunks.values())) / len(chunks)
        holding = [i for i, terms in chunks.items() if "vaccin" in terms]
        idf = math.log((len(chunks) - len(holding) + 0.5) / (len(holding) + 0.5))
        expected = {
            i: idf
            * (tf := chunks[i].count("vaccin"))
            * 2.2
            / (tf + 1.2 * (0.25 + 0.75 * len(chunks[i]) / average))
            for i in holding
        }
        scored = store.search("acme", None, limit=12, mode="bm25", query_text="vaccines")
        assert {hit.id: hit.score for hit in scored} == pytest.approx(expected, rel=1e-6)
        assert store.search("acme", None, limit=1, mode="bm25", query_text="cache")[0].id in ids["caching"]
    finally:
        store.drop()
        store.close()
    assert not (tmp_path / settings.collection).exists()  # dropped with its collection


def test_the_lexical_index_is_filled_from_an_older_collection_and_follows_deletes(
    lite_uri: str, tmp_path: Path
) -> None:
    name = f"lex_{uuid.uuid4().hex[:12]}"
    before = MilvusStore(RetrievalSettings(milvus_uri=lite_uri, collection=name))  # Milvus Lite's own BM25
    before.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
    ids, _ = _sample_like(before)
    before.close()
    store = MilvusStore(RetrievalSettings(milvus_uri=lite_uri, collection=name, lexical_dir=str(tmp_path)))
    try:
        # no ensure_collection: the first search opens the collection and fills the index from it
        assert [
            h.document_id for h in store.search("acme", None, limit=3, mode="bm25", query_text="vaccines")
        ] == ["vaccines"] * 3
        assert (tmp_path / name / "COMPLETE-2").exists()
        # "how" is in every chunk of vaccines and caching (their titles), in one chunk of tea's text
        only = store.search(
            "acme", None, limit=5, mode="bm25", query_text="how", filters={"document_id": "tea"}
        )
        assert [hit.id for hit in only] == [ids["tea"][2]]
        store.delete_document("acme", "vaccines")
        assert store.search("acme", None, limit=3, mode="bm25", query_text="vaccines") == []
        assert store.search("other", None, limit=3, mode="bm25", query_text="tea") == []  # another tenant
    finally:
        store.drop()
        store.close()
