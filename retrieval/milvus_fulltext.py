"""Milvus's own full-text search (the server-side BM25 function) for ``MilvusStore``.

Where the server has it (Milvus Lite, Milvus 2.5+), a new collection gets:

    text      VARCHAR with ``enable_analyzer=True`` and ``analyzer_params={"tokenizer": <analyzer>}``
              (``jieba`` by default: it segments Chinese and also splits English words; ``standard`` does not
              segment Chinese, so a Chinese query would find nothing)
    sparse    SPARSE_FLOAT_VECTOR, output of ``Function(type=BM25, input=text)``: filled by the server from
              ``text`` on every insert; index SPARSE_INVERTED_INDEX, metric BM25 (``bm25_k1``, ``bm25_b``)

A bm25 search sends the raw query text; the server analyses it the same way. Milvus Lite 3.2.2 returns BM25
distances negated (more negative = better), Milvus 2.5+ servers positive: BM25 scores are never negative, so
``bm25_score`` takes the absolute value, the one place where they are normalised.

Milvus 2.3/2.4 servers have no BM25 function: there a collection stays dense-only, and so does a collection
created before this field existed (it keeps working for dense search; rebuild it under a new
``RETRIEVAL_COLLECTION`` to get bm25 and hybrid search).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pymilvus import CollectionSchema, DataType, Function, FunctionType
from pymilvus.milvus_client import IndexParams

SPARSE_FIELD = "sparse"
BM25_FUNCTION = "text_bm25"
MIN_SERVER_VERSION = (2, 5)


def server_has_full_text(version: str) -> bool:
    """Whether a server that reports ``version`` runs the BM25 function: Milvus Lite, or Milvus 2.5+."""
    if version.startswith("milvus_lite"):
        return True
    found = re.search(r"(\d+)\.(\d+)", version)
    return found is not None and (int(found[1]), int(found[2])) >= MIN_SERVER_VERSION


def text_field_params(analyzer: str) -> dict[str, Any]:
    """Extra ``add_field`` keywords of the ``text`` field for full-text search."""
    return {"enable_analyzer": True, "analyzer_params": {"tokenizer": analyzer}}


def add_full_text(schema: CollectionSchema, index_params: IndexParams, *, k1: float, b: float) -> None:
    """Add the sparse field, the BM25 function that fills it from ``text``, and its index."""
    schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name=BM25_FUNCTION,
            function_type=FunctionType.BM25,
            input_field_names=["text"],
            output_field_names=[SPARSE_FIELD],
        )
    )
    index_params.add_index(
        field_name=SPARSE_FIELD,
        index_type="SPARSE_INVERTED_INDEX",
        metric_type="BM25",
        params={"bm25_k1": k1, "bm25_b": b},
    )


def has_full_text(info: Mapping[str, Any]) -> bool:
    """Whether a described collection has the sparse field filled by a BM25 function."""
    sparse = any(
        field.get("name") == SPARSE_FIELD and field.get("type") == DataType.SPARSE_FLOAT_VECTOR
        for field in info.get("fields", [])
    )
    bm25 = any(
        function.get("type") == FunctionType.BM25 and SPARSE_FIELD in function.get("output_field_names", [])
        for function in info.get("functions", []) or []
    )
    return sparse and bm25


def bm25_search_params() -> dict[str, Any]:
    return {"metric_type": "BM25", "params": {}}


def bm25_score(distance: float) -> float:
    """A BM25 score, higher is better, from the distance either kind of server returns (see above)."""
    return abs(float(distance))
