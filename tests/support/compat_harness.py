"""The API on fakes for the tests of the compatible endpoints, the degraded search and the operations routes:
HashEmbedder, InMemoryStore, fakeredis, a recording task sender, and whatever reranker a test passes in."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import fakeredis
from fastapi.testclient import TestClient

from api.app import create_app
from api.resources import Resources, Settings, build_resources
from api.settings import ApiSettings
from ingestion import pipeline
from ingestion.settings import IngestSettings
from reranking import Reranker
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import HashEmbedder, RecordingSender

KEY = "k1"
AUTH = {"Authorization": f"Bearer {KEY}"}


def settings(ingest: IngestSettings, **api: Any) -> Settings:
    """Keys k1 → t1 and k2 → t2, no rate limit (tests send bursts), the rerank stage whenever a reranker is
    given (API_RERANK_GATE=always: these tests are about stage 2 itself), then the given API settings."""
    api = {"keys": {KEY: "t1", "k2": "t2"}, "rate_limit_per_s": 0, "rerank_gate": "always", **api}
    return Settings(api=ApiSettings(**api), ingest=ingest)


def resources_factory(reranker: Reranker | None, holder: dict[str, Resources] | None = None) -> Any:
    """Builds the app's resources on fakes; ``reranker`` None: the configured ``none`` backend."""

    def factory(s: Settings) -> Resources:
        res = build_resources(
            s,
            embedder=HashEmbedder(),
            store=InMemoryStore(),
            reranker=reranker,
            sender=RecordingSender(),
            redis_client=fakeredis.FakeRedis(decode_responses=True),
        )
        if holder is not None:
            holder["r"] = res
        return res

    return factory


@contextmanager
def client(
    ingest: IngestSettings, reranker: Reranker | None = None, **api: Any
) -> Iterator[tuple[TestClient, Resources]]:
    holder: dict[str, Resources] = {}
    app = create_app(settings(ingest, **api), resources_factory=resources_factory(reranker, holder))
    with TestClient(app) as test_client:
        yield test_client, holder["r"]


def index(res: Resources, tenant: str, texts: dict[str, str]) -> None:
    """Upload ``{filename: text}`` and run the ingestion jobs in-process, as the worker would."""
    for name, text in texts.items():
        res.uploads.accept(tenant, name, text.encode(), document_id=None, metadata={})
    sender: RecordingSender = res.uploads.sender  # type: ignore[assignment] # the fakes send no Celery task
    for _, (job_id,) in sender.sent:
        job = res.records.get_job(job_id)
        pipeline.ingest(
            job.document_version,
            records=res.records,
            store=res.models.current().store,
            embedder=res.models.current().embedder,
            settings=res.settings.ingest,
        )
    sender.sent.clear()


def drain(res: Resources) -> None:
    """Run the jobs the API sent (ingestions through ``run_job``, which records their state), as the worker
    would."""
    sender = res.uploads.sender
    for name, (job_id,) in sender.sent:  # type: ignore[attr-defined]
        job = res.records.get_job(job_id)
        if name == "sieve.ingest":
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
    sender.sent.clear()  # type: ignore[attr-defined]
