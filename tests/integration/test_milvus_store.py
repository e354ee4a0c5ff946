"""The ``VectorStore`` contract on ``MilvusStore``: a Milvus Lite server, (slow) a Milvus 2.3 server, and a
Milvus 2.5+ server where ``SIEVE_TEST_MILVUS_URI`` names one."""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrieval.errors import StoreUnavailableError
from retrieval.milvus_store import MilvusStore
from retrieval.settings import RetrievalSettings
from tests.contract.vector_store import DIM, EMBEDDER, VectorStoreContract, make_chunk, put, unit
from tests.support.services import ServiceStartError, free_port, start_milvus_lite, start_milvus_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def milvus_lite_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with start_milvus_lite(tmp_path_factory.mktemp("milvus-lite") / "data") as (_, uri):
        yield uri


@pytest.fixture(scope="session")
def milvus_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        with start_milvus_server(tmp_path_factory.mktemp("milvus-server") / "data") as (_, uri):
            yield uri
    except (ServiceStartError, OSError) as exc:
        pytest.skip(f"the Milvus 2.3 server from the 'milvus' package cannot start here: {exc}")


@pytest.fixture(scope="session")
def milvus_external_uri() -> str:
    uri = os.environ.get("SIEVE_TEST_MILVUS_URI", "")
    if not uri:
        pytest.skip(
            "no Milvus 2.5+ server: set SIEVE_TEST_MILVUS_URI (e.g. http://127.0.0.1:19530) to run the "
            "contract on one; none installs from PyPI (the 'milvus' package is 2.3, without full text)"
        )
    return uri


@contextlib.contextmanager
def _store(uri: str, **overrides: object) -> Iterator[MilvusStore]:
    """A store on a collection of its own, dropped afterwards."""
    settings = RetrievalSettings(milvus_uri=uri, collection=f"contract_{uuid.uuid4().hex[:12]}", **overrides)
    store = MilvusStore(settings)
    try:
        yield store
    finally:
        store.drop()
        store.close()


class TestMilvusLiteStore(VectorStoreContract):
    @pytest.fixture
    def store(self, milvus_lite_uri: str) -> Iterator[MilvusStore]:
        with _store(milvus_lite_uri) as store:
            yield store

    def test_reopening_the_collection_in_a_new_client_finds_the_data(self, milvus_lite_uri: str) -> None:
        with _store(milvus_lite_uri) as first:
            first.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
            chunk = make_chunk(page=2)
            put(first, [chunk], [unit(3)])
            second = MilvusStore(first.settings)
            try:
                # No ensure_collection: the store loads the collection and reads its dimension itself.
                assert [hit.id for hit in second.search("acme", unit(3), limit=1)] == [chunk.id]
                assert second.count("acme") == 1
            finally:
                second.close()

    def test_flat_index_also_works(self, milvus_lite_uri: str) -> None:
        with _store(milvus_lite_uri, index_type="FLAT") as store:
            store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
            put(store, [make_chunk()], [unit(1)])
            assert store.search("acme", unit(1), limit=3)[0].score == pytest.approx(1.0, abs=1e-4)

    def test_long_text_is_cut_and_overlong_ids_are_refused(self, milvus_lite_uri: str) -> None:
        with _store(milvus_lite_uri) as store:
            store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
            put(store, [make_chunk(text="é" * 40_000)], [unit(0)])  # 80,000 UTF-8 bytes
            text = store.search("acme", unit(0), limit=1)[0].text
            assert text == "é" * (65535 // 2)
            with pytest.raises(ValueError, match="doc_id"):
                put(store, [make_chunk(document_id="d" * 513)])


class TestMilvusLiteStoreWithLexicalIndex(VectorStoreContract):
    """The embedded stack's configuration: the bm25 leg on the SQLite index (``RETRIEVAL_LEXICAL_DIR``)."""

    @pytest.fixture
    def store(self, milvus_lite_uri: str, tmp_path: Path) -> Iterator[MilvusStore]:
        with _store(milvus_lite_uri, lexical_dir=str(tmp_path / "lexical")) as store:
            yield store


@pytest.mark.slow
class TestMilvusServerStore(VectorStoreContract):
    FULL_TEXT = False  # Milvus 2.3 has no BM25 function: bm25 and hybrid raise UnsupportedSearchError

    @pytest.fixture
    def store(self, milvus_server_uri: str) -> Iterator[MilvusStore]:
        with _store(milvus_server_uri) as store:
            yield store


class TestExternalMilvusStore(VectorStoreContract):
    """A Milvus 2.5+ server someone runs: full text on its own BM25 function (collection-wide statistics,
    positive scores), hybrid fused here as on Milvus Lite."""

    @pytest.fixture
    def store(self, milvus_external_uri: str) -> Iterator[MilvusStore]:
        with _store(milvus_external_uri) as store:
            yield store


def test_closed_port_raises_store_unavailable_quickly() -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    store = MilvusStore(RetrievalSettings(milvus_uri=uri), timeout=2.0)

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=f"127.0.0.1:{port}"):
        store.ping()
    with pytest.raises(StoreUnavailableError):
        store.search("acme", unit(0), limit=1)
    assert time.monotonic() - started < 6.0


def test_silent_server_raises_store_unavailable_after_the_timeout() -> None:
    with socket.socket() as listener:  # accepts connections, never speaks gRPC
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        store = MilvusStore(
            RetrievalSettings(milvus_uri=f"http://127.0.0.1:{listener.getsockname()[1]}"), timeout=1.0
        )

        started = time.monotonic()
        with pytest.raises(StoreUnavailableError):
            store.ping()
        assert time.monotonic() - started < 5.0


def test_service_helper_stops_the_server(tmp_path: Path) -> None:
    with start_milvus_lite(tmp_path / "data") as (proc, uri):
        assert proc.poll() is None
    assert proc.poll() is not None
    with pytest.raises(StoreUnavailableError):
        MilvusStore(RetrievalSettings(milvus_uri=uri), timeout=1.0).ping()


def test_store_recovers_after_the_server_restarts(tmp_path: Path) -> None:
    port = free_port()
    store = MilvusStore(RetrievalSettings(milvus_uri=f"http://127.0.0.1:{port}"), timeout=3.0)
    chunk = make_chunk()
    with start_milvus_lite(tmp_path / "data", port=port):
        store.ensure_collection(embedder_name=EMBEDDER, dimension=DIM)
        put(store, [chunk], [unit(0)])
    with pytest.raises(StoreUnavailableError):
        store.count("acme")
    with start_milvus_lite(tmp_path / "data", port=port):
        # The same store object: it reconnects, loads the collection again and finds what it wrote.
        assert [hit.id for hit in store.search("acme", unit(0), limit=1)] == [chunk.id]
    store.close()
