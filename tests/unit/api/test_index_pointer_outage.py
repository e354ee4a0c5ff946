"""Reading the serving-index pointer from Redis: a Redis outage is tolerated where the API says so (start-up
falls back to ``RETRIEVAL_COLLECTION``, the index watch keeps serving, ``/info`` shows what this process
knows), and nothing else is swallowed there: a bug surfaces instead of passing for an outage."""

from __future__ import annotations

from pathlib import Path

import fakeredis
import pytest

from api.hotswap import HotSwap
from api.resources import Settings, build_resources, serving_index
from api.settings import ApiSettings
from ingestion.indexes import Indexes
from ingestion.settings import IngestSettings
from retrieval import RetrievalSettings
from retrieval.memory_store import InMemoryStore
from tests.support.fakes import FakeReranker, HashEmbedder, RecordingSender


class Bug(Exception):
    """Not a Redis failure: what a programming error looks like to the caller."""


def broken(*args: object, **kwargs: object) -> None:
    raise Bug("a bug, not an outage")


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def swap(tmp_path: Path, server: fakeredis.FakeServer) -> HotSwap:
    settings = Settings(
        api=ApiSettings(keys={"k1": "t1"}), ingest=IngestSettings(data_dir=tmp_path / "files")
    )
    res = build_resources(
        settings,
        embedder=HashEmbedder(),
        store=InMemoryStore(),
        reranker=FakeReranker(),
        sender=RecordingSender(),
        redis_client=fakeredis.FakeRedis(server=server, decode_responses=True),
    )
    return res.swap


def test_start_up_with_redis_down_serves_the_configured_collection(server: fakeredis.FakeServer) -> None:
    server.connected = False
    indexes = Indexes(fakeredis.FakeRedis(server=server, decode_responses=True))
    spec = serving_index(RetrievalSettings(collection="configured"), indexes)
    assert spec.collection == "configured"


def test_start_up_does_not_mistake_a_bug_for_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    indexes = Indexes(fakeredis.FakeRedis(decode_responses=True))
    monkeypatch.setattr(indexes, "serving", broken)
    with pytest.raises(Bug):
        serving_index(RetrievalSettings(), indexes)


def test_the_index_watch_keeps_serving_while_redis_is_down(
    swap: HotSwap, server: fakeredis.FakeServer
) -> None:
    server.connected = False
    assert swap.check() is False
    assert swap.status() == {"serving": swap.spec.model_dump(exclude_defaults=True)}


def test_the_index_watch_does_not_mistake_a_bug_for_an_outage(
    swap: HotSwap, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(swap.indexes, "generation", broken)
    with pytest.raises(Bug):
        swap.check()


def test_status_does_not_mistake_a_bug_for_an_outage(swap: HotSwap, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(swap.indexes, "build", broken)
    with pytest.raises(Bug):
        swap.status()
