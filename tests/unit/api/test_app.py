"""The HTTP surface on fakes: auth, status codes, error bodies, the search response shape."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.resources import Resources, Settings, build_resources
from api.settings import ApiSettings
from ingestion.records import Records
from ingestion.settings import IngestSettings
from retrieval.memory_store import InMemoryStore
from tests.support import compat_harness as harness
from tests.support.compat_harness import drain
from tests.support.fakes import HashEmbedder, RecordingSender

AUTH = {"Authorization": "Bearer k1"}


@pytest.fixture
def app_parts(
    records: Records, ingest_settings: IngestSettings, store: InMemoryStore, embedder: HashEmbedder
) -> Iterator[tuple[TestClient, Resources]]:
    settings = Settings(
        api=ApiSettings(keys={"k1": "t1", "k2": "t2"}, max_request_bytes=100_000), ingest=ingest_settings
    )
    holder: dict[str, Resources] = {}

    def factory(s: Settings) -> Resources:
        res = build_resources(
            s, embedder=embedder, store=store, sender=RecordingSender(), redis_client=records.client
        )
        holder["r"] = res
        return res

    with TestClient(create_app(settings, resources_factory=factory)) as client:
        yield client, holder["r"]


def test_no_or_bad_key_is_401(app_parts: tuple[TestClient, Resources]) -> None:
    client, _ = app_parts
    assert client.post("/v1/search", json={"query": "x"}).status_code == 401
    r = client.post("/v1/search", json={"query": "x"}, headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["error"]["message"] == "unknown API key"
    assert client.post("/v1/search", json={"query": "x"}, headers={"X-API-Key": "k1"}).status_code == 200


def test_upload_search_and_shape(app_parts: tuple[TestClient, Resources]) -> None:
    client, res = app_parts
    files = [
        ("files", ("bees.md", b"# Bees\n\nHoney bees dance to show where flowers grow.")),
        ("files", ("tides.txt", b"Tides follow the moon and the sun.")),
    ]
    r = client.post("/v1/documents", files=files, data={"metadata": '{"team": "bio"}'}, headers=AUTH)
    assert r.status_code == 202, r.text
    jobs = r.json()["jobs"]
    assert [j["state"] for j in jobs] == ["queued", "queued"]
    drain(res)
    assert client.get(f"/v1/jobs/{jobs[0]['job_id']}", headers=AUTH).json()["state"] == "done"
    body = client.post("/v1/search", json={"query": "where do bees dance", "top_k": 1}, headers=AUTH).json()
    (hit,) = body["hits"]
    assert hit["document_id"] == "bees.md" and hit["metadata"]["team"] == "bio"
    assert hit["rerank_score"] is None and hit["score"] == hit["stage1_score"]
    assert body["rerank"]["applied"] is False and "stage-1" in body["rerank"]["note"]
    docs = client.get("/v1/documents", headers=AUTH).json()
    assert sorted(d["document_id"] for d in docs) == ["bees.md", "tides.txt"]
    assert client.get("/v1/documents", headers={"Authorization": "Bearer k2"}).json() == []
    assert client.get("/v1/documents/bees.md", headers={"Authorization": "Bearer k2"}).status_code == 404


@pytest.mark.parametrize(
    ("files", "data", "status", "fragment"),
    [
        ([("files", ("a.exe", b"MZ"))], {}, 415, ".exe"),
        ([("files", ("a.txt", b""))], {}, 422, "a.txt"),
        ([("files", ("a.txt", b"\x00\x01\x02binary"))], {}, 422, "binary"),
        ([("files", ("a.pdf", b"not a pdf"))], {}, 422, "a.pdf"),
        ([("files", ("a.txt", b"ok text"))], {"metadata": "{bad"}, 422, "metadata"),
        ([("files", ("a.txt", b"ok text"))], {"metadata": "[1]"}, 422, "JSON object"),
        ([("files", ("a.txt", b"x")), ("files", ("b.txt", b"y"))], {"document_id": "d"}, 422, "one file"),
        ([("files", ("a.txt", b"x" * 200_000))], {}, 413, "limit"),
    ],
)
def test_bad_uploads_get_a_clear_4xx(
    app_parts: tuple[TestClient, Resources], files: list, data: dict, status: int, fragment: str
) -> None:
    client, _ = app_parts
    r = client.post("/v1/documents", files=files, data=data, headers=AUTH)
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "   "}, "query"),
        ({"query": "x", "top_k": 0}, "top_k"),
        ({"query": "x", "candidates": 10_000}, "candidates"),
        ({"query": "x" * 4001}, "query"),
        ({}, "query"),
        ({"query": "x", "filters": {"k": [1]}}, "filters"),
    ],
)
def test_bad_search_names_the_field(app_parts: tuple[TestClient, Resources], body: dict, field: str) -> None:
    client, _ = app_parts
    r = client.post("/v1/search", json=body, headers=AUTH)
    assert r.status_code == 422
    assert field in r.json()["error"]["message"]


def test_bad_filter_key_is_400(app_parts: tuple[TestClient, Resources]) -> None:
    client, _ = app_parts
    r = client.post("/v1/search", json={"query": "x", "filters": {"a b": "c"}}, headers=AUTH)
    assert r.status_code == 400 and "a b" in r.json()["error"]["message"]


def test_store_down_is_503_and_a_bug_is_a_generic_500(
    app_parts: tuple[TestClient, Resources], monkeypatch: pytest.MonkeyPatch
) -> None:
    from retrieval import StoreUnavailableError

    client, res = app_parts

    def down(*a: object, **k: object) -> None:
        raise StoreUnavailableError("Milvus at http://x is unreachable")

    monkeypatch.setattr(res.models.current().store, "search", down)
    r = client.post("/v1/search", json={"query": "x"}, headers=AUTH)
    assert r.status_code == 503 and "unreachable" in r.json()["error"]["message"]

    def bug(*a: object, **k: object) -> None:
        raise KeyError("secret internal detail")

    monkeypatch.setattr(res.models.current().store, "search", bug)
    with TestClient(client.app, raise_server_exceptions=False) as raw:
        r = raw.post("/v1/search", json={"query": "x"}, headers=AUTH)
    assert r.status_code == 500
    assert "secret" not in r.text and r.json()["error"]["correlation_id"]


def test_health_and_page(app_parts: tuple[TestClient, Resources]) -> None:
    client, _ = app_parts
    assert client.get("/health").json() == {"status": "ok"}
    assert client.get("/ready").status_code == 200
    assert "<title>Sieve search</title>" in client.get("/").text


def test_search_modes(app_parts: tuple[TestClient, Resources], monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval import UnsupportedSearchError

    client, res = app_parts
    files = [
        ("files", ("bees.md", b"Honey bees waggle dance zzyzx.")),
        ("files", ("tides.txt", b"Tides, moon.")),
    ]
    assert client.post("/v1/documents", files=files, headers=AUTH).status_code == 202
    drain(res)
    for mode in ("dense", "bm25", "hybrid"):
        body = client.post("/v1/search", json={"query": "zzyzx", "mode": mode}, headers=AUTH).json()
        assert body["mode"] == mode and body["hits"][0]["document_id"] == "bees.md"
    r = client.post("/v1/search", json={"query": "x", "mode": "sparse"}, headers=AUTH)
    assert r.status_code == 422 and "mode" in r.json()["error"]["message"]

    # A store without full text: the default (hybrid) falls back to dense; asking for it explicitly is a 400.
    original = res.models.current().store.search

    def dense_only(*args: object, mode: str = "dense", **kwargs: object) -> object:
        if mode != "dense":
            raise UnsupportedSearchError("this collection has no full-text index")
        return original(*args, mode=mode, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(res.models.current().store, "search", dense_only)
    res.search.default_mode = "hybrid"
    body = client.post("/v1/search", json={"query": "honey bees"}, headers=AUTH).json()
    assert body["mode"] == "dense" and body["hits"]
    r = client.post("/v1/search", json={"query": "honey bees", "mode": "hybrid"}, headers=AUTH)
    assert r.status_code == 400 and "full-text" in r.json()["error"]["message"]


def test_search_bounds_and_defaults_come_from_the_settings(ingest_settings: IngestSettings) -> None:
    bounds = {"max_query_chars": 12, "default_top_k": 1, "default_candidates": 2, "max_candidates": 3}
    with harness.client(ingest_settings, cache_ttl_s=0, **bounds) as (client, res):
        harness.index(res, "t1", {"a.txt": "bees dance", "b.txt": "bees sing", "c.txt": "bees sleep"})
        too_long = client.post("/v1/search", json={"query": "x" * 13}, headers=harness.AUTH)
        too_many = client.post("/v1/search", json={"query": "bees", "candidates": 4}, headers=harness.AUTH)
        body = client.post("/v1/search", json={"query": "bees"}, headers=harness.AUTH).json()
        wider = client.post(
            "/v1/search", json={"query": "bees", "top_k": 3, "candidates": 3}, headers=harness.AUTH
        )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["problems"][0]["field"] == "query"
    assert "API_MAX_QUERY_CHARS" in too_long.json()["error"]["message"]
    assert too_many.status_code == 422 and too_many.json()["error"]["problems"][0]["field"] == "candidates"
    assert len(body["hits"]) == 1 and body["candidates"] == 2
    assert len(wider.json()["hits"]) == 3


def test_one_principal_tells_tenants_from_the_admin(ingest_settings: IngestSettings) -> None:
    with harness.client(ingest_settings, admin_key="root") as (client, _):
        admin = {"Authorization": "Bearer root"}
        on_tenant_route = client.post("/v1/search", json={"query": "x"}, headers=admin)
        assert (
            on_tenant_route.status_code == 403 and "admin key" in on_tenant_route.json()["error"]["message"]
        )
        assert client.post("/v1/admin/reload", headers=harness.AUTH).status_code == 403
        assert client.get("/v1/admin/reindex", headers={"X-API-Key": "root"}).status_code == 200
        missing = client.get("/v1/review", headers={})
        assert missing.status_code == 401 and missing.headers["WWW-Authenticate"] == "Bearer"
        assert client.get("/v1/review", headers=admin).status_code == 200
