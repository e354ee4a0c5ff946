"""Issue 13, tenants and keys: keys stored hashed in Redis, usable without a restart, revoked to 401,
per-tenant rate limits, the admin routes (admin key only) and ``sieve keys``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from api.cli import keys as keys_cli
from api.cli.main import app as cli_app
from api.resources import Resources, Settings, build_resources
from api.settings import ApiSettings
from api.tenant_keys import KEYS_HASH, TenantKeys, digest
from ingestion.records import Records
from ingestion.settings import IngestSettings
from retrieval.memory_store import InMemoryStore
from tests.support.compat_harness import drain
from tests.support.fakes import HashEmbedder, RecordingSender

ADMIN = {"Authorization": "Bearer admin-key-0123456789"}
T1 = {"Authorization": "Bearer k1"}


@pytest.fixture
def parts(
    records: Records, ingest_settings: IngestSettings, store: InMemoryStore, embedder: HashEmbedder
) -> Iterator[tuple[TestClient, Resources]]:
    settings = Settings(
        api=ApiSettings(keys={"k1": "t1"}, admin_key="admin-key-0123456789", rate_limit_per_s=0),
        ingest=ingest_settings,
    )
    holder: dict[str, Resources] = {}

    def factory(s: Settings) -> Resources:
        holder["r"] = build_resources(
            s, embedder=embedder, store=store, sender=RecordingSender(), redis_client=records.client
        )
        return holder["r"]

    with TestClient(create_app(settings, resources_factory=factory)) as client:
        yield client, holder["r"]


def test_created_key_works_at_once_is_isolated_and_revoked_to_401(
    parts: tuple[TestClient, Resources],
) -> None:
    client, res = parts
    assert client.post("/v1/admin/keys", json={"tenant": "t2"}, headers=T1).status_code == 403
    r = client.post("/v1/admin/keys", json={"tenant": "t2"}, headers=ADMIN)
    assert r.status_code == 201, r.text
    key, key_id = r.json()["key"], r.json()["id"]
    t2 = {"Authorization": f"Bearer {key}"}
    stored = res.records.client.hgetall(KEYS_HASH)
    assert key not in str(stored) and any(digest(key) in str(h) for h in stored)  # hashed only
    files = [("files", ("bees.md", b"# Bees\n\nHoney bees dance to show where flowers grow."))]
    assert client.post("/v1/documents", files=files, headers=t2).status_code == 202
    drain(res)
    assert [d["document_id"] for d in client.get("/v1/documents", headers=t2).json()] == ["bees.md"]
    assert client.get("/v1/documents", headers=T1).json() == []
    hits = client.post("/v1/search", json={"query": "bees dance"}, headers=T1).json()["hits"]
    assert hits == []
    listed = client.get("/v1/admin/keys", headers=ADMIN).json()
    assert [(k["id"], k["tenant"]) for k in listed["keys"]] == [(key_id, "t2")] and key not in str(listed)
    assert client.delete(f"/v1/admin/keys/{key_id}", headers=ADMIN).status_code == 200
    assert client.get("/v1/documents", headers=t2).status_code == 401


def test_stored_tenant_limit_applies_without_restart(parts: tuple[TestClient, Resources]) -> None:
    client, _ = parts
    assert client.get("/v1/documents", headers=T1).status_code == 200
    r = client.put("/v1/admin/limits/t1", json={"rate": 0.001, "burst": 1}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert client.get("/v1/documents", headers=T1).status_code == 200  # the one token of the burst
    refused = client.get("/v1/documents", headers=T1)
    assert refused.status_code == 429 and "sieve keys limit" in refused.json()["error"]["message"]


def test_bad_tenant_name_is_422(parts: tuple[TestClient, Resources]) -> None:
    client, _ = parts
    r = client.post("/v1/admin/keys", json={"tenant": "a b/c"}, headers=ADMIN)
    assert r.status_code == 422 and "tenant" in r.json()["error"]["message"]


def test_cli_keys_create_list_revoke(records: Records, monkeypatch: pytest.MonkeyPatch) -> None:
    store = TenantKeys(records.client)
    monkeypatch.setattr(keys_cli, "_store", lambda url: store)
    runner = CliRunner()
    env = {"COLUMNS": "200"}
    made = runner.invoke(cli_app, ["keys", "create", "--tenant", "t9", "--rate", "5"], env=env)
    assert made.exit_code == 0, made.output
    key = made.output.strip().splitlines()[-1]
    assert key.startswith("sk-") and [k.tenant for k in store.list()] == ["t9"]
    assert store.limits()["t9"].rate == 5 and store.limits()["t9"].burst == 10
    listed = runner.invoke(cli_app, ["keys", "list"], env=env)
    assert "t9" in listed.output and key not in listed.output
    assert runner.invoke(cli_app, ["keys", "revoke", key], env=env).exit_code == 0
    assert store.list() == []
    again = runner.invoke(cli_app, ["keys", "revoke", key], env=env)
    assert again.exit_code == 2 and "Traceback" not in again.output
