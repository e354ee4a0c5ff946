"""Issue 13 item 5: every document id the upload accepts, ``/`` included, can be read and deleted."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.cli.client import SieveClient
from api.resources import Resources, Settings, build_resources
from api.settings import ApiSettings
from ingestion.records import Records
from ingestion.settings import IngestSettings
from retrieval.memory_store import InMemoryStore
from tests.support.compat_harness import drain
from tests.support.fakes import HashEmbedder, RecordingSender

AUTH = {"Authorization": "Bearer k1"}
IDS = [
    "a/README.md",
    "docs/guide/intro.md",
    "a/../b.md",
    "/leading.md",
    "odd?x=1#frag.md",
    "spaced name/ü.md",
]


@pytest.fixture
def app_parts(
    records: Records, ingest_settings: IngestSettings, store: InMemoryStore, embedder: HashEmbedder
) -> Iterator[tuple[TestClient, Resources]]:
    settings = Settings(api=ApiSettings(keys={"k1": "t1"}), ingest=ingest_settings)
    holder: dict[str, Resources] = {}

    def factory(s: Settings) -> Resources:
        holder["r"] = build_resources(
            s, embedder=embedder, store=store, sender=RecordingSender(), redis_client=records.client
        )
        return holder["r"]

    with TestClient(create_app(settings, resources_factory=factory)) as client:
        yield client, holder["r"]


@pytest.mark.parametrize("document_id", IDS)
def test_path_style_id_reads_and_deletes_through_the_cli_client(
    app_parts: tuple[TestClient, Resources], document_id: str
) -> None:
    client, res = app_parts
    r = client.post(
        "/v1/documents",
        files=[("files", ("x.md", b"# Title\n\nSome passage about slashes in ids."))],
        data={"document_id": document_id},
        headers=AUTH,
    )
    assert r.status_code == 202, r.text
    drain(res)
    sieve = SieveClient("http://testserver", "k1")
    client.headers.update(AUTH)
    sieve._http = client  # the CLI client's own URL building, over the in-process app
    assert sieve.document(document_id)["document_id"] == document_id
    assert sieve.delete(document_id)["document_id"] == document_id
    drain(res)
    assert [d["document_id"] for d in sieve.documents()] == []


def test_slash_id_raw_route_works(app_parts: tuple[TestClient, Resources]) -> None:
    client, res = app_parts
    files = [("files", ("x.md", b"text about folders"))]
    assert (
        client.post("/v1/documents", files=files, data={"document_id": "a/b/c.md"}, headers=AUTH).status_code
        == 202
    )
    drain(res)
    assert client.get("/v1/documents/a/b/c.md", headers=AUTH).json()["document_id"] == "a/b/c.md"
    assert client.get("/v1/documents/a%2Fb%2Fc.md", headers=AUTH).json()["document_id"] == "a/b/c.md"
    assert client.delete("/v1/documents/a/b/c.md", headers=AUTH).status_code == 202
