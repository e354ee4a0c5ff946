"""Milvus's own full-text search (the server-side BM25 function) for ``MilvusStore``.

Where the server has it (Milvus Lite, Milvus 2.5+), a new collection gets:

    lexical   VARCHAR, the chunk's context and text as ``retrieval.lexical.analyze`` leaves them (normalised,
              stemmed or segmented terms separated by spaces), with ``enable_analyzer=True`` and the
              ``standard`` tokenizer, which only splits them again at the spaces: the terms hold nothing but
              letters and digits, and ``standard`` splits at what is not one (tantivy's SimpleTokenizer on a
              Milvus server, ``\\w+`` on Milvus Lite, which has no whitespace tokenizer)
    sparse    SPARSE_FLOAT_VECTOR, output of ``Function(type=BM25, input=lexical)``: filled by the server on
              every insert; index SPARSE_INVERTED_INDEX, metric BM25 (``bm25_k1``, ``bm25_b``)

and the collection property ``sieve.lexical`` records ``retrieval.lexical.ANALYSIS_VERSION``. A bm25 search
sends the query analysed the same way. Milvus Lite 3.2.2 returns BM25 distances negated (more negative =
better), Milvus 2.5+ servers positive: BM25 scores are never negative, so ``bm25_score`` takes the absolute
value, the one place where they are normalised.

Collections made before the ``lexical`` field (``legacy``: the BM25 function reads ``text`` itself, analysed
by the server's jieba tokenizer) keep working as they did: rows get no lexical field and queries go to the
server as typed. ``sieve reindex`` (or a new ``RETRIEVAL_COLLECTION``) moves them to the current analysis.
Milvus 2.3/2.4 servers have no BM25 function: there a collection stays dense-only, and so does a collection
created before full text existed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pymilvus import CollectionSchema, DataType, Function, FunctionType
from pymilvus.milvus_client import IndexParams

SPARSE_FIELD = "sparse"
LEXICAL_FIELD = "lexical"
LEXICAL_PROPERTY = "sieve.lexical"
BM25_FUNCTION = "text_bm25"
MIN_SERVER_VERSION = (2, 5)
LEXICAL_MAX_BYTES = 65535
LEXICAL_TOKENIZER = "standard"

FullText = Literal["lexical", "legacy", "none"]


def server_has_full_text(version: str) -> bool:
    """Whether a server that reports ``version`` runs the BM25 function: Milvus Lite, or Milvus 2.5+."""
    if version.startswith("milvus_lite"):
        return True
    found = re.search(r"(\d+)\.(\d+)", version)
    return found is not None and (int(found[1]), int(found[2])) >= MIN_SERVER_VERSION


def add_full_text(schema: CollectionSchema, index_params: IndexParams, *, k1: float, b: float) -> None:
    """Add the lexical field, the sparse field, the BM25 function that fills one from the other, its index."""
    schema.add_field(
        LEXICAL_FIELD,
        DataType.VARCHAR,
        max_length=LEXICAL_MAX_BYTES,
        enable_analyzer=True,
        analyzer_params={"tokenizer": LEXICAL_TOKENIZER},
    )
    schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
    schema.add_function(
        Function(
            name=BM25_FUNCTION,
            function_type=FunctionType.BM25,
            input_field_names=[LEXICAL_FIELD],
            output_field_names=[SPARSE_FIELD],
        )
    )
    index_params.add_index(
        field_name=SPARSE_FIELD,
        index_type="SPARSE_INVERTED_INDEX",
        metric_type="BM25",
        params={"bm25_k1": k1, "bm25_b": b},
    )


def full_text_kind(info: Mapping[str, Any]) -> FullText:
    """How a described collection does full text: ``lexical`` (BM25 over the analysed ``lexical`` field),
    ``legacy`` (BM25 over ``text``, analysed by the server) or ``none``."""
    sparse = any(
        field.get("name") == SPARSE_FIELD and field.get("type") == DataType.SPARSE_FLOAT_VECTOR
        for field in info.get("fields", [])
    )
    inputs = [
        list(function.get("input_field_names", []))
        for function in info.get("functions", []) or []
        if function.get("type") == FunctionType.BM25
        and SPARSE_FIELD in function.get("output_field_names", [])
    ]
    if not sparse or not inputs:
        return "none"
    return "lexical" if inputs[0] == [LEXICAL_FIELD] else "legacy"


def clip(text: str, max_bytes: int = LEXICAL_MAX_BYTES) -> str:
    """``text`` cut to ``max_bytes`` UTF-8 bytes at the last whole term."""
    data = text.encode("utf-8")
    if len(data) <= max_bytes:
        return text
    return data[: max_bytes + 1].decode("utf-8", errors="ignore").rsplit(" ", 1)[0]


def bm25_search_params() -> dict[str, Any]:
    return {"metric_type": "BM25", "params": {}}


def bm25_score(distance: float) -> float:
    """A BM25 score, higher is better, from the distance either kind of server returns (see above)."""
    return abs(float(distance))
