"""The web page's routes on fakes: the page and its files (and nothing else) are served with a strict content
security policy; the session route names the key's kind; the status route pings workers and shows the rerank
gate of the tenants the caller may see; search hits carry their stage-1 rank."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.resources import Resources, Settings, build_resources
from api.routes.web import ping_workers
from api.settings import ApiSettings
from ingestion import pipeline
from ingestion.records import Records
from ingestion.settings import IngestSettings
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import FakeReranker, HashEmbedder, RecordingSender

STATIC = Path(__file__).resolve().parents[3] / "api" / "static"
A = {"Authorization": "Bearer ka"}
ADMIN = {"Authorization": "Bearer root"}


class PingingSender(RecordingSender):
    """A task sender with Celery's ``control.ping``: the workers that answer."""

    def __init__(self, replies: list[dict[str, Any]] | Exception) -> None:
        super().__init__()
        replies_or_error = replies

        class Control:
            def ping(self, timeout: float) -> list[dict[str, Any]]:
                if isinstance(replies_or_error, Exception):
                    raise replies_or_error
                return replies_or_error

        self.control = Control()


@pytest.fixture
def app_parts(
    records: Records, ingest_settings: IngestSettings, store: InMemoryStore, embedder: HashEmbedder
) -> Iterator[tuple[TestClient, Resources]]:
    api = ApiSettings(keys={"ka": "tenant-a", "kb": "tenant-b"}, admin_key="root", rerank_gate="always")
    holder: dict[str, Resources] = {}

    def factory(s: Settings) -> Resources:
        sender = PingingSender([{"celery@box": {"ok": "pong"}}])
        holder["r"] = build_resources(
            s,
            embedder=embedder,
            store=store,
            reranker=FakeReranker("overlap"),
            sender=sender,
            redis_client=records.client,
        )
        return holder["r"]

    settings = Settings(api=api, ingest=ingest_settings)
    with TestClient(create_app(settings, resources_factory=factory)) as client:
        yield client, holder["r"]


def test_page_and_its_files_are_served_with_a_strict_policy(app_parts: tuple[TestClient, Resources]) -> None:
    client, _ = app_parts
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    # every file the page names is served, with its type; nothing comes from another host
    names = re.findall(r'(?:src|href)="/static/([^"]+)"', page.text)
    assert {"app.js", "app.css", "favicon.svg"} <= set(names)
    assert "http://" not in page.text and "https://" not in page.text
    for name in names:
        served = client.get(f"/static/{name}")
        assert served.status_code == 200, name
        assert served.headers["content-security-policy"]
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    # the modules the entry imports are there too
    for module in re.findall(r'from "\./([a-z]+\.js)"', (STATIC / "app.js").read_text()):
        assert client.get(f"/static/{module}").status_code == 200, module


@pytest.mark.parametrize("name", ["..%2Fapp.py", "missing.js", "README.md", "app.py", "%2Fetc%2Fpasswd"])
def test_only_the_page_files_are_served(app_parts: tuple[TestClient, Resources], name: str) -> None:
    client, _ = app_parts
    answer = client.get(f"/static/{name}")
    assert answer.status_code == 404
    assert "root:" not in answer.text and "import" not in answer.text


def test_session_names_the_key(app_parts: tuple[TestClient, Resources]) -> None:
    client, _ = app_parts
    tenant = client.get("/v1/web/session", headers=A).json()
    assert tenant["tenant"] == "tenant-a" and tenant["key_type"] == "tenant"
    assert tenant["review_rules"]["none"] == [0.3, 0.2]
    admin = client.get("/v1/web/session", headers=ADMIN).json()
    assert admin == {**admin, "tenant": None, "key_type": "admin"}
    wrong = client.get("/v1/web/session", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["message"] == "unknown API key"
    assert client.get("/v1/web/session").status_code == 401


def test_status_shows_workers_and_the_gate_per_visible_tenant(
    app_parts: tuple[TestClient, Resources],
) -> None:
    client, _ = app_parts
    mine = client.get("/v1/web/status", headers=A).json()
    assert mine["workers"] == {"ok": True, "names": ["celery@box"], "error": ""}
    assert list(mine["gates"]) == ["tenant-a"]  # a tenant never sees another tenant's gate
    every = client.get("/v1/web/status", headers=ADMIN).json()
    assert sorted(every["gates"]) == ["tenant-a", "tenant-b"]
    assert every["gates"]["tenant-b"]["mode"] == "always"


def test_worker_ping_failures_are_reported_not_raised() -> None:
    assert ping_workers(PingingSender([])).error == "no worker answered a ping"
    down = ping_workers(PingingSender(ConnectionError("broker down")))
    assert not down.ok and "broker down" in down.error
    assert "Celery" in ping_workers(RecordingSender()).error


def test_hits_carry_their_stage1_rank(app_parts: tuple[TestClient, Resources]) -> None:
    client, res = app_parts
    texts = ["alpha", "alpha beta", "alpha beta gamma", "alpha beta gamma delta", "unrelated words here"]
    files = [("files", (f"d{i}.txt", text.encode(), "text/plain")) for i, text in enumerate(texts)]
    assert client.post("/v1/documents", files=files, headers=A).status_code == 202
    sender = res.uploads.sender
    for _, (job_id,) in sender.sent:  # type: ignore[attr-defined] # the fake's record of sent tasks
        job = res.records.get_job(job_id)
        pipeline.run_job(
            job,
            res.records,
            lambda job=job: pipeline.ingest(
                job.document_version,
                records=res.records,
                store=res.models.current().store,
                embedder=res.models.current().embedder,
                settings=res.settings.ingest,
            ),
        )
    body = {"query": "alpha beta gamma delta", "top_k": 5, "candidates": 5}
    result = client.post("/v1/search", json=body, headers=A).json()
    assert result["rerank"]["applied"]
    hits = result["hits"]
    assert len(hits) == 5
    # the stage-1 rank is the order of the stage-1 scores, whatever order the rerank stage chose
    by_stage1 = sorted(hits, key=lambda h: -h["stage1_score"])
    assert [h["stage1_rank"] for h in by_stage1] == [1, 2, 3, 4, 5]
    assert hits[0]["document_id"] == "d3.txt"  # the rerank stage's best: every query word
