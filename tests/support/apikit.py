"""An in-process API over fakes (fakeredis, in-memory store, hashed embedder, the fake reranker in its
scripted-confidence scoring) for the tests of the cache, the rate limits and the review queue; ``redis`` may
be a real client (integration)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import redis
from fastapi.testclient import TestClient

from api.app import create_app
from api.resources import Resources, Settings, build_resources
from api.settings import ApiSettings
from ingestion import pipeline
from ingestion.settings import IngestSettings
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import FakeReranker, HashEmbedder, RecordingSender

KEYS = {"k1": "t1", "k2": "t2"}
ADMIN_KEY = "the-admin-key"
T1 = {"Authorization": "Bearer k1"}
T2 = {"Authorization": "Bearer k2"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Harness:
    client: TestClient
    res: Resources
    reranker: FakeReranker
    redis: redis.Redis

    def upload(self, headers: dict[str, str], document_id: str, text: str) -> None:
        files = [("files", (f"{document_id}.txt", text.encode()))]
        r = self.client.post("/v1/documents", files=files, data={"document_id": document_id}, headers=headers)
        assert r.status_code == 202, r.text

    def delete(self, headers: dict[str, str], document_id: str) -> None:
        assert self.client.delete(f"/v1/documents/{document_id}", headers=headers).status_code == 202

    def drain(self) -> None:
        """Run the jobs the API sent, as the worker would."""
        res = self.res
        sender: RecordingSender = res.uploads.sender  # type: ignore[assignment] # the harness sends no Celery
        for name, (job_id,) in sender.sent:
            job = res.records.get_job(job_id)
            if name == "sieve.ingest":
                pipeline.ingest(
                    job.document_version,
                    records=res.records,
                    store=res.models.current().store,
                    embedder=res.models.current().embedder,
                    settings=res.settings.ingest,
                )
            else:
                pipeline.delete(
                    job.tenant,
                    job.document_id,
                    records=res.records,
                    store=res.models.current().store,
                    blobs=res.uploads.blobs,
                )
        sender.sent.clear()

    def search(self, headers: dict[str, str], query: str, **params: Any) -> dict[str, Any]:
        r = self.client.post("/v1/search", json={"query": query, **params}, headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json())


@contextmanager
def running(
    tmp_path: Path, *, client: redis.Redis | None = None, ingest: IngestSettings | None = None, **api: Any
) -> Iterator[Harness]:
    """The app with keys ``k1`` (tenant t1), ``k2`` (t2) and the admin key; ``api`` overrides ApiSettings
    (rate limits are off and the rerank stage always runs, API_RERANK_GATE=always, unless given); ``ingest``
    replaces the ingestion settings (files in ``tmp_path``, short chunks, parsed in this process: a sandboxed
    parse starts an interpreter, ~0.2 s a file, and these tests are about the API; the sandbox has its own,
    ``tests/unit/ingestion/test_sandbox.py``)."""
    api = {"keys": KEYS, "admin_key": ADMIN_KEY, "rate_limit_per_s": 0, "rerank_gate": "always", **api}
    redis_client = client or fakeredis.FakeRedis(decode_responses=True)
    settings = Settings(
        api=ApiSettings(**api),
        ingest=ingest
        or IngestSettings(
            data_dir=tmp_path / "files", chunk_tokens=32, chunk_overlap=4, embed_batch=8, parse_sandbox=False
        ),
    )
    # stage-1 order, 0.95 down in steps of 0.2; a query in ``reranker.unsure`` gets a low-confidence answer
    reranker = FakeReranker("stage1", max_tokens=None)
    holder: dict[str, Resources] = {}

    def factory(s: Settings) -> Resources:
        holder["res"] = build_resources(
            s,
            embedder=HashEmbedder(),
            store=InMemoryStore(),
            reranker=reranker,
            sender=RecordingSender(),
            redis_client=redis_client,
        )
        return holder["res"]

    with TestClient(create_app(settings, resources_factory=factory)) as test_client:
        yield Harness(test_client, holder["res"], reranker, redis_client)
