"""``VectorStore`` on Milvus: a Milvus Lite server (``milvus-lite server``) or a Milvus 2.3+ server.

One collection holds every tenant; ``tenant`` is its partition key and every read and write filters on it.

    id        VARCHAR(64), primary   ``Chunk.id`` (deterministic: re-ingesting a version replaces its rows)
    tenant    VARCHAR(256)           partition key
    doc_id    VARCHAR(512)
    version   VARCHAR(64)
    position  INT64
    page      INT64                  -1 for "no page" (Milvus 2.3 has no nullable fields)
    text      VARCHAR(65535)         the passage as shown, cut to 65535 UTF-8 bytes
    metadata  JSON
    vector    FLOAT_VECTOR(dim)      of ``Chunk.indexed_text``; index per ``RetrievalSettings``, COSINE
                                     (score = cosine similarity)
    lexical   VARCHAR(65535)         ``retrieval.lexical.analyze(Chunk.indexed_text)``  } Milvus Lite and
    sparse    SPARSE_FLOAT_VECTOR    BM25 of ``lexical``, made by the server            } 2.5+ only: see
                                                                                        ``retrieval.milvus_fulltext``

``search`` runs ``dense``, ``bm25`` (the query analysed like the chunks) or ``hybrid`` (both, fused in
``retrieval.fusion``). A collection without the sparse field (made by Milvus 2.3/2.4, or before the field
existed) keeps working dense-only: ``bm25`` and ``hybrid`` raise ``UnsupportedSearchError`` there, saying why.
One made before the lexical field (BM25 over ``text`` analysed by the server) keeps its old full text.

The embedder that built the index is recorded in the collection properties ``sieve.embedder`` and
``sieve.dimension``; ``ensure_collection`` refuses an index built by another embedder.

Differences between servers, handled here:

- Milvus before 2.4 puts ``upsert``-ed rows of a partition-key collection into the wrong partition, so
  ``tenant == ...`` misses them (milvus-io/milvus#30607, #31548): there we delete the ids, then insert (not
  atomic: a concurrent search can briefly miss a chunk being replaced).
- Milvus Lite searches unflushed rows slowly, so writes are flushed there. On a server ``flush`` seals a
  segment (seconds each) and Strong consistency already shows a client its own writes: no flush.
- Milvus Lite keeps BM25 statistics per segment (each flush makes one), which ranks badly: with
  ``RETRIEVAL_LEXICAL_DIR`` set (``sieve up`` sets it) the lexical leg there runs on an SQLite index of the
  same analysed terms, scored on postings held in memory (``retrieval.lexical_index``), filled from the
  collection once if it predates it.
- String literals escape only ``\\``, ``"``, newline, carriage return and tab: Milvus Lite rejects the
  ``\\uXXXX``, ``\\b`` and ``\\f`` escapes of ``json.dumps``; both parsers take other characters as they are.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from retrieval import milvus_fulltext as fulltext
from retrieval.errors import (
    EmbedderMismatchError,
    InvalidFilterError,
    RetrievalError,
    StoreUnavailableError,
    UnsupportedSearchError,
)
from retrieval.fusion import DEFAULT_FUSION, check_search, fuse_candidates
from retrieval.lexical import ANALYSIS_VERSION, analyze
from retrieval.lexical_index import LexicalRow, SqliteLexicalIndex
from retrieval.settings import RetrievalSettings
from retrieval.store import FilterValue, validate_filters
from retrieval.types import Candidate, Chunk

logger = logging.getLogger(__name__)

EMBEDDER_PROPERTY = "sieve.embedder"
DIMENSION_PROPERTY = "sieve.dimension"
_BYTE_LIMITS = {"tenant": 256, "doc_id": 512, "version": 64}
_TEXT_MAX_BYTES = 65535
_OUTPUT_FIELDS = ["doc_id", "version", "position", "page", "text", "metadata"]
_BATCH = 256
_MAX_TOP_K = 16384
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


class MilvusStore:
    """``VectorStore`` on a Milvus (Lite) server; connects on first use, every call bounded by ``timeout``."""

    def __init__(self, settings: RetrievalSettings, *, timeout: float = 10.0) -> None:
        self.settings = settings
        self._uri = settings.milvus_uri
        self._name = settings.collection
        self._timeout = timeout
        self._lock = threading.Lock()
        self._conn: MilvusClient | None = None
        self._lite = False
        self._native_upsert = True
        self._server_full_text = False
        self._full_text: fulltext.FullText = "none"  # of the open collection
        self._dimension: int | None = None
        self._sqlite: SqliteLexicalIndex | None = None  # the lexical leg on Milvus Lite, when configured

    def ensure_collection(self, *, embedder_name: str, dimension: int) -> None:
        client, t = self._client(), self._timeout
        with self._errors(f"opening collection {self._name!r}"):
            if not client.has_collection(self._name, timeout=t):
                self._create(client, dimension)
                self._full_text = "lexical" if self._server_full_text else "none"
                self._record(client, embedder_name, dimension)
                if self._sqlite is not None:  # a new collection: the index starts empty with it
                    self._sqlite.drop()
                    self._sqlite.mark_complete()
            else:
                info = client.describe_collection(self._name, timeout=t)
                self._full_text = self._adopt_full_text(info)
                built_by, built_dim = info.get("properties", {}).get(EMBEDDER_PROPERTY), _vector_dim(info)
                if built_by is None and built_dim == dimension:  # created, then interrupted before _record
                    logger.warning("collection %s records no embedder; adopting it", self._name)
                    self._record(client, embedder_name, dimension)
                elif (built_by, built_dim) != (embedder_name, dimension):
                    raise EmbedderMismatchError(
                        f"collection {self._name!r} at {self._uri} was built by embedder {built_by!r} "
                        f"(dimension {built_dim}), but the configured embedder is {embedder_name!r} "
                        f"(dimension {dimension}): set another RETRIEVAL_COLLECTION or rebuild the index"
                    )
            client.load_collection(self._name, timeout=t)
            self._fill_lexical_index(client)
        self._dimension = dimension

    def upsert(self, chunks: Sequence[Chunk], vectors: np.ndarray) -> None:
        client, dimension = self._open()
        if not chunks:
            return
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[0] != len(chunks):
            raise ValueError(f"expected {len(chunks)} vectors in a 2-D array, got shape {matrix.shape}")
        if matrix.shape[1] != dimension:
            raise ValueError(f"vectors have dimension {matrix.shape[1]}, the collection {dimension}")
        lexical = self._full_text == "lexical"
        rows = list(
            {
                chunk.id: _row(chunk, vector, lexical=lexical)
                for chunk, vector in zip(chunks, matrix, strict=True)
            }.values()
        )
        t = self._timeout
        with self._errors("upsert"):
            for start in range(0, len(rows), _BATCH):
                batch = rows[start : start + _BATCH]
                if self._native_upsert:
                    client.upsert(self._name, batch, timeout=t)
                else:
                    client.delete(self._name, ids=[row["id"] for row in batch], timeout=t)
                    client.insert(self._name, batch, timeout=t)
            if self._lite:
                client.flush(self._name, timeout=t)
        if self._sqlite is not None and lexical:
            self._sqlite.upsert(_lexical_row(row) for row in rows)

    def delete_document(
        self,
        tenant: str,
        document_id: str,
        *,
        version: str | None = None,
        except_versions: Sequence[str] = (),
    ) -> None:
        expression = _expression(
            tenant, {}, document_id=document_id, version=version, except_versions=except_versions
        )
        client, _ = self._open()
        with self._errors("delete"):
            client.delete(self._name, filter=expression, timeout=self._timeout)
            if self._lite:
                client.flush(self._name, timeout=self._timeout)
        if self._sqlite is not None:
            self._sqlite.delete_document(
                tenant, document_id, version=version, except_versions=except_versions
            )

    def search(
        self,
        tenant: str,
        vector: np.ndarray | None,
        *,
        limit: int,
        filters: Mapping[str, FilterValue] | None = None,
        mode: str = "dense",
        query_text: str | None = None,
        fusion: str = DEFAULT_FUSION,
        rrf_k: int = 60,
        weights: Sequence[float] | None = None,
    ) -> list[Candidate]:
        check_search(
            mode,
            has_vector=vector is not None,
            query_text=query_text,
            fusion=fusion,
            rrf_k=rrf_k,
            weights=weights,
        )
        clean = validate_filters(filters)
        expression = _expression(tenant, clean)
        client, dimension = self._open()
        if mode != "dense" and self._full_text == "none":
            raise UnsupportedSearchError(self._no_full_text_reason(mode))
        query = None
        if vector is not None and mode != "bm25":
            query = np.asarray(vector, dtype=np.float32).reshape(-1)
            if query.shape[0] != dimension:
                raise ValueError(f"query vector has dimension {query.shape[0]}, the collection {dimension}")
        if limit <= 0:
            return []
        limit = min(limit, _MAX_TOP_K)
        legs = []
        if query is not None:
            params: dict[str, Any] = {"metric_type": "COSINE", "params": {}}
            if self.settings.index_type.upper() == "HNSW":
                params["params"]["ef"] = max(self.settings.search_ef, limit)
            legs.append(self._leg(client, "vector", query.tolist(), expression, limit, params))
        terms = self._query_terms(query_text) if mode != "dense" else ""
        if terms and self._sqlite is not None and self._full_text == "lexical":
            legs.append(self._sqlite_leg(tenant, terms, clean, limit))
        elif terms:
            bm25 = fulltext.bm25_search_params()
            legs.append(self._leg(client, fulltext.SPARSE_FIELD, terms, expression, limit, bm25))
        elif mode != "dense":
            legs.append([])  # no text (or only stop words and punctuation), no full-text match
        if mode == "hybrid":
            return fuse_candidates(legs, fusion=fusion, rrf_k=rrf_k, weights=weights, limit=limit)
        return legs[0]

    def _leg(
        self, client: MilvusClient, field: str, data: Any, expression: str, limit: int, params: dict[str, Any]
    ) -> list[Candidate]:
        with self._errors("search"):
            hits = client.search(
                self._name,
                data=[data],
                anns_field=field,
                limit=limit,
                filter=expression,
                output_fields=_OUTPUT_FIELDS,
                search_params=params,
                consistency_level=self.settings.consistency_level,
                timeout=self._timeout,
            )
        candidates = [_candidate(hit) for hit in hits[0]] if hits else []
        if field == fulltext.SPARSE_FIELD:
            candidates = [c.model_copy(update={"score": fulltext.bm25_score(c.score)}) for c in candidates]
        else:
            candidates = [c.model_copy(update={"dense_score": c.score}) for c in candidates]
        return sorted(candidates, key=lambda candidate: -candidate.score)

    def _sqlite_leg(
        self, tenant: str, terms: str, filters: Mapping[str, FilterValue], limit: int
    ) -> list[Candidate]:
        """The bm25 leg on the SQLite index, which holds the rows it returns (``retrieval.lexical_index``)."""
        assert self._sqlite is not None
        return [
            Candidate(
                id=hit.id,
                document_id=hit.document_id,
                version=hit.version,
                position=hit.position,
                text=hit.text,
                page=hit.page,
                metadata=hit.metadata,
                score=hit.score,
            )
            for hit in self._sqlite.search(tenant, terms, limit=limit, filters=filters)
        ]

    def _fill_lexical_index(self, client: MilvusClient) -> None:
        """Fill the SQLite index from the collection once, if the collection predates it (or it was lost)."""
        index = self._sqlite
        if index is None or self._full_text != "lexical" or index.complete():
            return
        logger.info("filling the lexical index %s from collection %s", index.folder, self._name)
        fields = ["id", "tenant", *_OUTPUT_FIELDS, fulltext.LEXICAL_FIELD]
        iterator = client.query_iterator(
            self._name, batch_size=2000, filter='id != ""', output_fields=fields, timeout=self._timeout
        )
        total = 0
        try:
            while batch := iterator.next():
                index.upsert(_lexical_row(row) for row in batch)
                total += len(batch)
        finally:
            iterator.close()
        index.mark_complete()
        logger.info("lexical index %s: %d rows", index.folder, total)

    def _query_terms(self, query_text: str | None) -> str:
        """What the bm25 leg sends: the analysed query, or (legacy collection) the query as typed."""
        if query_text is None or not query_text.strip():
            return ""
        return analyze(query_text) if self._full_text == "lexical" else query_text

    def _adopt_full_text(self, info: Mapping[str, Any]) -> fulltext.FullText:
        kind = fulltext.full_text_kind(info)
        if kind == "none":
            logger.info("collection %s has no full-text field: dense search only", self._name)
        elif kind == "legacy":
            logger.warning(
                "collection %s indexes full text without the lexical analysis (made before it): `sieve "
                "reindex` moves it to the current one",
                self._name,
            )
        else:
            recorded = info.get("properties", {}).get(fulltext.LEXICAL_PROPERTY)
            if recorded != ANALYSIS_VERSION:
                logger.warning(
                    "collection %s was indexed by lexical analysis %s, this is %s: `sieve reindex` "
                    "rebuilds it",
                    self._name,
                    recorded,
                    ANALYSIS_VERSION,
                )
        return kind

    def _no_full_text_reason(self, mode: str) -> str:
        if not self._server_full_text:
            return (
                f"search mode {mode!r} needs Milvus's BM25 function (Milvus 2.5+ or Milvus Lite); the "
                f"Milvus at {self._uri} does not have it: use mode 'dense'"
            )
        return (
            f"collection {self._name!r} was created without the full-text field, so it supports only mode "
            f"'dense': rebuild it under a new RETRIEVAL_COLLECTION to use {mode!r}"
        )

    def count(self, tenant: str, document_id: str | None = None) -> int:
        expression = _expression(tenant, {}, document_id=document_id)
        client, _ = self._open()
        with self._errors("count"):
            rows = client.query(
                self._name,
                filter=expression,
                output_fields=["count(*)"],
                consistency_level=self.settings.consistency_level,
                timeout=self._timeout,
            )
        return int(rows[0]["count(*)"]) if rows else 0

    def ping(self) -> None:
        client = self._client()
        with self._errors("ping"):
            client.list_collections(timeout=self._timeout)

    def drop(self) -> None:
        """Drop the collection (tests and ``rebuild`` only)."""
        client = self._client()
        with self._errors(f"dropping collection {self._name!r}"):
            if client.has_collection(self._name, timeout=self._timeout):
                client.drop_collection(self._name, timeout=self._timeout)
        if self._sqlite is not None:
            self._sqlite.drop()
        self._dimension = None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _client(self) -> MilvusClient:
        with self._lock:
            if self._conn is None:
                with self._errors("connect"):
                    client = MilvusClient(
                        uri=self._uri,
                        token=self.settings.milvus_token,
                        timeout=self._timeout,
                        grpc_options=GRPC_OPTIONS,
                    )
                    version = str(client.get_server_version(timeout=self._timeout))
                self._lite = version.startswith("milvus_lite")
                found = re.search(r"(\d+)\.(\d+)", version)
                self._native_upsert = self._lite or found is None or (int(found[1]), int(found[2])) >= (2, 4)
                self._server_full_text = fulltext.server_has_full_text(version)
                self._sqlite = self._lexical_index() if self._lite else None
                logger.info("connected to Milvus %s at %s", version, self._uri)
                self._conn = client
            return self._conn

    def _lexical_index(self) -> SqliteLexicalIndex | None:
        mode, folder = self.settings.lexical_index.strip().lower(), self.settings.lexical_dir.strip()
        if mode not in ("auto", "milvus"):
            raise ValueError(f"RETRIEVAL_LEXICAL_INDEX must be auto or milvus, not {mode!r}")
        if mode == "milvus" or not folder:
            logger.warning(
                "bm25 on Milvus Lite uses its own statistics per segment, which rank poorly: set "
                "RETRIEVAL_LEXICAL_DIR for the embedded lexical index"
            )
            return None
        return SqliteLexicalIndex(Path(folder) / self._name, resident=self.settings.lexical_resident)

    def _open(self) -> tuple[MilvusClient, int]:
        """The client and vector dimension of an existing collection, loaded once per store."""
        client = self._client()
        if self._dimension is None:
            with self._errors(f"opening collection {self._name!r}"):
                if not client.has_collection(self._name, timeout=self._timeout):
                    raise StoreUnavailableError(
                        f"Milvus at {self._uri} has no collection {self._name!r}: run ensure_collection first"
                    )
                info = client.describe_collection(self._name, timeout=self._timeout)
                dimension = _vector_dim(info)
                self._full_text = self._adopt_full_text(info)
                client.load_collection(self._name, timeout=self._timeout)
                self._fill_lexical_index(client)
            self._dimension = dimension
        return client, self._dimension

    def _create(self, client: MilvusClient, dimension: int) -> None:
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, max_length=64, is_primary=True)
        schema.add_field("tenant", DataType.VARCHAR, max_length=_BYTE_LIMITS["tenant"], is_partition_key=True)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=_BYTE_LIMITS["doc_id"])
        schema.add_field("version", DataType.VARCHAR, max_length=_BYTE_LIMITS["version"])
        schema.add_field("position", DataType.INT64)
        schema.add_field("page", DataType.INT64)
        schema.add_field("text", DataType.VARCHAR, max_length=_TEXT_MAX_BYTES)
        schema.add_field("metadata", DataType.JSON)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
        kind = self.settings.index_type.upper()
        index_params = client.prepare_index_params()
        hnsw = {"M": self.settings.hnsw_m, "efConstruction": self.settings.hnsw_ef_construction}
        index_params.add_index(
            field_name="vector", index_type=kind, metric_type="COSINE", params=hnsw if kind == "HNSW" else {}
        )
        if self._server_full_text:
            fulltext.add_full_text(schema, index_params, k1=self.settings.bm25_k1, b=self.settings.bm25_b)
        client.create_collection(
            self._name,
            schema=schema,
            index_params=index_params,
            consistency_level=self.settings.consistency_level,
            timeout=self._timeout,
        )

    def _record(self, client: MilvusClient, embedder_name: str, dimension: int) -> None:
        properties = {EMBEDDER_PROPERTY: embedder_name, DIMENSION_PROPERTY: str(dimension)}
        if self._full_text == "lexical":
            properties[fulltext.LEXICAL_PROPERTY] = ANALYSIS_VERSION
        client.alter_collection_properties(self._name, properties=properties, timeout=self._timeout)

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except RetrievalError:
            raise
        except (MilvusException, grpc.RpcError, OSError) as exc:
            self._dimension = None  # open and load the collection again next time (the server may restart)
            reason = getattr(exc, "message", "") or str(exc) or type(exc).__name__
            raise StoreUnavailableError(f"Milvus at {self._uri}: {action} failed: {reason[:300]}") from exc


def quote(value: str) -> str:
    """A Milvus string literal that reads back as ``value`` (see the module docstring for the escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidFilterError("filter text is not valid Unicode") from exc
    return '"' + value.translate(_ESCAPES) + '"'


def _literal(key: str, value: FilterValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return quote(value)


# pymilvus pings an idle channel every 10 s; gRPC servers (Milvus Lite's among them) allow one ping per
# 5 minutes without calls and answer more with GOAWAY "too_many_pings", after which the client fails to
# reconnect. An API idle between queries would then answer 503, so ping only during calls, and rarely.
GRPC_OPTIONS = {
    "grpc.keepalive_time_ms": 330_000,
    "grpc.keepalive_permit_without_calls": 0,
}


def _expression(
    tenant: str,
    filters: Mapping[str, FilterValue],
    *,
    document_id: str | None = None,
    version: str | None = None,
    except_versions: Sequence[str] = (),
) -> str:
    """A boolean expression over validated keys and quoted values; the tenant clause always comes first."""
    parts = [f"tenant == {quote(tenant)}"]
    if document_id is not None:
        parts.append(f"doc_id == {quote(document_id)}")
    if version is not None:
        parts.append(f"version == {quote(version)}")
    if except_versions:
        parts.append(f"version not in [{', '.join(quote(v) for v in except_versions)}]")
    for key, value in filters.items():
        if key == "document_id":
            parts.append(f"doc_id == {quote(str(value))}")
        else:
            parts.append(f'metadata["{key}"] == {_literal(key, value)}')
    return " and ".join(parts)


def _row(chunk: Chunk, vector: np.ndarray, *, lexical: bool) -> dict[str, Any]:
    fields = {"tenant": chunk.tenant, "doc_id": chunk.document_id, "version": chunk.version}
    for field, value in fields.items():
        if len(value.encode("utf-8")) > _BYTE_LIMITS[field]:
            raise ValueError(
                f"chunk {field} is longer than {_BYTE_LIMITS[field]} UTF-8 bytes: {value[:40]!r}..."
            )
    try:
        metadata = json.loads(json.dumps(chunk.metadata, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"chunk metadata must be JSON (strings, numbers, booleans, lists, dicts): {exc}"
        ) from exc
    text = chunk.text.encode("utf-8")[:_TEXT_MAX_BYTES].decode("utf-8", errors="ignore")
    page = -1 if chunk.page is None else chunk.page
    row: dict[str, Any] = {"id": chunk.id, **fields, "position": chunk.position, "page": page, "text": text}
    if lexical:
        row[fulltext.LEXICAL_FIELD] = fulltext.clip(analyze(chunk.indexed_text))
    return {**row, "metadata": metadata, "vector": vector.tolist()}


def _lexical_row(row: Mapping[str, Any]) -> LexicalRow:
    return LexicalRow(
        tenant=row["tenant"],
        id=str(row["id"]),
        document_id=row["doc_id"],
        version=row["version"],
        terms=row[fulltext.LEXICAL_FIELD],
        position=int(row["position"]),
        page=None if int(row["page"]) < 0 else int(row["page"]),
        text=row["text"],
        metadata=row.get("metadata") or {},
    )


def _vector_dim(info: Mapping[str, Any]) -> int:
    for field in info.get("fields", []):
        if field.get("name") == "vector":
            return int(field.get("params", {}).get("dim", 0))
    raise StoreUnavailableError(f"collection {info.get('collection_name')!r} has no 'vector' field")


def _candidate(hit: Mapping[str, Any]) -> Candidate:
    entity = hit["entity"]
    page = int(entity["page"])
    return Candidate(
        id=str(hit["id"]),
        document_id=entity["doc_id"],
        version=entity["version"],
        position=int(entity["position"]),
        text=entity["text"],
        page=None if page < 0 else page,
        metadata=entity.get("metadata") or {},
        score=float(hit["distance"]),
    )
