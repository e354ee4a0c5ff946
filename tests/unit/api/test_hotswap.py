"""Models and indexes swapped in without downtime: ``/v1/admin/reload``, ``/v1/admin/reindex``, ``/info``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.resources import Resources, Settings, build_resources
from api.settings import ApiSettings
from ingestion.indexes import BuildState, Indexes
from ingestion.records import Records
from ingestion.settings import IngestSettings
from ingestion.worker import WorkerContext, make_celery
from reranking import RerankSettings, RerankUnavailableError
from retrieval import RetrievalSettings, VectorStore
from retrieval.memory_store import InMemoryStore
from tests.support.compat_harness import drain
from tests.support.fakes import FakeReranker, HashEmbedder, RecordingSender, SaltedEmbedder

ADMIN = {"Authorization": "Bearer root"}
AUTH = {"Authorization": "Bearer k1"}


def named_reranker(name: str, *, fail: bool = False) -> FakeReranker:
    """A reranker named like its model; ``fail``: one whose model cannot load."""
    cannot_load = RerankUnavailableError(f"cannot load {name}: no such folder") if fail else None
    return FakeReranker(name=name, fail_warm_up=cannot_load)


def embedder_for(settings: RetrievalSettings) -> HashEmbedder:
    return SaltedEmbedder() if settings.embedder_model == "v2" else HashEmbedder()


@pytest.fixture
def stores() -> dict[str, InMemoryStore]:
    return {}


@pytest.fixture
def app_parts(
    records: Records, ingest_settings: IngestSettings, stores: dict[str, InMemoryStore]
) -> Iterator[tuple[TestClient, Resources]]:
    settings = Settings(
        api=ApiSettings(
            keys={"k1": "t1"}, admin_key="root", index_poll_s=0, cache_ttl_s=0, rerank_gate="always"
        ),
        ingest=ingest_settings,
        retrieval=RetrievalSettings(milvus_uri="memory://", embedder="test", search_mode="dense"),
        rerank=RerankSettings(backend="test", model="m1"),
    )
    holder: dict[str, Resources] = {}

    def store_for(s: RetrievalSettings) -> VectorStore:
        return stores.setdefault(s.collection, InMemoryStore())

    def factory(s: Settings) -> Resources:
        res = build_resources(
            s,
            embedder=HashEmbedder(),
            reranker=named_reranker("test:m1"),
            sender=RecordingSender(),
            redis_client=records.client,
            store_factory=store_for,
        )
        res.swap.embedder_factory = embedder_for
        res.swap.reranker_factory = lambda r: named_reranker(
            f"test:{Path(r.model).name}", fail=r.model == "bad"
        )
        holder["r"] = res
        return res

    with TestClient(create_app(settings, resources_factory=factory)) as client:
        yield client, holder["r"]


def upload(client: TestClient, res: Resources, **files: bytes) -> None:
    r = client.post("/v1/documents", files=[("files", (n, d)) for n, d in files.items()], headers=AUTH)
    assert r.status_code == 202, r.text
    drain(res)


def search(client: TestClient, query: str) -> dict[str, Any]:
    r = client.post("/v1/search", json={"query": query, "top_k": 1}, headers=AUTH)
    assert r.status_code == 200, r.text
    return r.json()


def test_admin_routes_need_the_admin_key(app_parts: tuple[TestClient, Resources]) -> None:
    client, _ = app_parts
    assert client.post("/v1/admin/reload", headers=AUTH).status_code == 403
    assert client.get("/v1/admin/reindex", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/v1/admin/reindex").status_code == 401


def test_reload_swaps_the_reranker_and_a_request_in_flight_finishes_on_the_old_one(
    app_parts: tuple[TestClient, Resources],
) -> None:
    client, res = app_parts
    upload(client, res, **{"bees.txt": b"Honey bees dance to show where flowers grow."})
    old = res.models.current().reranker
    old.delay_s = 0.5  # type: ignore[attr-defined]
    in_flight: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: in_flight.update(search(client, "bees dance")))
    thread.start()
    deadline = time.monotonic() + 10
    while not old.calls and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.01)

    r = client.post("/v1/admin/reload", json={"rerank_model": "m2"}, headers=ADMIN)
    thread.join()

    assert r.status_code == 200, r.text
    assert r.json() == {"reloaded": {"reranker": "test:m2"}}
    assert in_flight["rerank"]["backend"] == "test:m1"  # started on the old model, finished on it
    assert search(client, "bees dance")["rerank"]["backend"] == "test:m2"
    info = client.get("/info").json()
    assert info["models"]["reranker"]["name"] == "test:m2" and info["models"]["reranker"]["model"] == "m2"
    assert client.get("/ready").json()["checks"]["reranker"] == "test:m2"


def test_a_failed_reload_keeps_the_old_model_serving(app_parts: tuple[TestClient, Resources]) -> None:
    client, res = app_parts
    r = client.post("/v1/admin/reload", json={"rerank_model": "bad"}, headers=ADMIN)
    assert r.status_code == 422
    message = r.json()["error"]["message"]
    assert "cannot load test:bad" in message and "test:m1 keeps serving" in message
    assert search(client, "anything")["rerank"]["backend"] == "test:m1"
    assert client.get("/info").json()["models"]["reranker"]["model"] == "m1"


def test_the_query_embedder_is_reloaded_only_when_the_index_accepts_it(
    app_parts: tuple[TestClient, Resources],
) -> None:
    client, res = app_parts
    before = res.models.current().embedder
    r = client.post("/v1/admin/reload", json={"models": ["embedder"]}, headers=ADMIN)
    assert r.status_code == 200 and r.json() == {"reloaded": {"embedder": HashEmbedder.name}}
    assert (
        res.models.current().embedder is not before
        and res.models.current().embedder is res.models.current().embedder
    )

    r = client.post("/v1/admin/reload", json={"embedder_model": "v2"}, headers=ADMIN)
    assert r.status_code == 409
    assert "sieve reindex --embedder-model v2" in r.json()["error"]["message"]
    assert res.models.current().embedder.name == HashEmbedder.name


def test_info_shows_the_revisions_of_trained_model_folders(
    app_parts: tuple[TestClient, Resources], tmp_path: Path
) -> None:
    client, _ = app_parts
    folder = tmp_path / "reranker-v3"
    folder.mkdir()
    (folder / "sieve-model.json").write_text(
        json.dumps({"kind": "reranker", "revision": "abc123", "version": 3})
    )
    assert (
        client.post("/v1/admin/reload", json={"rerank_model": str(folder)}, headers=ADMIN).status_code == 200
    )

    info = client.get("/info").json()

    assert info["models"]["reranker"]["revision"] == "abc123"
    assert info["index"]["serving"]["collection"] == "sieve_chunks"
    assert "rebuild" not in info["index"]


def test_a_rebuild_serves_the_old_index_until_the_switch_and_the_new_one_after(
    app_parts: tuple[TestClient, Resources], stores: dict[str, InMemoryStore], tmp_path: Path
) -> None:
    client, res = app_parts
    upload(
        client, res, **{"bees.txt": b"Honey bees dance to show where flowers grow.", "moon.txt": b"Tides."}
    )
    r = client.post("/v1/admin/reindex", json={"embedder_model": "v2"}, headers=ADMIN)
    assert r.status_code == 202, r.text
    build = r.json()["rebuild"]
    assert build["state"] == "queued" and build["collection"].startswith("sieve_chunks_")
    assert client.post("/v1/admin/reindex", json={"embedder_model": "v3"}, headers=ADMIN).status_code == 409
    name, args = res.uploads.sender.sent[-1]  # type: ignore[attr-defined]
    assert (name, args) == ("sieve.reindex", [build["id"]])

    celery = make_celery(
        context=WorkerContext(
            res.settings.ingest,
            res.settings.retrieval,
            embedder_factory=embedder_for,
            store_factory=lambda s: stores.setdefault(s.collection, InMemoryStore()),
            records=res.records,
        )
    )
    served: list[tuple[str, str]] = []

    def during_rebuild(*args: Any, **kwargs: Any) -> Any:  # search and /info while the worker builds
        hit = search(client, "bees dance")["hits"][0]
        info = client.get("/info").json()
        served.append((hit["document_id"], info["index"]["serving"]["collection"]))
        assert info["index"]["rebuild"]["state"] == "building"
        return original(*args, **kwargs)

    new_store = stores[build["collection"]] = InMemoryStore()
    original = new_store.upsert
    new_store.upsert = during_rebuild  # type: ignore[method-assign]
    celery.tasks["sieve.reindex"].apply(args=[build["id"]])

    assert served and set(served) == {("bees.txt", "sieve_chunks")}
    deadline = time.monotonic() + 10  # the lifespan's index watch notices the switch (API_INDEX_POLL_S=0)
    while res.models.current().store is not new_store and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (
        res.models.current().store is new_store and res.models.current().embedder.name == SaltedEmbedder.name
    )
    assert search(client, "bees dance")["hits"][0]["document_id"] == "bees.txt"
    info = client.get("/info").json()
    assert info["models"]["embedder"]["name"] == SaltedEmbedder.name
    assert info["models"]["embedder"]["model"] == "v2"
    assert info["index"]["serving"]["collection"] == build["collection"]
    assert info["index"]["previous"]["collection"] == "sieve_chunks"
    status = client.get("/v1/admin/reindex", headers=ADMIN).json()["rebuild"]
    assert status["state"] == BuildState.SWITCHED and status["documents_done"] == 2

    r = client.post("/v1/admin/reindex/drop-old", headers=ADMIN)
    assert r.status_code == 200 and r.json()["dropped"] == "sieve_chunks"
    assert Indexes(res.records.client).previous() is None
    with pytest.raises(Exception, match="does not exist"):
        stores["sieve_chunks"].count("t1")
    assert client.post("/v1/admin/reindex/drop-old", headers=ADMIN).status_code == 404
